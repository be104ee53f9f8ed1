"""The IERS/IETF ``leap-seconds.list`` file, sans-IO: which leap second, if any, ends today.

A server whose time comes from its own clock (``local-stratum``) or from sources that do not
announce leap seconds still has to warn its clients of one (the LI field) and arm the kernel;
chrony reads the same facts from the tz database (``leapsectz``) or this file
(``leapseclist``).  The format (the file tzdata installs as
``/usr/share/zoneinfo/leap-seconds.list``): ``#`` comments, ``#@ EXPIRY`` (NTP seconds) and data
lines ``NTP-SECONDS TAI-UTC [# comment]``, one per change of TAI-UTC, oldest first; each names
the first second at the new offset, so a leap second ends the UTC day before that second.

Once the file has expired it says nothing about leaps to come (a new one may have been announced
since): the caller falls back on its sources then, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["LeapTable", "parse_leap_seconds"]

_NTP_UNIX_S: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_NS_PER_S: Final = 1_000_000_000
_DAY_S: Final = 86_400


@dataclass(frozen=True, slots=True)
class LeapTable:
    """TAI-UTC from each change on (Unix seconds, offset), oldest first, and the file's expiry."""

    changes: tuple[tuple[int, int], ...]
    expires_s: int  # Unix seconds

    def expired(self, now_ns: int) -> bool:
        """Whether the file is out of date at ``now_ns``: it no longer covers the future."""
        return now_ns // _NS_PER_S >= self.expires_s

    def tai_offset(self, now_ns: int) -> int:
        """TAI-UTC at ``now_ns`` (0 before the first entry)."""
        now_s = now_ns // _NS_PER_S
        offset = 0
        for start_s, value in self.changes:
            if start_s > now_s:
                break
            offset = value
        return offset

    def leap_today(self, now_ns: int) -> int:
        """The leap that ends the current UTC day: 1 insert, 2 delete, 0 none (NTP's LI)."""
        tomorrow_s = (now_ns // _NS_PER_S // _DAY_S + 1) * _DAY_S
        for start_s, value in self.changes:
            if start_s == tomorrow_s:
                step = value - self.tai_offset((tomorrow_s - 1) * _NS_PER_S)
                return {1: 1, -1: 2}.get(step, 0)
        return 0


def parse_leap_seconds(text: str) -> LeapTable:
    """The table of a ``leap-seconds.list`` text; ValueError names the line that is wrong."""
    changes: list[tuple[int, int]] = []
    expires_s: int | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        try:
            if line.startswith("#@"):
                expires_s = int(line[2:].split()[0]) - _NTP_UNIX_S
                continue
            if not line or line.startswith("#"):
                continue
            fields = line.split("#", 1)[0].split()
            if len(fields) != 2:
                raise ValueError("expected NTP-SECONDS TAI-UTC")
            start_s, offset = int(fields[0]) - _NTP_UNIX_S, int(fields[1])
        except (ValueError, IndexError) as exc:
            raise ValueError(f"line {number}: {raw.strip()!r}: {exc}") from None
        if changes and start_s <= changes[-1][0]:
            raise ValueError(f"line {number}: {raw.strip()!r}: not after the line before")
        if start_s % _DAY_S:
            raise ValueError(f"line {number}: {raw.strip()!r}: not at a UTC midnight")
        changes.append((start_s, offset))
    if not changes:
        raise ValueError("no leap second lines")
    if expires_s is None:
        raise ValueError("no expiry line (#@)")
    return LeapTable(tuple(changes), expires_s)
