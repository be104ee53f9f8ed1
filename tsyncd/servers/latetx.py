"""A basic-mode response's transmit timestamp, written as late as the server can.

RFC 5905 §8 / §9.2: the server fills its Transmit field "as late as possible" before the
packet leaves, because a client computes the offset from ``T3 - T4``: a Transmit stamped early
makes the server look behind by the gap, and on a Python server that gap (parse, policy,
pack, then the system call) was tens of microseconds on a loaded machine, so chronyd measuring
tsyncd saw a median offset of about -24 µs on loopback where the truth is 0.

The responder (``servers/responder.py``) decides and packs the whole reply; the IO edges
(``servers/worker.py``, ``servers/ntp.py``) read the clock again after that, right before
``sendto``, and overwrite only the last eight bytes here.  Only plain basic replies
(``ANSWERED``) are re-stamped: an interleaved reply's Transmit is the kernel's stamp of an
earlier reply (RFC 9769), a KoD carries no time worth refining, and an NTS reply is sealed.
The Transmit stays strictly after the Receive (RFC 9769: a basic reply whose Transmit equals
its Receive would read as interleaved).
"""

from __future__ import annotations

import struct
from typing import Final

from tsyncd.servers.responder import ANSWERED
from tsyncd.wire.timestamps import NTP_UNIX_OFFSET_S

BASIC: Final = ANSWERED  # the outcome whose reply ``restamp`` applies to

_TRANSMIT_AT: Final = 40  # offset of the transmit timestamp in the 48-byte header
_TIMESTAMP: Final = struct.Struct("!Q")
_MASK64: Final = (1 << 64) - 1
_NS_PER_S: Final = 1_000_000_000
_HALF_S_NS: Final = _NS_PER_S // 2
_NTP_UNIX_NS: Final = NTP_UNIX_OFFSET_S * _NS_PER_S


def restamp(response: bytes, rx_ns: int, tx_ns: int) -> bytes:
    """``response`` (a 48-byte basic reply to a request received at ``rx_ns``) sent at ``tx_ns``.

    Both times are daemon Unix ns; ``tx_ns`` is kept at least 1 ns after ``rx_ns``, so the two
    raw NTP timestamps differ (1 ns is more than four units of 2**-32 s).
    """
    if tx_ns <= rx_ns:
        tx_ns = rx_ns + 1
    # ntp64_from_unix_ns, inlined: this runs per packet, between the clock read and sendto.
    tx_ntp = (((tx_ns + _NTP_UNIX_NS) << 32) + _HALF_S_NS) // _NS_PER_S & _MASK64
    return response[:_TRANSMIT_AT] + _TIMESTAMP.pack(tx_ntp)
