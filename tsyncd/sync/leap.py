"""Leap seconds: when to arm the kernel, and when one has just happened.

Servers may announce a leap second (LI 1 or 2) well before it: ntpd sets LI for up to a month.
The kernel, though, inserts or deletes a second at the end of whatever UTC day STA_INS/STA_DEL
is set, so we pass the announcement on only during the last day of June or December, the only
days IERS schedules leap seconds on in practice (chrony does the same).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

_NS_PER_S: Final = 1_000_000_000
_DAY_NS: Final = 86_400 * _NS_PER_S


def kernel_leap(leap: int, now_ns: int) -> int:
    """The leap to arm in the kernel now: ``leap`` (1 insert, 2 delete) on a leap day, else 0."""
    if leap not in (1, 2):
        return 0
    day = dt.datetime.fromtimestamp(now_ns // _NS_PER_S, dt.UTC).date()
    return leap if (day.month, day.day) in ((6, 30), (12, 31)) else 0


def utc_day(now_ns: int) -> int:
    """Days since the Unix epoch (UTC) of ``now_ns``."""
    return now_ns // _DAY_NS


def leap_applied(armed: int, day_before: int, now_ns: int) -> int:
    """The clock jump (s) the kernel made if a day boundary passed with a leap armed, else 0.

    An inserted second makes Unix time repeat a second (-1); a deleted one skips one (+1).
    """
    if armed == 0 or utc_day(now_ns) == day_before:
        return 0
    return -1 if armed == 1 else 1
