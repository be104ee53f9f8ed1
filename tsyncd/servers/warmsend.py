"""Warm the kernel's send path before a lone basic reply's Transmit is read.

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
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any, Final

__all__ = ["SendWarmer"]

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
