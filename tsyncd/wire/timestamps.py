"""NTP time formats (RFC 5905 §6) and their conversion to integer nanoseconds.

Theory of operation
-------------------
On the wire NTPv4 carries two fixed-point formats, both unsigned:

* the 64-bit *timestamp* (32-bit seconds since 1900-01-01 + 32-bit fraction), kept here as the
  raw ``int`` read from the packet (``ntp64``).  It carries no era: raw seconds wrap to 0 at
  2036-02-07T06:28:16Z (the start of era 1), so turning one into an absolute time needs a
  *pivot*, a time known to be within ~68 years of the answer;
* the 32-bit *short* format (16.16 seconds), used for root delay and root dispersion.

Inside the daemon time is integer nanoseconds (Unix epoch for absolute times).  Differences of
two raw timestamps are taken modulo 2**64 and read as signed, so they stay correct across an era
boundary as long as the two instants are less than ~68 years apart (RFC 5905 §6 — the reason the
spec tells implementations to subtract timestamps before converting them).

Conversions round to the nearest representable value, except ``short_from_ns``, which rounds up:
root delay and dispersion bound an error, and a bound must never be understated.

Raw timestamp 0 means "not set" in the protocol (RFC 5905 §7.3, test 3); these functions treat it
as an ordinary value, so callers must check for 0 *before* converting.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "NTP_ERA_NS",
    "NTP_UNIX_OFFSET_S",
    "ns_from_short",
    "ntp64_add_ns",
    "ntp64_diff_ns",
    "ntp64_fraction",
    "ntp64_from_parts",
    "ntp64_from_unix_ns",
    "ntp64_seconds",
    "short_from_ns",
    "unix_ns_from_ntp64",
]

NTP_UNIX_OFFSET_S: Final = 2_208_988_800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""

NTP_ERA_NS: Final = (1 << 32) * 1_000_000_000
"""Length of one NTP era (2**32 s, ~136 years) in nanoseconds."""

_NS_PER_S: Final = 1_000_000_000
_HALF_S_NS: Final = 500_000_000
_OFFSET_NS: Final = NTP_UNIX_OFFSET_S * _NS_PER_S
_HALF_ERA_NS: Final = NTP_ERA_NS // 2
_MASK64: Final = (1 << 64) - 1
_SIGN64: Final = 1 << 63
_SHORT_MAX: Final = 0xFFFF_FFFF


def _ns_to_fixed32(ns: int) -> int:
    """``ns`` in units of 2**-32 s, rounded to nearest (half up); exact integer arithmetic."""
    return ((ns << 32) + _HALF_S_NS) // _NS_PER_S


def _fixed32_to_ns(units: int) -> int:
    """``units`` of 2**-32 s in nanoseconds, rounded to nearest (half up)."""
    return (units * _NS_PER_S + (1 << 31)) >> 32


def ntp64_from_unix_ns(unix_ns: int) -> int:
    """Raw 64-bit NTP timestamp for Unix time ``unix_ns``; the era is dropped (mod 2**64)."""
    return _ns_to_fixed32(unix_ns + _OFFSET_NS) & _MASK64


def unix_ns_from_ntp64(ts: int, pivot_unix_ns: int) -> int:
    """Unix ns of raw timestamp ``ts``, in the era putting it within ±2**31 s of the pivot.

    The wire carries no era, so we pick the one whose reading is nearest ``pivot_unix_ns``
    (typically the local clock, or the build date): the result ``r`` satisfies
    ``-2**31 s < r - pivot <= 2**31 s``.  That makes the conversion right across the
    2036-02-07T06:28:16Z rollover.  Example: raw 0 with a pivot in 1970 is 2036-02-07, not
    1900-01-01 (which is more than 68 years before 1970).
    """
    era0_ns = _fixed32_to_ns(ts & _MASK64) - _OFFSET_NS
    era = (pivot_unix_ns - era0_ns + _HALF_ERA_NS) // NTP_ERA_NS
    return era0_ns + era * NTP_ERA_NS


def ntp64_diff_ns(a: int, b: int) -> int:
    """``a - b`` in nanoseconds, both raw timestamps: wraps mod 2**64 and reads as signed.

    Correct whenever the two instants are less than ~68 years apart, whatever their eras.
    """
    d = (a - b) & _MASK64
    if d & _SIGN64:
        d -= 1 << 64
    return _fixed32_to_ns(d)


def ntp64_add_ns(ts: int, delta_ns: int) -> int:
    """Raw timestamp ``ts`` moved by ``delta_ns`` (may be negative), modulo 2**64."""
    return (ts + _ns_to_fixed32(delta_ns)) & _MASK64


def ntp64_from_parts(seconds: int, fraction: int) -> int:
    """Raw timestamp from its 32-bit seconds and 32-bit fraction words (each taken mod 2**32)."""
    return ((seconds & 0xFFFF_FFFF) << 32) | (fraction & 0xFFFF_FFFF)


def ntp64_seconds(ts: int) -> int:
    """The 32-bit seconds word of a raw timestamp (seconds since the start of its era)."""
    return (ts >> 32) & 0xFFFF_FFFF


def ntp64_fraction(ts: int) -> int:
    """The 32-bit fraction word of a raw timestamp (units of 2**-32 s)."""
    return ts & 0xFFFF_FFFF


def short_from_ns(ns: int) -> int:
    """NTP short (unsigned 16.16 s) for ``ns``, rounded *up*, saturating to 0..0xFFFFFFFF.

    Rounding up (as chrony does) keeps a root delay/dispersion from understating the error it
    bounds; negatives become 0 and anything from 65536 s on becomes 0xFFFFFFFF.
    """
    if ns <= 0:
        return 0
    units = -((-ns << 16) // _NS_PER_S)  # ceil(ns * 2**16 / 1e9)
    return min(units, _SHORT_MAX)


def ns_from_short(v: int) -> int:
    """Nanoseconds for NTP short ``v`` (16.16 s), truncated.

    Truncating (rather than rounding) makes ``short_from_ns(ns_from_short(v)) == v`` for every
    ``v``, so a relayed value survives the trip; the loss is under 1 ns.
    """
    return ((v & _SHORT_MAX) * _NS_PER_S) >> 16
