"""NTS-KE server and client over real TLS on loopback, in one event loop.

Checks the negotiation (both AEADs, chrony's record 1024), that both ends export the same keys
(a packet protected by the client opens at the server), errors for bad requests, and that
garbage, half-open and excess connections cost the server little.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nts_certs import Pki, make_pki

from tsyncd.config import Endpoint, NtsKeServerConfig, ServerConfig
from tsyncd.net.tls import TlsStream, client_context, server_context
from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.servers.keaccess import ke_access
from tsyncd.servers.ntske import NtsKeServer
from tsyncd.servers.responder import AccessList
from tsyncd.sources import ntske as sources_ntske
from tsyncd.sources.ntske import KeFailure, run_ke
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.ntske import decode_records, decode_response

T = TypeVar("T")
KEYS = KeySet(5, bytes(32), 86400)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def with_server(
    pki: Pki,
    body: Callable[[NtsKeServer, int], Awaitable[T]],
    ntp_server: str | None = None,
    host: str = "127.0.0.1",
    **kwargs: Any,
) -> T:
    async def main() -> T:
        server = NtsKeServer(
            server_context(pki.chain, pki.key),
            lambda: KEYS,
            ntp_server=ntp_server,
            ntp_port=1123,
            **kwargs,
        )
        await server.start(host, 0)
        try:
            return await body(server, int(server.listen.rsplit(":", 1)[1]))
        finally:
            await server.close()

    return asyncio.run(main())


@pytest.mark.parametrize(("offer", "chosen"), [((30, 15), 30), ((15,), 15)])
def test_ke_then_authenticated_ntp(pki: Pki, offer: tuple[int, ...], chosen: int) -> None:
    async def body(server: NtsKeServer, port: int) -> None:
        result = await run_ke("localhost", port, pki.ca, connect_host="127.0.0.1", aeads=offer)
        assert result.outcome.aead == chosen and result.ntp_port == 1123
        assert result.ntp_host == "127.0.0.1" and len(result.outcome.cookies) == 8
        assert result.group  # e.g. X25519MLKEM768 with OpenSSL >= 3.5
        assert server.stats.completed == 1 and server.stats.cookies_issued == 8
        session = NtsSession(chosen, result.c2s, result.s2c, list(result.outcome.cookies))
        request = session.protect(encode_ntp(NtpPacket(transmit_ts=1)))
        assert request is not None
        reason, response = NtsResponder(KEYS).respond(
            request, decode_ntp(request), NtpPacket(mode=Mode.SERVER, origin_ts=1)
        )
        assert reason == "answered_nts" and response is not None
        assert session.verify(response, decode_ntp(response)) is None

    with_server(pki, body)


def test_client_tries_each_address_given_and_keeps_the_one_it_reached(pki: Pki) -> None:
    """The NTS-KE connects to the addresses the daemon's resolver gave, in turn (as a
    connection by name would), and says which one the keys came from (tsyncctl refresh
    compares it with what the name gives later)."""

    async def body(_server: NtsKeServer, port: int) -> None:
        # Nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1): refused, then .1.
        result = await run_ke("localhost", port, pki.ca, connect_host=["127.0.0.2", "127.0.0.1"])
        assert result.ke_address == "127.0.0.1"
        with pytest.raises(KeFailure, match=f"cannot connect to NTS-KE server localhost:{port}"):
            await run_ke("localhost", port, pki.ca, connect_host=["127.0.0.2"])

    with_server(pki, body)


def test_client_checks_the_certificate(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path)

    async def body(_server: NtsKeServer, port: int) -> None:
        with pytest.raises(KeFailure, match="handshake"):
            await run_ke("127.0.0.1", port, other.ca)  # a CA that did not sign the server
        names = "certificate names localhost, 127.0.0.1, ::1; not example.org"
        with pytest.raises(KeFailure, match=re.escape(names)):
            await run_ke("example.org", port, pki.ca, connect_host="127.0.0.1")

    with_server(pki, body)


def test_an_unusable_certificate_authority_is_named_with_its_key(tmp_path: Path) -> None:
    """Checked with the config, the file may still go (or change) before the first NTS-KE:
    the Note says which key and what was expected, not OpenSSL's error list."""
    text = tmp_path / "text.pem"
    text.write_text("not a certificate\n")

    async def attempt(ca: Path) -> str:
        with pytest.raises(KeFailure) as info:
            await run_ke("127.0.0.1", 9, ca)  # fails before connecting
        return str(info.value)

    assert asyncio.run(attempt(tmp_path / "gone.pem")) == (
        f"certificate-authority = {tmp_path}/gone.pem: expected a readable PEM file of CA "
        "certificates (No such file or directory)"
    )
    assert asyncio.run(attempt(text)) == (
        f"certificate-authority = {text}: expected a readable PEM file of CA certificates "
        "(no PEM certificate in it)"
    )


def test_openssl_errors_read_as_reasons(tmp_path: Path) -> None:
    from OpenSSL import SSL

    from tsyncd.net.tls import ssl_error_text

    text = tmp_path / "text.pem"
    text.write_text("not a certificate\n")
    with pytest.raises(SSL.Error) as info:
        client_context(text)
    assert str(info.value).startswith("[(")  # pyOpenSSL's form: a list of tuples
    assert "no certificate" in ssl_error_text(info.value)
    assert "[(" not in ssl_error_text(info.value)


async def raw_exchange(pki: Pki, port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tls = TlsStream(client_context(pki.ca), reader, writer, server=False)
    await tls.handshake()
    await tls.send(request)
    out = b""
    while chunk := await tls.recv():
        out += chunk
    await tls.close()
    return out


def test_errors_for_bad_requests(pki: Pki) -> None:
    async def body(server: NtsKeServer, port: int) -> None:
        unknown_critical = bytes.fromhex("800100020000 80040002000f 81230000 80000000")
        resp = decode_response(decode_records(await raw_exchange(pki, port, unknown_critical)))
        assert resp.error == 0
        no_aead = bytes.fromhex("800100020000 80000000")
        resp = decode_response(decode_records(await raw_exchange(pki, port, no_aead)))
        assert resp.error == 1
        only_17 = bytes.fromhex("800100020000 800400020011 80000000")
        resp = decode_response(decode_records(await raw_exchange(pki, port, only_17)))
        assert resp.error is None and resp.aead is None and resp.cookies == ()
        assert server.stats.completed == 0 and server.stats.cookies_issued == 0

    with_server(pki, body)


def test_garbage_half_open_and_excess_connections(pki: Pki) -> None:
    async def body(server: NtsKeServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n" * 10)
        await asyncio.wait_for(reader.read(), 2)  # closed at once (maybe after a TLS alert)
        writer.close()
        assert server.stats.failures["tls"] == 1
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)  # half-open
        await asyncio.sleep(0.05)
        extra_r, extra_w = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(extra_r.read(), 2) == b""  # over the bound: closed
        extra_w.close()
        assert await asyncio.wait_for(idle_r.read(), 3) == b""  # the deadline closes it
        idle_w.close()
        assert server.stats.failures["tls"] == 1
        assert server.stats.failures["too_many_connections"] == 1
        assert server.stats.failures["timeout"] == 1

    with_server(pki, body, max_connections=1, timeout_s=0.5)


def test_server_negotiation_sends_clients_elsewhere(pki: Pki) -> None:
    async def body(_server: NtsKeServer, port: int) -> None:
        result = await run_ke("localhost", port, pki.ca, connect_host="127.0.0.1")
        assert (result.ntp_host, result.ntp_port) == ("ntp1.example.org", 1123)

    with_server(pki, body, ntp_server="ntp1.example.org")


def test_a_refused_client_is_closed_before_tls_and_a_new_rule_lets_it_in(pki: Pki) -> None:
    """chronyd checks its access rules right after accept(): no TLS work for a refused client,
    no client log entry (a scanner must not fill it), only the drop reason counted."""

    async def body(server: NtsKeServer, port: int) -> None:
        server.access = AccessList([ip_network("192.0.2.0/24")], [ip_network("127.0.0.1")])
        for source, reason in (("127.0.0.1", "denied"), ("127.0.0.2", "restricted")):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            # Closed without a byte: not even a TLS alert, before any ClientHello is sent.
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()
            assert server.stats.failures[reason] == 1
        with pytest.raises(KeFailure):
            await run_ke("localhost", port, pki.ca, connect_host="127.0.0.1")
        assert server.stats.failures["denied"] == 2 and server.stats.completed == 0
        assert server.clients.records == {} and server.client_rows() == []
        # tsyncctl allow 127.0.0.1 (daemon_commands): the next connection runs NTS-KE.
        server.access = server.access.with_rule(ip_network("127.0.0.1"), True)
        result = await run_ke("localhost", port, pki.ca, connect_host="127.0.0.1")
        assert len(result.outcome.cookies) == 8 and server.stats.completed == 1
        [row] = server.client_rows()
        assert (row["address"], row["answered"]) == ("127.0.0.1", 1)

    with_server(pki, body)


class Running:
    """A started [[server]] socket as the listener reads it: rules tsyncctl allow/deny replace."""

    def __init__(self, access: AccessList) -> None:
        self.access = access


def test_a_dual_stack_listener_judges_each_client_by_the_server_its_address_reaches(
    pki: Pki,
) -> None:
    """QA s21 hunt-nts F1: with per-family [[server]]s on one port, an IPv6 client was judged
    by the IPv4 server's rules (the first on the port) and refused; the local address the
    connection reached picks the server now, an IPv4-mapped one as IPv4."""
    servers = [
        ServerConfig(listen=Endpoint("0.0.0.0", 123), allow=(ip_network("127.0.0.0/8"),)),
        ServerConfig(listen=Endpoint("::", 123), ipv6_only=True, allow=(ip_network("::1"),)),
    ]
    running = [Running(AccessList(s.allow, s.deny)) for s in servers]
    ke = NtsKeServerConfig(
        listen=Endpoint("::", 0), certificate_chain_path=pki.chain, private_key_path=pki.key
    )

    async def body(server: NtsKeServer, port: int) -> None:
        for address in ("127.0.0.1", "::1"):  # each allowed by its own family's server
            result = await run_ke("localhost", port, pki.ca, connect_host=address)
            assert len(result.outcome.cookies) == 8
        assert server.stats.completed == 2 and not server.stats.failures
        # tsyncctl deny 127.0.0.1 changes the IPv4 server's rules: read per connection.
        running[0].access = running[0].access.with_rule(ip_network("127.0.0.1"), False)
        with pytest.raises(KeFailure):
            await run_ke("localhost", port, pki.ca, connect_host="127.0.0.1")
        assert server.stats.failures["denied"] == 1
        result = await run_ke("localhost", port, pki.ca, connect_host="::1")
        assert len(result.outcome.cookies) == 8 and server.stats.completed == 3

    with_server(pki, body, host="::", access=ke_access(ke, servers, running))


def test_a_client_without_alpn_ntske_is_refused_and_counted(pki: Pki) -> None:
    """RFC 7301 §3.2: offering only other protocols gets a fatal no_application_protocol
    alert, so the client learns why; offering none completes TLS and is then hung up on.
    Both count as ``alpn``, not as a generic TLS failure."""

    async def body(server: NtsKeServer, port: int) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.set_alpn_protocols(["http/1.1"])
        with pytest.raises(ssl.SSLError, match="no application protocol"):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
        assert server.stats.failures["alpn"] == 1
        bare = ssl.create_default_context(cafile=str(pki.ca))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=bare, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert server.stats.failures["alpn"] == 2
        assert server.stats.failures["tls"] == 0

    with_server(pki, body)


def test_an_address_that_hangs_leaves_time_for_the_next(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session 21's review: the NTS-KE deadline covered every address at once, so a first
    address that swallows SYNs used all of it, on every retry.  Each address but the last now
    gets an equal share.  (A SYN that goes nowhere is played by a connect that never ends.)"""
    real_open = asyncio.open_connection

    async def open_connection(host: str, port: int) -> object:
        if host == "192.0.2.1":
            await asyncio.Event().wait()
        return await real_open(host, port)

    monkeypatch.setattr(sources_ntske.asyncio, "open_connection", open_connection)

    async def body(_server: NtsKeServer, port: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await run_ke(
            "localhost", port, pki.ca, connect_host=["192.0.2.1", "127.0.0.1"], timeout_s=4
        )
        assert result.ke_address == "127.0.0.1"
        assert 2 <= loop.time() - started < 4  # its share (half of 4 s), then .1 at once

    with_server(pki, body)
