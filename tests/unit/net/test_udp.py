"""Binding server sockets: which addresses are dual-stack, which clients a socket can hear,
and the probe that refuses a port somebody already holds (even through SO_REUSEPORT)."""

from __future__ import annotations

import errno
import ipaddress
import socket

import pytest

from tsyncd.net.udp import (
    BroadcastRoutes,
    SocketOptions,
    bind_udp,
    canonical_host,
    dual_stack,
    ensure_port_free,
    receives_from,
)


def v6only(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)


@pytest.mark.parametrize("host", ["::", "::0", "0:0::0", "0000:0000:0000:0000:0000:0000:0:0"])
def test_the_ipv6_wildcard_is_dual_stack_however_written(host: str) -> None:
    assert dual_stack(host) and canonical_host(host) == "::"
    with bind_udp(host, 0) as sock:
        assert v6only(sock) == 0
        port = sock.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"x", ("127.0.0.1", port))
        sock.settimeout(2)
        assert sock.recvfrom(8)[0] == b"x"  # IPv4 reaches it


def test_other_ipv6_addresses_are_ipv6_only_unless_configured() -> None:
    assert not dual_stack("::1") and not dual_stack("127.0.0.1")
    assert dual_stack("::1", ipv6_only=False) and not dual_stack("::", ipv6_only=True)
    with bind_udp("::1", 0) as sock:
        assert v6only(sock) == 1
    with bind_udp("0::0", 0, SocketOptions(ipv6_only=True)) as sock:
        assert v6only(sock) == 1


@pytest.mark.parametrize(
    ("host", "ipv6_only", "v4", "v6"),
    [
        ("127.0.0.1", None, True, False),
        ("0.0.0.0", None, True, False),
        ("::", None, True, True),
        ("0:0::0", None, True, True),
        ("::", True, False, True),
        ("::1", None, False, True),
        ("::1", False, False, True),  # dual-stack, but no IPv4 packet is addressed to ::1
        ("::ffff:127.0.0.1", False, True, False),
    ],
)
def test_receives_from_by_family(host: str, ipv6_only: bool | None, v4: bool, v6: bool) -> None:
    assert receives_from(host, ipv6_only, ipaddress.ip_address("192.0.2.1")) is v4
    assert receives_from(host, ipv6_only, ipaddress.ip_address("2001:db8::1")) is v6


@pytest.mark.parametrize("reuse_port", [False, True])
def test_ensure_port_free_refuses_a_held_port(reuse_port: bool) -> None:
    """A port held by a plain socket, or by a SO_REUSEPORT group of our own user (which a
    SO_REUSEPORT bind would silently join), is refused; once it is closed, it is free."""
    with bind_udp("127.0.0.1", 0, SocketOptions(reuse_port=reuse_port)) as held:
        port = held.getsockname()[1]
        for host in ("127.0.0.1", "0.0.0.0", "::"):  # the wildcards overlap it too
            with pytest.raises(OSError) as caught:
                ensure_port_free(host, port, SocketOptions(reuse_port=True))
            assert caught.value.errno == errno.EADDRINUSE
        ensure_port_free("::", port, SocketOptions(ipv6_only=True))  # IPv6 only: no overlap
    ensure_port_free("127.0.0.1", port)
    ensure_port_free("127.0.0.1", 0)


def test_broadcast_routes_are_the_kernels() -> None:
    routes = BroadcastRoutes()
    try:
        assert routes(ipaddress.ip_address("127.255.255.255"))  # lo's directed broadcast
        assert routes(ipaddress.ip_address("255.255.255.255"))
        assert not routes(ipaddress.ip_address("127.0.0.1"))
        assert not routes(ipaddress.ip_address("::1"))  # IPv6 has no broadcast
    finally:
        routes.close()
