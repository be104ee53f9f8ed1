"""TSQ servers (time over QUIC): the stream and the datagram variant, one listening port each.

Theory of operation
-------------------
``TsqResponder`` holds the per-request decisions: parse the request (``wire/tsq``), build the
response with T2 = the arrival of the UDP packet that completed it and T3 read just before
encoding, add the clock-quality, source-info and metadata TLVs when the client asks (Metadata
Query, 247), and count each outcome under a stable reason.

``TsqServer`` is the aioquic edge.  The variants follow what deployed clients need
(shared/specs/tsq.md §14):

* stream: each client-initiated bidirectional stream carries one query.  We answer as soon as
  the buffered bytes form a whole request (the 18 reference bytes, plus any optional TLVs
  sent in the same write), whether or not FIN came, in one write with FIN -- no 5 s hold as
  the reference has.  A request still incomplete at FIN, or longer than ``MAX_MESSAGE``, gets
  an Error TLV (draft §5.4), which the reference clients count as a failed sample, as they do
  the reference's empty FIN.  A stream the client abandons (RESET_STREAM, or STOP_SENDING,
  on which aioquic resets our side) is forgotten at once, its request counted as dropped
  (``stream_reset``) if still unanswered: what a connection holds stays within its stream
  limit however many streams it opens over its life;
* datagram: one DATAGRAM reply per valid DATAGRAM request; malformed ones are dropped silently
  (draft SHOULD, and the reference).  Repeated nonces are answered: the reference adjtime tool
  sends a constant nonce (spec §5), so a replay cache would break it.  No client streams.

Connections per client IP are bounded, and only connections from a validated address count
(``_BoundedQuicServer``: a Retry first, RFC 9000 §8.1).  A new connection from a client at its
limit is dropped before aioquic allocates anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Final

from aioquic._buffer import Buffer
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from tsyncd.net.quic import NowNs, TimestampedProtocol, Transport, limit_client_streams
from tsyncd.servers.querylog import QueryLogBudget
from tsyncd.wire.errors import Truncated, WireError
from tsyncd.wire.timestamps import ntp64_from_unix_ns
from tsyncd.wire.tsq import (
    MAX_MESSAGE,
    REQUEST_LEN,
    ClockQuality,
    ErrorCode,
    SourceInfo,
    TsqResponse,
    decode_request,
    encode_error,
    encode_response,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS_PER_CLIENT: Final = 8
_STREAMS_PER_CONNECTION: Final = 128  # concurrent client streams (aioquic's default)
_REASON_MAX: Final = 200  # bytes of a refusal's reason phrase (fits one Initial easily)
_REFUSED_REMEMBERED: Final = 1024  # refused connection attempts remembered, to count each once


@dataclass(frozen=True, slots=True, kw_only=True)
class TsqServerInfo:
    """What we tell clients who ask about our clock (Metadata Query): the system state."""

    clock_quality: ClockQuality
    source_info: SourceInfo
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class TsqCounters:
    """What one TSQ server has done, for serverstats and metrics."""

    received: int = 0  # requests (streams or datagrams) seen
    sent: int = 0  # time responses sent
    errors_sent: int = 0  # Error TLV responses sent (stream only)
    dropped: int = 0  # requests answered with nothing (or an error)
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    connections: int = 0  # connections accepted
    connections_refused: int = 0  # connections (not packets) refused: over the per-client limit

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1


class TsqResponder:
    """Request bytes in, response bytes out, every outcome counted."""

    def __init__(self, now_ns: NowNs, info: Callable[[], TsqServerInfo]) -> None:
        self.now_ns = now_ns
        self.info = info
        self.counters = TsqCounters()
        self._encode_failed = False  # logged once

    def respond(self, data: bytes, t2_ns: int) -> bytes | None:
        """The response to a whole request received at ``t2_ns``, or None (dropped, counted)."""
        self.counters.received += 1
        try:
            request = decode_request(data)
        except WireError as exc:
            self.counters.drop(exc.reason)
            return None
        extra: dict[str, Any] = {}
        if request.metadata_query:
            info = self.info()
            extra = {
                "clock_quality": info.clock_quality,
                "source_info": info.source_info,
                "metadata": info.metadata,
            }
        if request.precision_mode:
            extra["precision_mode"] = True
        t2 = ntp64_from_unix_ns(t2_ns)
        try:
            data_out = self._encode(request.nonce, t2, len(data), request.precision_mode, extra)
        except (ValueError, OverflowError) as exc:
            # The encoder clips what it is given to fit; should anything still not fit, the
            # request is dropped and counted, never an exception out of the event loop.
            if not self._encode_failed:
                log.error("TSQ response cannot be encoded: %s", exc)
                self._encode_failed = True
            self.counters.drop("unencodable")
            return None
        self.counters.sent += 1
        return data_out

    def _encode(
        self, nonce: bytes, t2: int, request_len: int, precision: bool, extra: dict[str, Any]
    ) -> bytes:
        response = TsqResponse(
            nonce=nonce, receive_ts=t2, send_ts=ntp64_from_unix_ns(self.now_ns()), **extra
        )
        data_out = encode_response(response)
        if precision and request_len > len(data_out) + 2:
            # Draft §5.5: equal request and response sizes; pad up to the request's length.
            data_out = encode_response(
                TsqResponse(
                    nonce=nonce,
                    receive_ts=t2,
                    send_ts=ntp64_from_unix_ns(self.now_ns()),
                    padding=min(255, request_len - len(data_out) - 2),
                    **extra,
                )
            )
        return data_out


class _TsqServerProtocol(TimestampedProtocol):
    """One client connection to a TSQ server.

    Per-connection state is bounded by the client stream limit: ``_streams`` holds the bytes
    of requests still arriving, ``_answered`` the streams answered before the client's FIN (or
    abandoned) whose further bytes are ignored.  Each entry goes when its stream ends (FIN,
    RESET_STREAM, STOP_SENDING), and an entry whose stream aioquic no longer holds is pruned.
    """

    def __init__(
        self, quic: QuicConnection, *, server: TsqServer, peer: NetworkAddress, **kwargs: Any
    ) -> None:
        super().__init__(quic, now_ns=server.responder.now_ns, **kwargs)
        self.server = server
        self.peer = peer
        self.client = _address_text(peer)
        self._streams: dict[int, bytearray] = {}
        self._answered: set[int] = set()
        limit_client_streams(quic, 0 if server.transport == "datagram" else _STREAMS_PER_CONNECTION)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._on_stream(event)
        elif isinstance(event, DatagramFrameReceived):
            self._on_datagram(event.data)
        elif isinstance(event, StreamReset | StopSendingReceived):
            self._on_abandoned(event)
        elif isinstance(event, ConnectionTerminated):
            self.server.forget(self)

    def _on_datagram(self, data: bytes) -> None:
        response = self.server.responder.respond(data, self.rx_ns)
        if response is None:
            log.debug("TSQ datagram from %s dropped", self.client)
            return
        self._quic.send_datagram_frame(response)
        self.transmit()
        self.server.log_query(self.client, "TSQ query from %s (datagram)")

    def _on_abandoned(self, event: StreamReset | StopSendingReceived) -> None:
        """The client reset its side of the stream, or asked us to stop sending (aioquic has
        then reset our side): it will not take an answer any more."""
        sid = event.stream_id
        reset = isinstance(event, StreamReset)
        if sid in self._answered:
            if reset:
                self._answered.discard(sid)  # its last event: nothing more comes
            return
        stream = self._quic._streams.get(sid)
        if (
            not reset
            and sid not in self._streams
            and (stream is None or stream.receiver.is_finished)
        ):
            return  # answered already, the request having come whole with its FIN
        # Unanswered (whatever part of the request came): received and dropped.
        self._streams.pop(sid, None)
        counters = self.server.responder.counters
        counters.received += 1
        counters.drop("stream_reset")
        log.debug("TSQ stream from %s abandoned before its answer", self.client)
        if reset:
            # We will never answer: end our side too, so that aioquic frees the stream (and
            # gives the client its credit back) rather than keep it half open.
            self._quic.reset_stream(sid, 0)
            self.transmit()
        else:
            self._mark_answered(sid)  # the client may still send: ignored until it ends

    def _on_stream(self, event: StreamDataReceived) -> None:
        sid = event.stream_id
        if sid in self._answered:
            # Bytes after the request on an answered stream: ignored.  Its FIN ends it.
            if event.end_stream:
                self._answered.discard(sid)
            return
        # A datagram server advertises no client streams (limit_client_streams): aioquic
        # closes a connection that opens one, so no stream reaches this point there.
        buf = self._streams.setdefault(sid, bytearray())
        buf += event.data
        if len(buf) > MAX_MESSAGE:
            self._finish(sid, None, "request too long", event.end_stream)
            return
        if len(buf) < REQUEST_LEN and not event.end_stream:
            return
        try:
            decode_request(bytes(buf))
        except Truncated:
            if not event.end_stream:
                return  # a TLV is still arriving (the reference never splits, but may)
        except WireError:
            pass  # the responder counts it below
        response = self.server.responder.respond(bytes(buf), self.rx_ns)
        self._finish(sid, response, "malformed request", event.end_stream)

    def _mark_answered(self, sid: int) -> None:
        self._answered.add(sid)
        if len(self._answered) > _STREAMS_PER_CONNECTION:
            # More than the client may have open: some ended without an event reaching us.
            live = self._quic._streams
            self._answered = {s for s in self._answered if s in live}

    def _finish(self, sid: int, response: bytes | None, why: str, fin_seen: bool) -> None:
        self._streams.pop(sid, None)
        counters = self.server.responder.counters
        refused = response is None
        if response is None:
            if why == "request too long":
                counters.received += 1
                counters.drop("oversized")
            counters.errors_sent += 1
            response = encode_error(ErrorCode.MALFORMED, why)
            self.server.log_query(self.client, "TSQ stream query from %s failed: %s", why)
        else:
            self.server.log_query(self.client, "TSQ query from %s (stream)")
        try:
            self._quic.send_stream_data(sid, response, end_stream=True)
        except RuntimeError:
            # STOP_SENDING came in the same packet as the request, and aioquic handled it
            # first: our side is reset, nothing may be sent.  Count what was not sent.
            if refused:
                counters.errors_sent -= 1  # the request is counted as dropped already
            else:
                counters.sent -= 1
                counters.drop("stream_reset")
        else:
            self.transmit()
        if not fin_seen:
            self._mark_answered(sid)


class _BoundedQuicServer(QuicServer):
    """aioquic's server with address validation and a cap on connections per client IP; tells
    each protocol its peer.

    The cap must not be usable against a client by someone else.  So a connection, and the
    slot it takes, exists only for an address shown to receive our packets: the first Initial
    of an attempt gets a Retry packet with a token (aioquic's, the address and connection IDs
    sealed with AES-GCM), and only an Initial that brings the token back from that address
    creates a connection (RFC 9000 §8.1: address validation before committing state; §21.1.1,
    the handshake's defence against server-side denial of service).  An Initial from a spoofed
    address, or one nobody follows up, costs one small packet (no amplification: the Retry is
    shorter than the 1200-byte Initial) and holds no slot, where without it each held one for
    the 30 s idle timeout.  The price is one round trip per new connection, which a client
    keeping its connection (the daemon's sources, ``tsyncctl tsq``) pays once; the reference
    clients (aioquic, quiche) follow Retry as QUIC requires.

    A client at its limit is refused in words: its first Initial gets the Retry as any does,
    and the Initial that brings the token back (its address shown) gets a stateless Initial
    packet closing the connection with CONNECTION_REFUSED (RFC 9000 §20.1) and the reason,
    so the client can tell "too many connections from this address" (a NAT with many clients
    behind it) from a server that is down.  ``connections_refused`` counts connections: an
    attempt is known by its address and destination connection ID, which its retransmitted
    Initials repeat; the last ``_REFUSED_REMEMBERED`` refused attempts are remembered so that
    each is counted once.
    """

    def __init__(self, *, tsq: TsqServer, **kwargs: Any) -> None:
        super().__init__(create_protocol=self._create, retry=True, **kwargs)
        self.tsq = tsq
        self._peer: NetworkAddress = ("", 0)
        self._refused: OrderedDict[tuple[str, int, bytes], None] = OrderedDict()

    def _create(self, quic: QuicConnection, **kwargs: Any) -> _TsqServerProtocol:
        protocol = _TsqServerProtocol(quic, server=self.tsq, peer=self._peer, **kwargs)
        self.tsq.admit(protocol)
        return protocol

    def use_configuration(self, configuration: QuicConfiguration) -> None:
        """New connections use ``configuration``; open ones keep theirs."""
        self._configuration = configuration

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        if isinstance(data, bytes) and self.tsq.at_limit(addr):
            header = self._new_attempt(data)
            if header is not None and header.token:  # without one: the Retry, below
                self._refuse(header, addr)
                return
        self._peer = addr
        super().datagram_received(data, addr)

    def _refuse(self, header: QuicHeader, addr: NetworkAddress) -> None:
        """Close a client's attempt over its limit with CONNECTION_REFUSED, once its Retry
        token shows the address is its own (else drop it: a forged address learns nothing)."""
        assert self._retry is not None and self._transport is not None  # retry=True, started
        try:
            self._retry.validate_token(
                address=addr,
                destination_cid=header.destination_cid,
                token=header.token,
                now=self._loop.time(),
            )
        except ValueError:
            return
        assert header.version is not None  # an Initial has one
        self._transport.sendto(
            refusal_packet(
                header.version,
                header.destination_cid,
                header.source_cid,
                f"too many connections from {addr[0]} (max-connections-per-client "
                f"{self.tsq.max_connections_per_client})",
            ),
            addr,
        )
        attempt = (str(addr[0]), int(addr[1]), header.destination_cid)
        if attempt in self._refused:
            self._refused.move_to_end(attempt)
            return
        self._refused[attempt] = None
        if len(self._refused) > _REFUSED_REMEMBERED:
            self._refused.popitem(last=False)
        self.tsq.responder.counters.connections_refused += 1

    def _new_attempt(self, data: bytes) -> QuicHeader | None:
        """The header of an Initial for a connection we do not know (one that would lead to a
        connection), else None."""
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._configuration.connection_id_length
            )
        except ValueError:
            return None
        if (
            header.packet_type == QuicPacketType.INITIAL
            and header.destination_cid not in self._protocols
            and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE  # what aioquic answers at all
        ):
            return header
        return None


def refusal_packet(version: int, client_dcid: bytes, client_scid: bytes, reason: str) -> bytes:
    """A server Initial packet closing the connection with CONNECTION_REFUSED and ``reason``,
    sent without creating the connection: Initial keys come from the client's destination
    connection ID alone (RFC 9001 §5.2), as for aioquic's own INVALID_TOKEN close."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=client_dcid,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        peer_cid=client_scid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    phrase = reason.encode()[:_REASON_MAX]
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=16 + len(phrase))
    buf.push_uint_var(QuicErrorCode.CONNECTION_REFUSED)
    buf.push_uint_var(QuicFrameType.PADDING)  # the frame that caused it: none
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return datagrams[0]


class TsqServer:
    """A TSQ server of one variant on one address."""

    def __init__(
        self,
        transport: Transport,
        responder: TsqResponder,
        *,
        max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    ) -> None:
        self.transport = transport
        self.responder = responder
        self.max_connections_per_client = max_connections_per_client
        self._by_ip: dict[str, set[_TsqServerProtocol]] = {}
        self._quic_server: _BoundedQuicServer | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._query_log = QueryLogBudget()  # each query logged, up to a budget (querylog.py)
        self._held_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def create(
        cls,
        host: str,
        port: int,
        transport: Transport,
        configuration: QuicConfiguration,
        responder: TsqResponder,
        *,
        max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    ) -> TsqServer:
        """Bind and start serving; OSError if the address is taken."""
        server = cls(transport, responder, max_connections_per_client=max_connections_per_client)
        loop = asyncio.get_running_loop()
        udp, protocol = await loop.create_datagram_endpoint(
            lambda: _BoundedQuicServer(tsq=server, configuration=configuration),
            local_addr=(host, port),
        )
        server._udp = udp
        server._quic_server = protocol
        return server

    @property
    def listen(self) -> str:
        """The bound address as 'ip:port' or '[ip6]:port'."""
        if self._udp is None:
            return ""
        return _address_text(self._udp.get_extra_info("sockname"))

    def use_configuration(self, configuration: QuicConfiguration) -> None:
        """Serve the connections to come with ``configuration`` (a renewed certificate); those
        open keep the one they started with."""
        if self._quic_server is not None:
            self._quic_server.use_configuration(configuration)

    def connections(self) -> int:
        """Open connections."""
        return sum(len(s) for s in self._by_ip.values())

    def at_limit(self, addr: NetworkAddress) -> bool:
        return len(self._by_ip.get(_ip_key(addr), ())) >= self.max_connections_per_client

    def admit(self, protocol: _TsqServerProtocol) -> None:
        self.responder.counters.connections += 1
        self._by_ip.setdefault(_ip_key(protocol.peer), set()).add(protocol)
        log.debug("TSQ %s connection from %s", self.transport, protocol.client)

    def forget(self, protocol: _TsqServerProtocol) -> None:
        key = _ip_key(protocol.peer)
        live = self._by_ip.get(key)
        if live is not None:
            live.discard(protocol)
            if not live:
                del self._by_ip[key]

    def log_query(self, client: str, message: str, *args: object) -> None:
        """Log a query (``message`` % (client, *args)) within the log budget; past it, count it
        for the line that says how many went unlogged, at the window's end."""
        now = time.monotonic()
        self._say_held(now)
        if self._query_log.take(now, client):
            log.info(message, client, *args)
        elif self._held_timer is None:
            end = self._query_log.window_end
            assert end is not None  # take() started a window
            loop = asyncio.get_running_loop()
            self._held_timer = loop.call_later(max(0.0, end - now), self._say_held)

    def _say_held(self, now: float | None = None) -> None:
        if now is None:  # the timer
            self._held_timer = None
            now = time.monotonic()
        held = self._query_log.held(now)
        if held is not None:
            log.info(
                "TSQ %s server %s: %d more queries from %d client(s) in %.0f s not logged "
                "(tsyncctl serverstats counts every one)",
                self.transport,
                self.listen,
                held.queries,
                held.clients,
                held.window_s,
            )

    def close(self) -> None:
        """Close every connection and stop listening."""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        if self._quic_server is not None:
            self._quic_server.close()
            self._quic_server = None
        self._by_ip.clear()


def _ip_key(addr: NetworkAddress) -> str:
    try:
        ip = ip_address(str(addr[0]))
    except ValueError:
        return str(addr[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _address_text(addr: NetworkAddress) -> str:
    host = _ip_key(addr)
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
