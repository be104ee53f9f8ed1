"""A basic-mode response's transmit timestamp, written as late as the server can.

RFC 5905 §8 / §9.2: the server fills its Transmit field "as late as possible" before the
packet leaves, because a client computes the offset from ``T3 - T4``: a Transmit stamped early
makes the server look behind by the gap, and on a Python server that gap (parse, policy,
pack, then the system call) was tens of microseconds on a loaded machine, so chronyd measuring
tsyncd saw a median offset of about -24 µs on loopback where the truth is 0.

The responder (``servers/responder.py``) decides and packs the whole reply; the IO edges
(``servers/worker.py``, ``servers/ntp.py``) read the clock again after that, right before
``sendto``, and overwrite only the last eight bytes here.  Plain basic replies (``ANSWERED``)
are re-stamped, and the responder's KoDs (``LATE_KODS``): a KoD carries no time a client
may use, but its Transmit is still when it was sent, the same from a worker as from the
event loop.  An interleaved reply's Transmit is the kernel's stamp of an earlier reply
(RFC 9769), and an NTS reply (or NAK) is sealed.
The Transmit stays strictly after the Receive (RFC 9769: a basic reply whose Transmit equals
its Receive would read as interleaved).

Even read right before ``sendto``, the clock runs ahead of the packet: the rest of the Python
call, the system call and the UDP/IP path until the kernel's software TX stamp took about
10 µs here at a client's pace (a cold CPU after idle), so chronyd saw a median of about -8 µs.
``SendLag`` learns that lag from the kernel: now and then (``_CALIBRATE_EVERY_NS``) a basic
reply is sent asking for its TX stamp, and the median of the recent (stamp - clock read) gaps
is added to the next replies' reading.  This is the estimate RFC 5905 asks for, the time the
packet leaves, measured rather than guessed; chrony pre-compensates its transmit timestamps
the same way for the (measured) time authentication takes.  The lag is in host ns, so no clock
mapping is involved; a gap outside 0..``_MAX_GAP_NS`` (preempted, or a stale stamp) is ignored.

The lag is not one number: on this 2-core VM a reply's gap ranged 17..70 µs at a client's pace,
and it tracks how slowly the same request was handled before the clock read (the kernel RX
stamp to the read: a CPU just woken from idle is slow for both).  Measured with chronyd
polling a worker at 16/s: the median gap rose from 23.5 to 37.8 µs across the quintiles of
that handling time (114..609 µs).  Predicting each gap before its stamp came, in two 25 s
runs, ``lag_for`` erred by 3.9 / 3.6 µs (median |error|; p95 14.9 / 12.1 µs) where the plain
median erred by 5.3 / 5.0 µs (p95 16.6 / 16.0 µs).  So ``lag_for(busy_ns)`` adds a slope,
learnt from the same window: the gap's median of the slower half of the window minus that of
the quicker half, over the difference in their handling times (robust to outliers, and cheap
enough to redo on each stamp), kept within 0..``_MAX_SLOPE`` and applied only up to the
longest wait in the window: a long wait under load is queueing on a warm CPU, so the worker
uses it for a lone request only and batches get the median.
"""

from __future__ import annotations

import struct
from typing import Final

from tsyncd.servers.responder import ANSWERED, KOD_DENY, KOD_RATE, KOD_RSTR
from tsyncd.sync.sendlag import SendLag
from tsyncd.wire.timestamps import NTP_UNIX_OFFSET_S

__all__ = [
    "BASIC",
    "LATE_KODS",
    "TRANSMIT_AT",
    "SendLag",
    "pack_transmit_into",
    "restamp",
    "transmit_ntp",
    "with_transmit",
]

BASIC: Final = ANSWERED  # the outcome whose reply ``restamp`` applies to
LATE_KODS: Final = frozenset({KOD_RATE, KOD_DENY, KOD_RSTR})  # KoDs re-stamped as BASIC is

TRANSMIT_AT: Final = 40  # offset of the transmit timestamp in the 48-byte header
_TIMESTAMP: Final = struct.Struct("!Q")
pack_transmit_into: Final = _TIMESTAMP.pack_into
"""Write a raw NTP Transmit into a buffer (``buffer, offset of the reply + TRANSMIT_AT, ts``)."""
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
    return with_transmit(response, transmit_ntp(tx_ns))


def with_transmit(response: bytes, transmit: int) -> bytes:
    """``response`` with its Transmit Timestamp replaced by the raw NTP ``transmit``."""
    at = TRANSMIT_AT
    return response[:at] + _TIMESTAMP.pack(transmit) + response[at + 8 :]


def transmit_ntp(tx_ns: int) -> int:
    """The raw NTP timestamp of daemon Unix ns ``tx_ns`` (``ntp64_from_unix_ns``, inlined: it
    runs between the clock read and the send; a worker converts once per batch and has the
    batch's basic replies patched with it as they are copied out, ``mmsg.MessageBatch.send``)."""
    return (((tx_ns + _NTP_UNIX_NS) << 32) + _HALF_S_NS) // _NS_PER_S & _MASK64
