"""A TSQ client connection (aioquic): connect once, then query as often as needed.

Theory of operation
-------------------
The reference clients open a connection per query (stream) and close it with aioquic's
closing-period wait, ~110 ms each on loopback, and have no connect timeout (spec §2.4, §12).
We connect once with a timeout, keep the connection for every query, and on ``close()`` send
CONNECTION_CLOSE without waiting out the closing period (nothing is left to receive).

* stream: each query opens a new bidirectional stream and writes the 18-byte request (plus any
  optional TLVs) with FIN in one write; the reply is parsed as soon as it is complete, without
  waiting for the server's FIN (the reference server sends it 5 s later, spec §4);
* datagram: each query is one DATAGRAM; replies are matched to the outstanding query by
  nonce, so a late reply to an earlier, timed-out query is counted and ignored.  A reply
  whose nonce none of our recent queries sent (a broken or confused server: QUIC lets no one
  else inject one) is counted apart, and a query that gets only such replies fails as
  ``bad_nonce`` (as a wrong nonce on a stream does), not as a silent ``timeout``.

T1 is read just before the packet goes to the kernel, T4 when the UDP packet carrying the
reply arrives (before decryption).  Checking the reply is ``sync/tsq.evaluate``'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    QuicEvent,
    StreamDataReceived,
)

from tsyncd.asyncwait import wait_for
from tsyncd.net.quic import NowNs, TimestampedProtocol, Transport
from tsyncd.net.udp import SocketOptions
from tsyncd.wire.errors import Truncated, WireError
from tsyncd.wire.tsq import (
    MAX_MESSAGE,
    NONCE_LEN,
    TsqErrorReply,
    TsqRequest,
    TsqResponse,
    decode_response,
    encode_request,
)

__all__ = ["Exchange", "TsqClient", "TsqClientError"]

# Nonces of the last queries sent on a connection: a datagram reply echoing one of them that
# nobody waits for any more is late or repeated, not foreign.
_RECENT_NONCES: Final = 32


class TsqClientError(Exception):
    """A query failed without a reply: connect failure, timeout, connection closed.

    ``reason`` is a stable snake_case label (``connect_timeout``, ``timeout``, ``closed``,
    ``tls``, ``malformed``, ``bad_nonce`` ...).  ``replied``: the server did answer, unusably
    (a malformed reply, only replies with another nonce): the connection itself works, so a
    caller keeps it.
    """

    def __init__(self, reason: str, message: str, *, replied: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.replied = replied


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One query and what came back; integer ns of the local clock."""

    nonce: bytes
    t1_ns: int
    t4_ns: int
    reply: TsqResponse | TsqErrorReply


class _ClientProtocol(TimestampedProtocol):
    """Delivers each complete reply to the future waiting for it."""

    def __init__(self, quic: QuicConnection, *, now_ns: NowNs, **kwargs: Any) -> None:
        super().__init__(quic, now_ns=now_ns, **kwargs)
        self.stream_waiters: dict[int, asyncio.Future[tuple[bytes, int]]] = {}
        self.datagram_waiters: dict[bytes, asyncio.Future[tuple[bytes, int]]] = {}
        self.unmatched = 0  # datagram replies nobody waits for (late, repeated or foreign)
        self.foreign = 0  # of which echo a nonce none of our recent queries sent
        self.nonceless = 0  # of which carry no nonce (not the reference layout)
        self.sent_nonces: deque[bytes] = deque(maxlen=_RECENT_NONCES)
        self.terminated: str | None = None
        self._buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._on_stream(event)
        elif isinstance(event, DatagramFrameReceived):
            nonce = _nonce_of(event.data)
            waiter = self.datagram_waiters.pop(nonce, None)
            if waiter is None or waiter.done():
                self.unmatched += 1
                if not nonce:
                    self.nonceless += 1
                elif nonce not in self.sent_nonces:
                    self.foreign += 1
            else:
                waiter.set_result((event.data, self.rx_ns))
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event.reason_phrase or f"error {event.error_code:#x}"
            error = TsqClientError("closed", f"connection closed: {self.terminated}")
            for waiter in [*self.stream_waiters.values(), *self.datagram_waiters.values()]:
                if not waiter.done():
                    waiter.set_exception(error)
            self.stream_waiters.clear()
            self.datagram_waiters.clear()

    def _on_stream(self, event: StreamDataReceived) -> None:
        waiter = self.stream_waiters.get(event.stream_id)
        if waiter is None or waiter.done():
            return
        buf = self._buffers.setdefault(event.stream_id, bytearray())
        buf += event.data
        try:
            decode_response(bytes(buf))
        except Truncated:
            if not event.end_stream and len(buf) <= MAX_MESSAGE:
                return  # the rest of a TLV is on its way
        except WireError:
            pass  # complete but bad: the caller's decode reports it
        del self.stream_waiters[event.stream_id]
        waiter.set_result((bytes(self._buffers.pop(event.stream_id)), self.rx_ns))

    def discard_buffer(self, sid: int) -> None:
        """Forget what arrived of a reply nobody waits for any more."""
        self._buffers.pop(sid, None)


def _wrong_transport(quic: QuicConnection, transport: Transport) -> str | None:
    """Why the server, by its transport parameters, speaks the other TSQ variant, or None.

    The port decides the variant and nothing is negotiated (shared/specs/tsq.md §1), so a
    client on the wrong port would only time out on every query.  The handshake tells: a
    datagram server advertises ``max_datagram_frame_size`` and no client streams (the
    reference quiche server, and ours), a stream server no ``max_datagram_frame_size``
    (without it we may not send a DATAGRAM at all, RFC 9221 §3).
    """
    datagrams = quic._remote_max_datagram_frame_size is not None
    if transport == "datagram" and not datagrams:
        return "the server takes no DATAGRAM frames: a TSQ stream port? (try the stream transport)"
    if transport == "stream" and datagrams and quic._remote_max_streams_bidi == 0:
        return (
            "the server takes DATAGRAM frames, no streams: a TSQ datagram port? "
            "(try the datagram transport)"
        )
    return None


def _nonce_of(data: bytes) -> bytes:
    """The nonce of a reference-layout response (Nonce TLV first), else b""."""
    return data[2 : 2 + NONCE_LEN] if data[:2] == b"\x01\x10" and len(data) >= 18 else b""


def _timed_out(timeout_s: float, foreign: int, nonceless: int) -> TsqClientError:
    """No reply to our query within ``timeout_s``.  If replies came meanwhile with a nonce we
    did not send (``foreign``) or none (``nonceless``), the server answers wrongly rather than
    not at all, and the error says so."""
    if not foreign and not nonceless:
        return TsqClientError("timeout", f"no reply within {timeout_s:g} s")
    counts = [
        f"{n} {'reply' if n == 1 else 'replies'} {what}"
        for n, what in ((foreign, "echoed another nonce"), (nonceless, "without a nonce"))
        if n
    ]
    return TsqClientError(
        "bad_nonce",
        f"no reply with our nonce within {timeout_s:g} s ({', '.join(counts)})",
        replied=True,
    )


class TsqClient:
    """One QUIC connection to a TSQ server, reused for every query."""

    def __init__(self, protocol: _ClientProtocol, udp: asyncio.DatagramTransport) -> None:
        self._protocol = protocol
        self._udp = udp
        self.transport: Transport = (
            "datagram"
            if protocol._quic.configuration.max_datagram_frame_size is not None
            else "stream"
        )

    @classmethod
    async def connect(
        cls,
        ip: str,
        port: int,
        configuration: QuicConfiguration,
        *,
        now_ns: NowNs,
        timeout_s: float,
        dscp: int = 0,
    ) -> TsqClient:
        """Handshake with ``ip:port`` within ``timeout_s``, every packet of the connection
        marked with ``dscp`` (a source's ``dscp``); raise ``TsqClientError``."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        quic = QuicConnection(configuration=configuration)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            SocketOptions(dscp=dscp).apply(sock, family)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            udp, protocol = await loop.create_datagram_endpoint(
                lambda: _ClientProtocol(quic, now_ns=now_ns), sock=sock
            )
        except OSError as exc:
            sock.close()
            raise TsqClientError("socket", f"cannot open a UDP socket for {ip}: {exc}") from exc
        client = cls(protocol, udp)
        where = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        try:
            # The socket reports IPv6 peers as 4-tuples; aioquic matches the path by equality.
            protocol.connect((ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port))
            await wait_for(protocol.wait_connected(), timeout_s)
        except TimeoutError:
            client.close()
            raise TsqClientError(
                "connect_timeout", f"no QUIC handshake with {where} within {timeout_s:g} s"
            ) from None
        except ConnectionError:
            client.close()
            why = protocol.terminated or "handshake failed"
            raise TsqClientError("handshake", f"QUIC handshake with {where}: {why}") from None
        mismatch = _wrong_transport(protocol._quic, client.transport)
        if mismatch is not None:
            client.close()
            raise TsqClientError("wrong_transport", f"QUIC handshake with {where}: {mismatch}")
        return client

    @property
    def closed(self) -> bool:
        """The connection is gone (closed by either side, or idle-timed out)."""
        return self._protocol.terminated is not None or self._udp.is_closing()

    @property
    def close_reason(self) -> str | None:
        """Why the connection ended (aioquic's reason phrase, e.g. ``Idle timeout``), or None."""
        return self._protocol.terminated

    async def query(
        self, timeout_s: float, *, metadata_query: bool = False, nonce: bytes | None = None
    ) -> Exchange:
        """Send one request with a fresh random nonce; the reply within ``timeout_s``."""
        if self.closed:
            raise TsqClientError("closed", "the connection is closed")
        nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_LEN)
        data = encode_request(TsqRequest(nonce=nonce, metadata_query=metadata_query))
        protocol = self._protocol
        quic = protocol._quic
        waiter: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        sid = -1
        unusable = (protocol.foreign, protocol.nonceless)
        if self.transport == "datagram":
            protocol.datagram_waiters[nonce] = waiter
            protocol.sent_nonces.append(nonce)
            quic.send_datagram_frame(data)
        else:
            sid = quic.get_next_available_stream_id()
            protocol.stream_waiters[sid] = waiter
            quic.send_stream_data(sid, data, end_stream=True)
        t1_ns = protocol.now_ns()
        protocol.transmit()
        try:
            raw, t4_ns = await wait_for(waiter, timeout_s)
        except TimeoutError:
            protocol.datagram_waiters.pop(nonce, None)
            protocol.stream_waiters.pop(sid, None)
            protocol.discard_buffer(sid)
            raise _timed_out(
                timeout_s, protocol.foreign - unusable[0], protocol.nonceless - unusable[1]
            ) from None
        try:
            reply = decode_response(raw)
        except WireError as exc:
            raise TsqClientError(exc.reason, f"malformed reply: {exc}", replied=True) from None
        return Exchange(nonce=nonce, t1_ns=t1_ns, t4_ns=t4_ns, reply=reply)

    def ping(self) -> None:
        """Send a QUIC PING (ack-eliciting), so that neither side's idle timer expires."""
        if not self.closed:
            self._protocol._quic.send_ping(0)
            self._protocol.transmit()

    def close(self) -> None:
        """Send CONNECTION_CLOSE and release the socket, without the closing-period wait."""
        with contextlib.suppress(Exception):
            self._protocol.close()
        timer = self._protocol._timer
        if timer is not None:  # its closing-period timer would fire on a closed socket
            timer.cancel()
        self._udp.close()
