"""Where a source's packets leave from: the address a symmetric peer's socket binds (QA s16
hunt-sync F3) and the addresses the loop test takes as ours (F2); who stamped its exchanges."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

import pytest
from peers import free_udp_port

from tsyncd.config import ServerConfig
from tsyncd.config_fields import Endpoint
from tsyncd.daemon_sources import SourceMobilizer, own_server_ips, peer_bind_ip
from tsyncd.net.udp import SO_TIMESTAMPING
from tsyncd.sources.ntp import NtpSourceSocket


def servers(*listens: tuple[str, int], ipv6_only: bool | None = None) -> list[ServerConfig]:
    return [ServerConfig(listen=Endpoint(h, p), ipv6_only=ipv6_only) for h, p in listens]


def test_a_peer_binds_the_address_of_the_server_on_its_port() -> None:
    assert peer_bind_ip(servers(("127.0.0.30", 1230)), 1230, "127.0.0.31") == "127.0.0.30"
    # Another port, another family, or a wildcard server: the wildcard (packets as routed).
    assert peer_bind_ip(servers(("127.0.0.30", 1230)), 1231, "127.0.0.31") is None
    assert peer_bind_ip(servers(("::1", 1230)), 1230, "127.0.0.31") is None
    assert peer_bind_ip(servers(("0.0.0.0", 1230)), 1230, "127.0.0.31") is None
    assert peer_bind_ip(servers(("::", 1230)), 1230, "127.0.0.31") is None  # dual-stack
    assert peer_bind_ip(servers(("::1", 1230)), 1230, "::1") == "::1"
    assert peer_bind_ip([], 123, "127.0.0.31") is None


def test_of_several_servers_on_the_port_a_peer_binds_the_routed_one() -> None:
    both = servers(("127.0.0.30", 1230), ("127.0.0.1", 1230))
    assert peer_bind_ip(both, 1230, "127.0.0.31") == "127.0.0.1"  # loopback routes from .1
    assert peer_bind_ip(both[:1] * 2, 1230, "127.0.0.31") == "127.0.0.30"  # else the first


def test_own_server_ips_leave_out_wildcards() -> None:
    listens = servers(("0.0.0.0", 123), ("::", 124), ("127.0.0.30", 125), ("::1", 126))
    assert own_server_ips(listens) == ("127.0.0.30", "::1")


def test_a_source_socket_knows_where_its_packets_leave_from() -> None:
    async def local_addresses() -> list[tuple[str | None, frozenset[int]]]:
        client = NtpSourceSocket(name="c", mode="server", ip="127.0.0.31", port=9)
        peer = NtpSourceSocket(
            name="p",
            mode="peer",
            ip="127.0.0.31",
            port=9,
            local_port=free_udp_port(),
            bind_ip="127.0.0.30",
        )
        out = []
        for sock in (client, peer):
            sock.open(lambda *_: None)
            out.append((sock.local_ip, sock.local_refids(("127.0.0.40",))))
            sock.close()
        return out

    (client_ip, client_refids), (peer_ip, peer_refids) = asyncio.run(local_addresses())
    assert client_ip == "127.0.0.1"  # unbound: as the kernel routes to the server
    assert client_refids == {0x7F000001, 0x7F000028}
    assert peer_ip == "127.0.0.30" and peer_refids == {0x7F00001E, 0x7F000028}


def test_a_source_socket_says_who_stamped_the_last_valid_exchange() -> None:
    """chronyc ntpdata's TX/RX timestamping: "kernel" where the kernel stamped our request's
    send and the reply's arrival, "daemon" where the clock was read around sendto/recvmsg."""

    async def exchange(with_tx_stamps: bool, rx_stamps: bool) -> tuple[str | None, str | None]:
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        replied = asyncio.Event()
        sock = NtpSourceSocket(
            name="s", mode="server", ip="127.0.0.1", port=server.getsockname()[1]
        )
        sock.open(lambda *_: replied.set(), (lambda *_: None) if with_tx_stamps else None)
        try:
            assert sock.tx_timestamping is None and sock.rx_timestamping is None
            if not rx_stamps and sock._udp is not None:
                sock._udp.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
            assert sock.send(b"q" * 48)
            request, client = server.recvfrom(100)
            server.sendto(request, client)
            await asyncio.wait_for(replied.wait(), 5)
            sock.valid_reply(answered_request=True)
            return sock.tx_timestamping, sock.rx_timestamping
        finally:
            sock.close()
            server.close()

    assert asyncio.run(exchange(with_tx_stamps=True, rx_stamps=True)) == ("kernel", "kernel")
    assert asyncio.run(exchange(with_tx_stamps=False, rx_stamps=False)) == ("daemon", "daemon")


def test_an_nts_ke_name_the_dns_servers_do_not_know_goes_to_the_system_resolver() -> None:
    """Session 21's review: NTS-KE now resolves through the daemon's resolver, but it used to
    connect by name through the system resolver whatever ``[resolver] servers`` said, so a
    config naming ``localhost`` (or an /etc/hosts name) beside DNS servers must keep working.
    Without servers nothing changes; a name no one knows gives both reasons."""

    async def no_dns(host: str, port: int) -> list[str]:
        raise OSError("no answer from DNS server 127.0.0.1:9")

    resolver = SimpleNamespace(servers=(Endpoint("127.0.0.1", 9),))
    daemon = SimpleNamespace(config=SimpleNamespace(resolver=resolver), _resolve=no_dns)
    resolve_ke = SourceMobilizer._resolve_ke
    assert "127.0.0.1" in asyncio.run(resolve_ke(daemon, "localhost", 4460))  # type: ignore[arg-type]
    with pytest.raises(OSError, match=r"DNS server 127\.0\.0\.1:9; system resolver: "):
        asyncio.run(resolve_ke(daemon, "nts.invalid", 4460))  # type: ignore[arg-type]
    resolver.servers = ()
    with pytest.raises(OSError, match=r"^no answer from DNS server 127\.0\.0\.1:9$"):
        asyncio.run(resolve_ke(daemon, "localhost", 4460))  # type: ignore[arg-type]
