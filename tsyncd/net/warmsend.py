"""Warm the kernel's send path: before a lone basic reply's Transmit is read, and around a
source's request (``client_warmer``).

Why: a basic reply's Transmit is a clock read plus the send lag ``latetx.SendLag`` learns, so
its error is how much that lag varies.  On this VM a send whose kernel path has not run for a
while (a server at a client's pace) takes 34 µs from the clock read to the kernel's TX stamp,
p5-p95 27-41 µs; right after another send it takes 5.7 µs, p5-p95 4.7-7.2 µs (a C program,
200 sends 62 ms apart, loopback).  Spinning in user space first does not help (33.9 µs): what
is cold is the kernel's code and data for the UDP/IP send, not the CPU.  chronyd's C server
keeps it warm by doing little else between receiving and answering; a Python server's work in
between evicts it.  So before reading the clock for a reply that follows a quiet spell, the
worker sends one datagram to a socket of its own on loopback (through the same server socket),
and drains it after the reply has gone.  On a NIC the driver's part of the path stays cold,
but the socket, UDP, IP and routing parts are warmed all the same.

Bounded: only when no send happened in the last ``_QUIET_NS`` (so at most 1000 warm-ups a
second, and none under load, where every send keeps the path warm).

A client's requests (``client_warmer``) are warmed the same way, from a socket of the process's
own, because the same cold path lengthens both legs of an exchange with a server on this host:
our request's, from our kernel TX stamp to the server's RX stamp, and the server's reply's, from
its Transmit read to our RX stamp, since the server is usually woken on our CPU, right after
our Python ran there.  Which leg to warm depends on the mode (``TimestampedUdp.warm_before``):
- interleaved: the server's Transmit is its kernel TX stamp, so the reply leg is about 0.25 µs
  and the offset errs by half the request leg.  Warming before the request shortens that leg:
  against chronyd on loopback (scratch A/B over ``bench.precision``'s functions, 4 rounds of
  8 s) median offset +1.28 -> +0.46 µs, p95 |offset| 1.70 -> 0.59 µs (chronyd's own client
  +0.97 / 1.32 in the same run).
- basic: the server's Transmit is read before its send, so the reply leg also holds the
  server's send lag, and the offset errs by half the legs' difference.  Warming after the
  request (the server then answers on a warm path) shortens the reply leg: median -2.23 ->
  -1.22 µs, p95 1.70x -> 0.68x chronyd's own client (7.14 / 3.29 against 4.85 µs).  Warming
  before it instead shortens our leg only, and the legs' difference grows (median -2.30 µs).
For a server on another host only our own kernel's UDP/IP part is warmed, which changes neither
leg's stamps; it costs one loopback datagram per request.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any, Final

__all__ = ["SendWarmer", "client_warmer"]

_QUIET_NS: Final = 1_000_000  # a send path idle this long is treated as cold
_PAYLOAD: Final = bytes(48)  # the size of a reply: the same buffer sizes get used


class SendWarmer:
    """One server socket's warm-up sends to a private loopback sink."""

    def __init__(
        self, sock: socket.socket, send: Callable[[Any, bytes], bool] | None = None
    ) -> None:
        """``send(address, payload)``: how replies leave ``sock`` (``lonesend.LoneSend.send_raw``
        in a worker), so the warm-up runs the replies' own code; else ``sock.sendto``."""
        self._sock = sock
        self._send = send
        self._last_ns = 0
        self._pending = 0
        self._sink: socket.socket | None = None
        self._address: Any = None
        host = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
        try:
            sink = socket.socket(sock.family, socket.SOCK_DGRAM)
            sink.bind((host, 0))
            sink.setblocking(False)
        except OSError:
            return  # no loopback of this family: no warm-up, replies go out as before
        self._sink, self._address = sink, sink.getsockname()

    @property
    def ready(self) -> bool:
        """It has a sink to warm through (else ``warm`` and ``sent`` do nothing)."""
        return self._sink is not None

    def warm(self, now_ns: int) -> None:
        """Before the clock read of a reply: send to the sink if the path has been idle."""
        if self._sink is None or now_ns - self._last_ns < _QUIET_NS:
            return
        if self._send is not None:
            self._pending += self._send(self._address, _PAYLOAD)
            return
        try:
            self._sock.sendto(_PAYLOAD, self._address)
            self._pending += 1
        except OSError:
            pass

    def sent(self, now_ns: int) -> None:
        """A reply went out at about ``now_ns``; drain what the warm-ups left in the sink."""
        self._last_ns = now_ns
        sink = self._sink
        while self._pending and sink is not None:
            self._pending -= 1
            with contextlib.suppress(OSError):
                sink.recv(64)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None


_CLIENT_WARMERS: dict[int, SendWarmer | None] = {}


def client_warmer(family: int) -> SendWarmer | None:
    """The process's warm-up for requests of address ``family``: one sender socket per family,
    shared by every source, whose requests leave one at a time from the event loop; None if
    this host has no loopback of the family."""
    if family not in _CLIENT_WARMERS:
        try:
            sender = socket.socket(family, socket.SOCK_DGRAM)
            sender.setblocking(False)
        except OSError:
            _CLIENT_WARMERS[family] = None
        else:
            warmer = SendWarmer(sender)
            if not warmer.ready:
                sender.close()  # no loopback of this family: requests go out unwarmed
            _CLIENT_WARMERS[family] = warmer if warmer.ready else None
    return _CLIENT_WARMERS[family]
