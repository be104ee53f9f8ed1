"""A sealed (NTS) reply's transmit timestamp, read as late as the seal allows.

A basic reply's Transmit is written right before ``sendto`` (``latetx.py``).  An NTS reply
cannot be patched after the fact: its header is associated data of the Authenticator's seal
(RFC 8915 §5.6), so the Transmit has to be in it before the seal.  It used to be read before
any of the NTS work (open the cookie, verify the request, seal new cookies, seal the reply):
about 100 µs of Python at a client's pace on a cold CPU, so every NTS client measured the
server about 50 µs behind (QA s18 hunt-ops F1: -43 to -60 µs where chronyd's NTS server was
within 2 µs of its plain answers).

``LateTransmit`` is called by the NTS responder (``nts/server.py``) with the reply's header
after everything but the last seal: it reads the clock there and adds a lag learnt as the
basic one is (``sync/sendlag.py``): now and then an NTS reply goes out asking for its kernel
TX stamp, and the gap between the read and the stamp is the seal, the send and the path to
the stamp.  The Transmit stays after the Receive (RFC 9769).  The clock read is in host ns
(what kernel stamps use); ``to_daemon`` maps it to the time we serve.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final

from tsyncd.net.udp import Control
from tsyncd.servers import txstamp
from tsyncd.servers.latetx import TRANSMIT_AT, transmit_ntp
from tsyncd.sync.sendlag import SendLag

_TIMESTAMP: Final = struct.Struct("!Q")
_RECEIVE_AT: Final = 32
_HEADER_LEN: Final = 48
_MASK64: Final = (1 << 64) - 1
_pack: Final = _TIMESTAMP.pack
_time_ns: Final = time.time_ns


class LateTransmit:
    """Writes a sealed basic reply's Transmit just before its seal; learns the lag after it."""

    __slots__ = ("lag", "read_ns", "to_daemon", "warm")

    def __init__(
        self, to_daemon: Callable[[int], int], warm: Callable[[int], None] | None = None
    ) -> None:
        self.to_daemon = to_daemon  # host ns -> daemon ns (the current clock map)
        self.lag = SendLag()
        self.read_ns = 0  # host ns of the latest read; the caller zeroes it to see a new one
        # Called with the host time right before the read (``warmsend.SendWarmer.warm``): after
        # a quiet spell the kernel's send path is cold, and the lag from the read to the
        # departure varies by tens of µs unless it is warmed first.  The caller reports the
        # send (``SendWarmer.sent``).
        self.warm = warm

    def __call__(self, header: bytes) -> bytes:
        """``header`` (our 48-byte reply, about to be sealed) with its Transmit read now.

        This is on every NTS reply's path (about 0.5 µs of its 13)."""
        if self.warm is not None:
            self.warm(_time_ns())
        read = self.read_ns = _time_ns()
        packed = _pack(transmit_ntp(self.to_daemon(read + self.lag.lag_ns)))
        # Big-endian: comparing the bytes compares the timestamps.
        if packed <= header[_RECEIVE_AT:TRANSMIT_AT]:
            (receive,) = _TIMESTAMP.unpack_from(header, _RECEIVE_AT)
            packed = _pack((receive + 1) & _MASK64)
        return header[:TRANSMIT_AT] + packed

    def wants_stamp(self, want_tx: bool) -> bool:
        """Whether the reply just sealed (with a Transmit read by this object) goes out asking
        for its kernel TX stamp: an interleaving client's (``want_tx``), or one now and then
        to learn the lag."""
        return want_tx or self.lag.due(self.read_ns)

    def send_stamped(
        self,
        sock: socket.socket,
        response: bytes,
        address: Any,
        on_stamp: Callable[[bytes, int], object],
        control: Control | None = None,
    ) -> None:
        """Send ``response`` asking for its TX stamp (with ``control``: ``txstamp``); learn the
        lag from it and hand every stamp read to ``on_stamp(payload, host ns)`` (the
        responder's interleaving pairs)."""
        if txstamp.send_stamped(sock, response, address, control):
            read, header = self.read_ns, response[:_HEADER_LEN]
            for payload, tx_ns in txstamp.read_stamps(sock):
                if payload == header:
                    self.lag.observe(read, tx_ns)
                on_stamp(payload, tx_ns)
