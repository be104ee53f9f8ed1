"""TSQ servers and client on loopback, in one event loop: what goes over QUIC, byte for byte.

Raw aioquic clients send what the reference tools send (18 bytes without FIN, shared/specs/
tsq.md §4) and what they must not (split, short, oversized, wrong ALPN, a DATAGRAM to a stream
server); our own client is checked against servers that never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    QuicEvent,
    StreamDataReceived,
)
from tsqcerts import Pki, make_pki

from tsyncd.net.quic import client_configuration, server_configuration
from tsyncd.net.tsq import TsqClient, TsqClientError
from tsyncd.servers import querylog
from tsyncd.servers.tsq import TsqResponder, TsqServer, TsqServerInfo
from tsyncd.sync.tsq import evaluate
from tsyncd.wire.timestamps import ntp64_from_unix_ns
from tsyncd.wire.tsq import (
    ClockQuality,
    SourceInfo,
    TsqErrorReply,
    TsqResponse,
    decode_response,
    encode_error,
    encode_response,
)

T = TypeVar("T")
NONCE = bytes(range(1, 17))  # the reference adjtime tool's fixed nonce
REQUEST = b"\x01\x10" + NONCE
INFO = TsqServerInfo(
    clock_quality=ClockQuality(clock_class=3, error_us=120, drift_ppb=40),
    source_info=SourceInfo(stratum=2, source_type=3, info="upstream"),
    metadata=(("implementation", "tsyncd"),),
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(coro: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro(), 20)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def tsq_server(
    pki: Pki,
    transport: Any,
    info: TsqServerInfo = INFO,
    idle_timeout_s: float | None = None,
    **kwargs: Any,
) -> AsyncIterator[TsqServer]:
    config = server_configuration(transport, pki.chain, pki.key)
    if idle_timeout_s is not None:
        config.idle_timeout = idle_timeout_s
    server = await TsqServer.create(
        "127.0.0.1",
        0,
        transport,
        config,
        TsqResponder(time.time_ns, lambda: info),
        **kwargs,
    )
    try:
        yield server
    finally:
        server.close()


def port_of(server: TsqServer) -> int:
    return int(server.listen.rsplit(":", 1)[1])


class Raw(QuicConnectionProtocol):
    """A bare client: records every event, so tests can send anything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[QuicEvent] = []
        self.changed = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def until(self, what: Callable[[], T | None], timeout: float = 3.0) -> T:
        deadline = time.monotonic() + timeout
        while (found := what()) is None:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
        return found

    def stream(self, sid: int) -> tuple[bytes, bool] | None:
        """All bytes of stream ``sid`` once its FIN came, else None."""
        chunks = [
            e for e in self.events if isinstance(e, StreamDataReceived) and e.stream_id == sid
        ]
        if not chunks or not chunks[-1].end_stream:
            return None
        return b"".join(e.data for e in chunks), True

    def datagrams(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, DatagramFrameReceived)]


def raw_config(pki: Pki, transport: Any, alpn: str = "tsq/1") -> QuicConfiguration:
    config = client_configuration(transport, server_name="localhost", ca_file=pki.ca)
    config.alpn_protocols = [alpn]
    return config


@contextlib.asynccontextmanager
async def raw_client(pki: Pki, server: TsqServer) -> AsyncIterator[Raw]:
    """A bare client connected to ``server`` (of its transport)."""
    config = raw_config(pki, server.transport)
    async with connect(
        "127.0.0.1", port_of(server), configuration=config, create_protocol=Raw
    ) as p:
        assert isinstance(p, Raw)
        yield p


async def send_stream(p: Raw, *chunks: bytes, fin: bool = False, gap: float = 0.0) -> int:
    quic = p._quic
    sid = quic.get_next_available_stream_id()
    for i, chunk in enumerate(chunks):
        if i and gap:
            await asyncio.sleep(gap)
        quic.send_stream_data(sid, chunk, end_stream=fin and i == len(chunks) - 1)
        p.transmit()
    return sid


# --- stream -----------------------------------------------------------------------------------


def test_stream_reference_request_answered_at_once_without_fin(pki: Pki) -> None:
    async def go() -> None:
        async with tsq_server(pki, "stream") as server:
            async with connect(
                "127.0.0.1",
                port_of(server),
                configuration=raw_config(pki, "stream"),
                create_protocol=Raw,
            ) as p:
                assert isinstance(p, Raw)
                started = time.monotonic()
                sid = await send_stream(p, REQUEST)  # no FIN, as the reference client
                data, fin = await p.until(lambda: p.stream(sid))
                # The reply and its FIN come together, at once (the reference holds 5 s).
                assert time.monotonic() - started < 1.0 and fin
                assert len(data) == 38 and data[:18] == REQUEST
                # In one write: the reference client reads once (spec §3.4).
                first = next(e for e in p.events if isinstance(e, StreamDataReceived))
                assert len(first.data) == 38 and first.end_stream
                assert data[18:20] == b"\x02\x08" and data[28:30] == b"\x03\x08"
                reply = decode_response(data)
                assert isinstance(reply, TsqResponse) and reply.send_ts >= reply.receive_ts
                # Several streams on one connection, in parallel.
                sids = [
                    await send_stream(p, b"\x01\x10" + bytes([i]) * 16, fin=True) for i in range(4)
                ]
                for i, s in enumerate(sids):
                    got, _ = await p.until(lambda s=s: p.stream(s))  # type: ignore[misc]
                    assert got[2:18] == bytes([i]) * 16
            c = server.responder.counters
            assert (c.received, c.sent, c.dropped) == (5, 5, 0)

    run(go)


def test_stream_split_short_malformed_and_oversized(pki: Pki) -> None:
    async def go() -> None:
        async with tsq_server(pki, "stream") as server:
            async with connect(
                "127.0.0.1",
                port_of(server),
                configuration=raw_config(pki, "stream"),
                create_protocol=Raw,
            ) as p:
                assert isinstance(p, Raw)
                # Split in two writes 50 ms apart: answered once whole (the reference fails it).
                sid = await send_stream(p, REQUEST[:8], REQUEST[8:], gap=0.05)
                data, _ = await p.until(lambda: p.stream(sid))
                assert data[:18] == REQUEST and len(data) == 38
                # Too short, then FIN: an Error TLV (code 1, malformed).
                sid = await send_stream(p, REQUEST[:5], fin=True)
                data, _ = await p.until(lambda: p.stream(sid))
                reply = decode_response(data)
                assert isinstance(reply, TsqErrorReply) and reply.code == 1
                # Something other than a Nonce first: refused, not echoed as a nonce.
                sid = await send_stream(p, b"\xfe\x02\x00\x00" + REQUEST, fin=True)
                data, _ = await p.until(lambda: p.stream(sid))
                assert isinstance(decode_response(data), TsqErrorReply)
                # Oversized: whole unknown TLVs (allowed) past the cap; the first QUIC packet
                # ends inside one, so the server waits, then refuses at the cap.
                sid = await send_stream(p, REQUEST + (b"\x04\xff" + bytes(255)) * 5)
                data, _ = await p.until(lambda: p.stream(sid))
                reply = decode_response(data)
                assert isinstance(reply, TsqErrorReply) and "too long" in reply.reason
                # Trailing optional TLVs are fine; a Metadata Query gets our clock's state.
                sid = await send_stream(p, REQUEST + b"\xf7\x00", fin=True)
                data, _ = await p.until(lambda: p.stream(sid))
                reply = decode_response(data)
                assert isinstance(reply, TsqResponse) and data[:18] == REQUEST
                assert reply.source_info == INFO.source_info
                assert reply.clock_quality == INFO.clock_quality
                assert reply.metadata == INFO.metadata
            c = server.responder.counters
            assert c.sent == 2 and c.errors_sent == 3
            assert c.dropped_by_reason == {"truncated": 1, "tsq_bad_tlv": 1, "oversized": 1}

    run(go)


def test_datagram_frame_to_stream_server_closes_the_connection(pki: Pki) -> None:
    async def go() -> None:
        async with tsq_server(pki, "stream") as server:
            config = raw_config(pki, "datagram")  # we advertise datagrams; the server does not
            async with connect(
                "127.0.0.1", port_of(server), configuration=config, create_protocol=Raw
            ) as p:
                assert isinstance(p, Raw)
                assert p._quic._remote_max_datagram_frame_size is None
                p._quic.send_datagram_frame(REQUEST)
                p.transmit()
                closed = await p.until(
                    lambda: next((e for e in p.events if isinstance(e, ConnectionTerminated)), None)
                )
                assert closed.error_code == 0x0A  # PROTOCOL_VIOLATION, as the reference
            assert server.responder.counters.received == 0

    run(go)


# --- datagram ---------------------------------------------------------------------------------


def test_datagram_replies_repeated_nonces_and_drops_malformed(pki: Pki) -> None:
    async def go() -> None:
        async with tsq_server(pki, "datagram") as server:
            async with connect(
                "127.0.0.1",
                port_of(server),
                configuration=raw_config(pki, "datagram"),
                create_protocol=Raw,
            ) as p:
                assert isinstance(p, Raw)
                assert p._quic._remote_max_datagram_frame_size == 65536
                assert p._quic._remote_max_streams_bidi == 0  # no streams, as the reference
                for data in (
                    REQUEST,
                    REQUEST,  # adjtime's constant nonce, again: answered
                    b"\x01\x0f" + NONCE[:15],  # bad nonce length: dropped silently
                    REQUEST[:10],  # truncated: dropped
                    REQUEST + b"\xfa\x00",  # trailing Precision Mode: answered
                    REQUEST,
                ):
                    p._quic.send_datagram_frame(data)
                    p.transmit()
                replies = await p.until(lambda: d if len(d := p.datagrams()) >= 4 else None)
                await asyncio.sleep(0.05)
                assert len(p.datagrams()) == 4
                assert all(r[:18] == REQUEST and r[18] == 2 and r[28] == 3 for r in replies)
                assert sorted(len(r) for r in replies) == [38, 38, 38, 40]  # 250 acknowledged
            c = server.responder.counters
            assert (c.received, c.sent) == (6, 4)
            assert c.dropped_by_reason == {"tsq_bad_tlv": 1, "truncated": 1}

    run(go)


def test_wrong_alpn_is_refused(pki: Pki) -> None:
    async def go() -> None:
        async with tsq_server(pki, "stream") as server:
            with pytest.raises(ConnectionError):
                async with connect(
                    "127.0.0.1",
                    port_of(server),
                    configuration=raw_config(pki, "stream", "tsq"),
                    create_protocol=Raw,
                ):
                    pass
            assert server.responder.counters.sent == 0

    run(go)


# --- our client -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stream", "datagram"])
def test_client_reuses_one_connection(pki: Pki, transport: Any) -> None:
    async def go() -> None:
        async with tsq_server(pki, transport) as server:
            config = client_configuration(transport, server_name="localhost", ca_file=pki.ca)
            client = await TsqClient.connect(
                "127.0.0.1", port_of(server), config, now_ns=time.time_ns, timeout_s=2
            )
            try:
                delays = []
                for _ in range(5):
                    ex = await client.query(2.0)
                    sample = evaluate(ex.reply, nonce=ex.nonce, t1_ns=ex.t1_ns, t4_ns=ex.t4_ns)
                    # One clock on both ends: |offset| <= delay / 2 (plus NTP-format rounding).
                    assert 0 <= sample.delay_ns < 2_000_000_000
                    assert abs(sample.offset_ns) <= sample.delay_ns // 2 + 2
                    delays.append(sample.delay_ns)
                # Client and server share this process's event loop, so a stall of the
                # machine lands in one sample's delay; the best of five is the exchange's.
                assert min(delays) < 50_000_000
            finally:
                client.close()
            c = server.responder.counters
            assert (c.connections, c.sent) == (1, 5)

    run(go)


@pytest.mark.parametrize(
    ("server_name", "use_other_ca", "reason"),
    [("localhost", True, "handshake"), ("wrong.example", False, "handshake")],
)
def test_certificate_verification(
    pki: Pki, tmp_path: Path, server_name: str, use_other_ca: bool, reason: str
) -> None:
    other = make_pki(tmp_path / "other")

    async def go() -> None:
        async with tsq_server(pki, "datagram") as server:
            config = client_configuration(
                "datagram", server_name=server_name, ca_file=other.ca if use_other_ca else pki.ca
            )
            with pytest.raises(TsqClientError) as info:
                await TsqClient.connect(
                    "127.0.0.1", port_of(server), config, now_ns=time.time_ns, timeout_s=2
                )
            assert info.value.reason == reason
            assert server.responder.counters.received == 0

    run(go)


def test_connect_timeout_holds_against_a_silent_port() -> None:
    async def go() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))  # receives everything, answers nothing
            config = client_configuration("stream", server_name="localhost", insecure=True)
            started = time.monotonic()
            with pytest.raises(TsqClientError) as info:
                await TsqClient.connect(
                    "127.0.0.1",
                    silent.getsockname()[1],
                    config,
                    now_ns=time.time_ns,
                    timeout_s=0.3,
                )
            assert info.value.reason == "connect_timeout"
            assert time.monotonic() - started < 1.5

    run(go)


@pytest.mark.parametrize("transport", ["stream", "datagram"])
def test_reply_timeout_holds_against_a_mute_server(pki: Pki, transport: Any) -> None:
    """A QUIC server that completes the handshake and never answers a query."""

    async def go() -> None:
        streams: list[Any] = []  # keep the writers: a collected writer would send a FIN
        async with quic_server(
            pki, transport, stream_handler=lambda r, w: streams.append(w)
        ) as port:
            client_config = client_configuration(transport, server_name="localhost", insecure=True)
            client_config.verify_mode = ssl.CERT_NONE
            client = await TsqClient.connect(
                "127.0.0.1", port, client_config, now_ns=time.time_ns, timeout_s=2
            )
            started = time.monotonic()
            with pytest.raises(TsqClientError) as info:
                await client.query(0.3)
            assert info.value.reason == "timeout"
            assert time.monotonic() - started < 1.5
            client.close()

    run(go)


@contextlib.asynccontextmanager
async def quic_server(pki: Pki, transport: Any, **kwargs: Any) -> AsyncIterator[int]:
    """A bare aioquic server speaking ALPN tsq/1 on 127.0.0.1 (``kwargs`` go to ``serve``:
    how it answers); yields its port."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=["tsq/1"],
        max_datagram_frame_size=65536 if transport == "datagram" else None,
    )
    config.load_cert_chain(pki.chain, pki.key)
    server = await serve("127.0.0.1", 0, configuration=config, **kwargs)
    try:
        yield server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    finally:
        server.close()


def _response(nonce: bytes) -> bytes:
    now = ntp64_from_unix_ns(time.time_ns())
    return encode_response(TsqResponse(nonce=nonce, receive_ts=now, send_ts=now))


class WrongNonce(QuicConnectionProtocol):
    """A datagram TSQ server that echoes a random nonce, never the request's."""

    def answer(self, request: bytes) -> bytes | None:
        return _response(secrets.token_bytes(16))

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, DatagramFrameReceived):
            reply = self.answer(event.data)
            if reply is not None:
                self._quic.send_datagram_frame(reply)
                self.transmit()


class NoNonce(WrongNonce):
    """Answers with an Error TLV (which only streams carry): no nonce to match."""

    def answer(self, request: bytes) -> bytes | None:
        return encode_error(1, "oops")


class StaleNonce(WrongNonce):
    """Answers each request with the reply to the one before (our nonce, but late)."""

    previous: bytes | None = None

    def answer(self, request: bytes) -> bytes | None:
        previous, self.previous = self.previous, request
        return None if previous is None else _response(previous[2:18])


async def _datagram_client(pki: Pki, port: int) -> TsqClient:
    config = client_configuration("datagram", server_name="localhost", ca_file=pki.ca)
    return await TsqClient.connect("127.0.0.1", port, config, now_ns=time.time_ns, timeout_s=2)


@pytest.mark.parametrize(
    ("server", "came"),
    [(WrongNonce, "1 reply echoed another nonce"), (NoNonce, "1 reply without a nonce")],
)
def test_datagram_reply_with_another_nonce_is_named(pki: Pki, server: Any, came: str) -> None:
    """A datagram reply can only be matched by its nonce: when only replies echoing another
    nonce (or none) come, the timeout says so (``bad_nonce``, as a stream query would), not
    that the server is silent."""

    async def go() -> None:
        async with quic_server(pki, "datagram", create_protocol=server) as port:
            client = await _datagram_client(pki, port)
            try:
                for _ in range(2):
                    with pytest.raises(TsqClientError) as info:
                        await client.query(0.3)
                    assert info.value.reason == "bad_nonce" and info.value.replied
                    assert str(info.value) == f"no reply with our nonce within 0.3 s ({came})"
                assert not client.closed
            finally:
                client.close()

    run(go)


def test_datagram_late_reply_is_not_another_nonce(pki: Pki) -> None:
    """A late reply to our previous, timed-out query echoes a nonce we did send: the query
    it arrives during just times out."""

    async def go() -> None:
        async with quic_server(pki, "datagram", create_protocol=StaleNonce) as port:
            client = await _datagram_client(pki, port)
            try:
                for _ in range(2):  # the second gets the first's reply
                    with pytest.raises(TsqClientError) as info:
                        await client.query(0.3)
                    assert info.value.reason == "timeout" and not info.value.replied
                    assert str(info.value) == "no reply within 0.3 s"
                assert client._protocol.unmatched >= 1 and client._protocol.foreign == 0
            finally:
                client.close()

    run(go)


def test_source_keeps_its_connection_over_rejected_replies(pki: Pki) -> None:
    """Replies with another nonce are bad samples, dropped as ``bad_nonce`` with a Note that
    says so; the connection works, so every poll reuses it (no handshake per poll)."""

    async def go() -> None:
        async with quic_server(pki, "datagram", create_protocol=WrongNonce) as port:
            source = tsq_source(pki, port, reply_timeout_s=0.3)
            drops: list[str] = []
            notes: list[str] = []
            source.start(
                lambda *_: None, lambda _, r: drops.append(r), lambda _, w: notes.append(w)
            )
            try:
                for _ in range(3):
                    await source._poll()
            finally:
                source.close()
            assert drops == ["bad_nonce"] * 3 and source.connects == 1
            assert notes[-1] == (
                "TSQ failed: no reply with our nonce within 0.3 s (1 reply echoed another nonce)"
            )

    run(go)


def tsq_source(pki: Pki, port: int, **kwargs: Any) -> Any:
    """A datagram TSQ source of the server on 127.0.0.1:``port``, not started."""
    from tsyncd.sources.tsq import TsqSource

    return TsqSource(
        name="tsq",
        ip="127.0.0.1",
        port=port,
        server_name="localhost",
        transport="datagram",
        ca_file=pki.ca,
        now_ns=time.time_ns,
        precision_ns=1000,
        **kwargs,
    )


@pytest.mark.parametrize("kept_alive", [True, False])
def test_source_says_connected_once_not_at_every_poll(
    pki: Pki, kept_alive: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection that idles out between polls too far apart for keepalive PINGs is
    reconnected quietly (a handshake per poll is the plan then); one that idles out while
    we keep it alive was lost, a failure like any other: said with the reconnect, and the
    recovery (each time it happens, as for any failure between good samples)."""

    async def go() -> None:
        async with tsq_server(pki, "datagram", idle_timeout_s=0.3) as server:
            source = tsq_source(pki, port_of(server))
            source.start(lambda *_: None, lambda *_: None)
            try:
                for _ in range(2):
                    await source._poll()
                    client = source._client
                    await _until(lambda c=client: c.closed)  # type: ignore[misc]
                    source._poll_gap_s = 10.0 if kept_alive else 600.0
                await source._poll()
            finally:
                source.close()
            assert source.connects == 3

    with caplog.at_level(logging.DEBUG, logger="tsyncd.sources.tsq"):
        run(go)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tsyncd.sources.tsq"]
    connected = (logging.INFO, "TSQ source tsq: connected (datagram)")
    lost = (logging.WARNING, "TSQ source tsq: connection closed: Idle timeout")
    if kept_alive:
        assert (
            said
            == [connected] + [lost, connected, (logging.INFO, "TSQ source tsq answers again")] * 2
        )
    else:
        assert said == [connected] + [(logging.DEBUG, connected[1])] * 2


def test_tsq_query_names_replies_with_another_nonce(pki: Pki) -> None:
    """``tsyncctl tsq query`` says what came, not "no reply"."""
    from click.testing import CliRunner
    from loop_thread import LoopThread

    from tsyncctl.cli import cli

    lt = LoopThread()
    served = quic_server(pki, "datagram", create_protocol=WrongNonce)
    try:
        port = lt.run(served.__aenter__())
        result = CliRunner().invoke(
            cli,
            ["tsq", "query", "127.0.0.1", "--port", str(port), "--ca", str(pki.ca),
             "--count", "2", "--timeout", "0.3"],
        )  # fmt: skip
        lt.run(served.__aexit__(None, None, None))
    finally:
        lt.stop()
    assert result.exit_code == 1
    failed = (
        "127.0.0.1: FAILED: no reply with our nonce within 0.3 s (1 reply echoed another nonce)"
    )
    assert result.output.splitlines() == [failed, failed, "Error: No valid measurements received"]


def test_connections_per_client_are_bounded(pki: Pki) -> None:
    async def go() -> None:
        async with tsq_server(pki, "datagram", max_connections_per_client=2) as server:
            config = client_configuration("datagram", server_name="localhost", ca_file=pki.ca)
            port = port_of(server)
            kept = [
                await TsqClient.connect("127.0.0.1", port, config, now_ns=time.time_ns, timeout_s=2)
                for _ in range(2)
            ]
            # Refused in words, after the Retry (QA s22: silence, read as "server down").
            with pytest.raises(TsqClientError) as info:
                await TsqClient.connect("127.0.0.1", port, config, now_ns=time.time_ns, timeout_s=2)
            assert info.value.reason == "handshake"
            assert str(info.value).endswith(
                ": too many connections from 127.0.0.1 (max-connections-per-client 2)"
            )
            assert server.responder.counters.connections_refused == 1
            assert server.connections() == 2
            for client in kept:
                client.close()
            # Closing frees the slots: a new client gets in.
            await asyncio.sleep(0.1)
            client = await TsqClient.connect(
                "127.0.0.1", port, config, now_ns=time.time_ns, timeout_s=2
            )
            assert isinstance((await client.query(2.0)).reply, TsqResponse)
            client.close()

    run(go)


def test_datagram_client_without_sni(pki: Pki) -> None:
    """The reference adjtime tool sends no SNI and verifies nothing (spec §2.2)."""

    async def go() -> None:
        async with tsq_server(pki, "datagram") as server:
            config = client_configuration("datagram", server_name=None, insecure=True)
            client = await TsqClient.connect(
                "127.0.0.1", port_of(server), config, now_ns=time.time_ns, timeout_s=2
            )
            ex = await client.query(2.0, nonce=NONCE)
            assert isinstance(ex.reply, TsqResponse) and ex.reply.nonce == NONCE
            client.close()

    run(go)


# --- bounded state and address validation ------------------------------------------------------


async def _until(what: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _server_side(server: TsqServer) -> Any:
    (protocol,) = server._by_ip["127.0.0.1"]
    return protocol


def test_streams_the_client_resets_are_forgotten(pki: Pki) -> None:
    """A client that opens streams and abandons them (RESET_STREAM, STOP_SENDING) cannot make
    a connection hold more than its stream limit: 3 x 100 streams, more than the 128 it may
    have open, each forgotten and counted."""

    async def go() -> None:
        async with tsq_server(pki, "stream") as server, raw_client(pki, server) as p:
            quic = p._quic
            side = _server_side(server)
            counters = server.responder.counters
            # An incomplete request (a TLV still arriving), then RESET_STREAM only, then
            # RESET_STREAM and STOP_SENDING.
            for stop in (False, True):
                sids = [
                    await send_stream(p, REQUEST + b"\x05\xff" + bytes(200)) for _ in range(100)
                ]
                await _until(lambda: len(side._streams) == 100)  # all of them arrived
                for sid in sids:
                    quic.reset_stream(sid, 0)
                    if stop:
                        quic.stop_stream(sid, 0)
                p.transmit()
                goal = 200 if stop else 100
                await _until(lambda g=goal: counters.dropped == g)  # type: ignore[misc]
                assert side._streams == {} and side._answered == set()
            # Answered (no FIN from the client), then abandoned.
            sids = [await send_stream(p, REQUEST) for _ in range(100)]
            for sid in sids:
                await p.until(lambda s=sid: p.stream(s))  # type: ignore[misc]
                quic.reset_stream(sid, 0)
                quic.stop_stream(sid, 0)
            p.transmit()
            await _until(lambda: not side._answered)
            assert side._streams == {}
            # aioquic freed them too: the client got its stream credit back.
            await _until(lambda: len(side._quic._streams) == 0)
            assert counters.dropped_by_reason == {"stream_reset": 200}
            assert (counters.received, counters.sent) == (300, 100)

    run(go)


def test_stop_sending_with_the_request_is_not_answered(pki: Pki) -> None:
    """STOP_SENDING in the packet that completes the request: nothing may be sent on the
    stream; the request is counted as dropped, not as sent, and nothing raises."""

    async def go() -> None:
        async with tsq_server(pki, "stream") as server, raw_client(pki, server) as p:
            sid = p._quic.get_next_available_stream_id()
            p._quic.send_stream_data(sid, REQUEST)
            p._quic.stop_stream(sid, 0)
            p.transmit()
            counters = server.responder.counters
            await _until(lambda: counters.dropped == 1)
            assert counters.dropped_by_reason == {"stream_reset": 1}
            assert counters.sent == 0
            # The connection still serves.
            sid = await send_stream(p, REQUEST, fin=True)
            data, _ = await p.until(lambda: p.stream(sid))
            assert data[:18] == REQUEST

    run(go)


def _initial(port: int, pki: Pki) -> bytes:
    """A client's first Initial packet (1200 bytes), as a QUIC client sends it."""
    from aioquic.quic.connection import QuicConnection

    quic = QuicConnection(configuration=raw_config(pki, "datagram"))
    quic.connect(("127.0.0.1", port), now=time.monotonic())
    return quic.datagrams_to_send(now=time.monotonic())[0][0]


def test_unanswered_initials_take_no_connection_slot(pki: Pki) -> None:
    """Initials that nobody follows up (a spoofed source address, or a client that went
    away) create no connection: the client IP they name still connects at once.  A refused
    connection counts once, however many Initials it retransmits."""

    async def go() -> None:
        async with tsq_server(pki, "datagram", max_connections_per_client=2) as server:
            port = port_of(server)
            silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
            try:
                for sock in silent:
                    sock.bind(("127.0.0.1", 0))
                    sock.sendto(_initial(port, pki), ("127.0.0.1", port))
                await asyncio.sleep(0.2)
                assert server.connections() == 0
                assert all(sock.recv(2048)[0] & 0xF0 == 0xF0 for sock in silent)  # a Retry
            finally:
                for sock in silent:
                    sock.close()
            config = client_configuration("datagram", server_name="localhost", ca_file=pki.ca)
            kept = [
                await TsqClient.connect("127.0.0.1", port, config, now_ns=time.time_ns, timeout_s=2)
                for _ in range(2)
            ]
            assert server.connections() == 2
            # At the limit: the Retry, then a refusal for the Initial with the token, as
            # often as it is sent again (the refusal lost), counted once.
            from aioquic.quic.connection import QuicConnection
            from aioquic.quic.events import ConnectionTerminated

            quic = QuicConnection(configuration=raw_config(pki, "datagram"))
            quic.connect(("127.0.0.1", port), now=time.monotonic())
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(2)
                sock.sendto(quic.datagrams_to_send(now=time.monotonic())[0][0], ("127.0.0.1", port))
                retry = await asyncio.to_thread(sock.recv, 2048)
                quic.receive_datagram(retry, ("127.0.0.1", port), now=time.monotonic())
                tokened = quic.datagrams_to_send(now=time.monotonic())[0][0]
                for _ in range(3):
                    sock.sendto(tokened, ("127.0.0.1", port))
                    refusal = await asyncio.to_thread(sock.recv, 2048)
                quic.receive_datagram(refusal, ("127.0.0.1", port), now=time.monotonic())
            quic.handle_timer(now=quic.get_timer() or 0.0)  # the end of its draining period
            closed = [e for e in iter(quic.next_event, None) if isinstance(e, ConnectionTerminated)]
            assert [(e.error_code, e.reason_phrase) for e in closed] == [
                (0x2, "too many connections from 127.0.0.1 (max-connections-per-client 2)")
            ]
            assert server.responder.counters.connections_refused == 1
            for client in kept:
                client.close()

    run(go)


@pytest.mark.parametrize("transport", ["stream", "datagram"])
def test_metadata_query_with_a_long_source_name_is_answered(pki: Pki, transport: Any) -> None:
    """Our source's name in Time Source Info, 300 bytes once encoded: answered, cut to fit."""
    long_info = TsqServerInfo(
        clock_quality=INFO.clock_quality,
        source_info=SourceInfo(stratum=2, source_type=3, info="€" * 100),
        metadata=INFO.metadata,
    )

    async def go() -> None:
        async with tsq_server(pki, transport, info=long_info) as server:
            config = client_configuration(transport, server_name="localhost", ca_file=pki.ca)
            client = await TsqClient.connect(
                "127.0.0.1", port_of(server), config, now_ns=time.time_ns, timeout_s=2
            )
            try:
                reply = (await client.query(2.0, metadata_query=True)).reply
            finally:
                client.close()
            assert isinstance(reply, TsqResponse) and reply.source_info is not None
            assert reply.source_info.info == "€" * 84
            assert server.responder.counters.dropped == 0

    run(go)


def test_server_info_names_the_source_within_the_tlv() -> None:
    """The daemon's Time Source Info: the selected source's name cut in bytes, on a UTF-8
    character boundary (a cut by characters left 200 x '€', 600 bytes)."""
    from types import SimpleNamespace

    from tsyncd.servers.tsq_setup import tsq_server_info

    decision = SimpleNamespace(
        synchronized=True,
        selected="€" * 200,
        stratum=3,
        root_delay_ns=0,
        root_dispersion_ns=0,
    )
    core = SimpleNamespace(
        decision=decision,
        system=SimpleNamespace(local_stratum=None),
        reference_skew_ppm=lambda now_ns: 0.2291,
    )
    info = tsq_server_info(core, 0)  # type: ignore[arg-type]
    assert info.source_info.info == "€" * 84
    # QA s22: the drift was the discipline's standard error, not tracking's skew (0.229 ppm
    # in tracking, 936 ppb in the TLV).
    assert info.clock_quality.drift_ppb == 230
    decision.synchronized = False
    info = tsq_server_info(core, 0)  # type: ignore[arg-type]
    assert info.clock_quality.drift_ppb == 65535  # unknown: the field's largest value


def test_a_response_that_cannot_be_encoded_is_dropped_and_counted() -> None:
    bad = TsqServerInfo(
        clock_quality=INFO.clock_quality,
        source_info=SourceInfo(stratum=300, source_type=3),  # not a byte
    )
    responder = TsqResponder(time.time_ns, lambda: bad)
    assert responder.respond(REQUEST + b"\xf7\x00", time.time_ns()) is None
    assert responder.respond(REQUEST, time.time_ns()) is not None  # no metadata: fine
    c = responder.counters
    assert (c.received, c.sent, c.dropped_by_reason) == (2, 1, {"unencodable": 1})


@pytest.mark.parametrize(("client", "server"), [("stream", "datagram"), ("datagram", "stream")])
def test_client_on_the_other_variants_port_says_so(pki: Pki, client: Any, server: Any) -> None:
    """The port decides the variant: a client of the other one learns it from the handshake's
    transport parameters, at once, rather than timing out on every query."""

    async def go() -> None:
        async with tsq_server(pki, server) as srv:
            config = client_configuration(client, server_name="localhost", ca_file=pki.ca)
            started = time.monotonic()
            with pytest.raises(TsqClientError) as info:
                await TsqClient.connect(
                    "127.0.0.1", port_of(srv), config, now_ns=time.time_ns, timeout_s=2
                )
            assert time.monotonic() - started < 1.5
            assert info.value.reason == "wrong_transport"
            assert f"a TSQ {server} port? (try the {server} transport)" in str(info.value)

    run(go)


def test_ipv6_addresses_are_bracketed_in_errors() -> None:
    async def go() -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:
            silent.bind(("::1", 0))
            config = client_configuration("stream", server_name="localhost", insecure=True)
            with pytest.raises(TsqClientError) as info:
                await TsqClient.connect(
                    "::1", silent.getsockname()[1], config, now_ns=time.time_ns, timeout_s=0.2
                )
            assert f"no QUIC handshake with [::1]:{silent.getsockname()[1]} within" in str(
                info.value
            )

    run(go)


def test_source_dscp_marks_its_quic_packets(pki: Pki) -> None:
    """A TSQ source's dscp is set on its QUIC connection's socket (IP_TOS = DSCP << 2)."""

    async def go() -> None:
        async with tsq_server(pki, "datagram") as server:
            source = tsq_source(pki, port_of(server), dscp=46)
            try:
                client = await source._connected()
                sock = client._udp.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 46 << 2
                assert isinstance((await client.query(2.0)).reply, TsqResponse)
            finally:
                source.close()

    run(go)


def test_a_burst_of_queries_is_logged_up_to_the_budget_then_counted(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """QA s22: every query was logged at INFO, 2,000 lines in 1.9 s from one client.  Now the
    first of each window are, and one line says how many more came (all are counted)."""
    caplog.set_level(logging.INFO, logger="tsyncd.servers.tsq")

    async def go() -> None:
        async with tsq_server(pki, "datagram") as server:
            server._query_log = querylog.QueryLogBudget(window_s=0.5)  # not 10 s
            async with raw_client(pki, server) as p:
                for _ in range(50):
                    p._quic.send_datagram_frame(REQUEST)
                    p.transmit()
                await p.until(lambda: True if len(p.datagrams()) >= 50 else None)
                await _until(lambda: "not logged" in caplog.text)  # at the window's end
            assert server.responder.counters.sent == 50

    run(go)
    lines = [r.getMessage() for r in caplog.records if r.name == "tsyncd.servers.tsq"]
    queries = [line for line in lines if line.startswith("TSQ query from 127.0.0.1:")]
    assert len(queries) == querylog.DEFAULT_BURST
    held = [line for line in lines if "not logged" in line]
    assert (
        len(held) == 1 and f" {50 - querylog.DEFAULT_BURST} more queries from 1 client" in held[0]
    )
