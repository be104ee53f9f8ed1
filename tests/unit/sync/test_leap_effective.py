"""SnapshotViews.effective_leap: the leap-seconds file decides while current, else the sources."""

from __future__ import annotations

from types import SimpleNamespace

from test_leapfile import TEXT, S, unix

from tsyncd.daemon_snapshots import SnapshotViews
from tsyncd.sync.leapfile import parse_leap_seconds

TABLE = parse_leap_seconds(TEXT)  # a leap inserted at the end of 2016-12-31, expiring mid-2026


def leap(source_leap: int, table: object, now_ns: int) -> int:
    views = SimpleNamespace(
        core=SimpleNamespace(decision=SimpleNamespace(leap=source_leap)),
        config=SimpleNamespace(leap_table=table),
    )
    return SnapshotViews.effective_leap(views, now_ns)  # type: ignore[arg-type]


def test_the_file_overrides_the_sources_while_current() -> None:
    eve = unix(2016, 12, 31, 12) * S
    assert leap(0, TABLE, eve) == 1  # the sources forgot it
    assert leap(2, TABLE, unix(2016, 11, 30, 12) * S) == 0  # a wrong announcement is not passed on
    assert leap(0, None, eve) == 0  # no file: the sources' word


def test_the_alarm_and_an_expired_file_leave_the_sources_word() -> None:
    assert leap(3, TABLE, unix(2016, 12, 31, 12) * S) == 3  # unsynchronized stays so
    assert leap(1, TABLE, unix(2026, 12, 31, 12) * S) == 1  # expired: it knows nothing of 2026


def test_without_a_file_the_sources_leap_is_announced_on_its_day_only() -> None:
    """As chronyd: an announcement a server makes weeks ahead is not passed on before the
    leap's day, and one from a reply taken before midnight is not passed on after it (the
    simulator served LI=1 for about 2 minutes after the leap, until the next reply)."""
    assert leap(1, None, unix(2016, 12, 15, 12) * S) == 0
    assert leap(1, None, unix(2016, 12, 31, 12) * S) == 1
    assert leap(2, None, unix(2016, 6, 30, 23) * S) == 2
    assert leap(1, None, unix(2017, 1, 1, 0) * S + 60 * S) == 0
    assert leap(3, None, unix(2017, 1, 1, 0) * S) == 3  # unsynchronized stays so
