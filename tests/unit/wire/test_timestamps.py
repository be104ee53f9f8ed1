"""NTP timestamp and short-format conversions (RFC 5905 §6), including the 2036 rollover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tsyncd.wire.timestamps import (
    NTP_ERA_NS,
    NTP_UNIX_OFFSET_S,
    ns_from_short,
    ntp64_add_ns,
    ntp64_diff_ns,
    ntp64_fraction,
    ntp64_from_parts,
    ntp64_from_unix_ns,
    ntp64_seconds,
    short_from_ns,
    unix_ns_from_ntp64,
)

S = 1_000_000_000
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unix_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> int:
    """Unix ns of a UTC calendar date, computed independently of the code under test."""
    when = datetime(year, month, day, hour, minute, sec, tzinfo=UTC)
    return (when - UNIX_EPOCH) // timedelta(microseconds=1) * 1000


ROLLOVER_NS = unix_ns(2036, 2, 7, 6, 28, 16)  # NTP era 0 ends here
NTP_EPOCH_NS = unix_ns(1900, 1, 1)
NOW_NS = unix_ns(2026, 11, 23, 12, 0, 0)


def test_offset_is_the_distance_between_the_epochs() -> None:
    assert NTP_UNIX_OFFSET_S == 2_208_988_800 == 0x83AA7E80
    assert -NTP_EPOCH_NS == NTP_UNIX_OFFSET_S * S
    assert NTP_ERA_NS == 2**32 * S
    assert ROLLOVER_NS == (2**32 - NTP_UNIX_OFFSET_S) * S


def test_unix_epoch() -> None:
    assert ntp64_from_unix_ns(0) == 0x83AA7E80_00000000
    assert unix_ns_from_ntp64(0x83AA7E80_00000000, NOW_NS) == 0


def test_fraction_is_binary_and_rounded_to_nearest() -> None:
    assert ntp64_from_unix_ns(S // 2) == 0x83AA7E80_80000000
    assert ntp64_from_unix_ns(S // 4 * 3) == 0x83AA7E80_C0000000
    # 1 ns = 4.294967296 units of 2**-32 s -> 4
    assert ntp64_from_unix_ns(1) == 0x83AA7E80_00000004
    # 0x83AA7E80_00000003 is 0.698 ns -> 1 ns; ..._00000002 is 0.466 ns -> 0 ns
    assert unix_ns_from_ntp64(0x83AA7E80_00000003, 0) == 1
    assert unix_ns_from_ntp64(0x83AA7E80_00000002, 0) == 0


def test_before_the_unix_epoch() -> None:
    assert ntp64_from_unix_ns(-S) == 0x83AA7E7F_00000000
    assert unix_ns_from_ntp64(0x83AA7E7F_00000000, 0) == -S


def test_raw_zero_with_pivot_near_1900_is_the_ntp_epoch() -> None:
    assert unix_ns_from_ntp64(0, NTP_EPOCH_NS) == NTP_EPOCH_NS
    assert unix_ns_from_ntp64(0, unix_ns(1950, 1, 1)) == NTP_EPOCH_NS
    assert ntp64_from_unix_ns(NTP_EPOCH_NS) == 0


def test_raw_zero_with_pivot_in_1970_is_2036() -> None:
    """1900 is more than 2**31 s before 1970, so the defined answer is the start of era 1."""
    assert unix_ns_from_ntp64(0, 0) == ROLLOVER_NS
    assert unix_ns_from_ntp64(0, NOW_NS) == ROLLOVER_NS


def test_pivot_exactly_half_an_era_away_picks_the_later_era() -> None:
    """Result r satisfies -2**31 s < r - pivot <= 2**31 s: a tie goes forward in time."""
    pivot = NTP_EPOCH_NS + 2**31 * S  # 1968-01-20T03:14:08Z
    assert pivot == unix_ns(1968, 1, 20, 3, 14, 8)
    assert unix_ns_from_ntp64(0, pivot) == ROLLOVER_NS
    assert unix_ns_from_ntp64(0, pivot - 1) == NTP_EPOCH_NS
    # the era is chosen after rounding to ns: raw 1 (0.23 ns) ties like raw 0...
    assert unix_ns_from_ntp64(1, pivot) == ROLLOVER_NS
    # ...while raw 5 (1.16 ns -> 1 ns) is strictly less than half an era away in era 0
    assert unix_ns_from_ntp64(5, pivot) == NTP_EPOCH_NS + 1


@pytest.mark.parametrize(
    ("when_ns", "raw"),
    [
        (ROLLOVER_NS - S, 0xFFFFFFFF_00000000),
        (ROLLOVER_NS - S // 2, 0xFFFFFFFF_80000000),
        (ROLLOVER_NS, 0x00000000_00000000),
        (ROLLOVER_NS + S // 2, 0x00000000_80000000),
        (ROLLOVER_NS + S, 0x00000001_00000000),
    ],
)
def test_2036_rollover_both_sides(when_ns: int, raw: int) -> None:
    assert ntp64_from_unix_ns(when_ns) == raw
    for pivot in (NOW_NS, ROLLOVER_NS, unix_ns(2060, 1, 1), unix_ns(2090, 1, 1)):
        assert unix_ns_from_ntp64(raw, pivot) == when_ns


def test_pivot_selection_far_in_the_future() -> None:
    """A pivot past 2036 still reads values up to 68 years back in era 0, and later ones in 1."""
    pivot = unix_ns(2090, 1, 1)
    raw_2030 = ntp64_from_unix_ns(unix_ns(2030, 1, 1))
    raw_2150 = ntp64_from_unix_ns(unix_ns(2150, 1, 1))
    assert unix_ns_from_ntp64(raw_2030, pivot) == unix_ns(2030, 1, 1)
    assert unix_ns_from_ntp64(raw_2150, pivot) == unix_ns(2150, 1, 1)
    # the same raw value as 2030 read near 2170 is 2030 + 136 years
    assert unix_ns_from_ntp64(raw_2030, unix_ns(2170, 1, 1)) == unix_ns(2030, 1, 1) + NTP_ERA_NS


def test_diff_simple_and_signed() -> None:
    a = ntp64_from_unix_ns(NOW_NS)
    b = ntp64_from_unix_ns(NOW_NS - 1_500_000)
    assert ntp64_diff_ns(a, b) == 1_500_000
    assert ntp64_diff_ns(b, a) == -1_500_000
    assert ntp64_diff_ns(a, a) == 0


def test_diff_across_the_2036_wrap() -> None:
    before = ntp64_from_unix_ns(ROLLOVER_NS - 3 * S)
    after = ntp64_from_unix_ns(ROLLOVER_NS + 2 * S)
    assert after < before  # the raw values wrapped
    assert ntp64_diff_ns(after, before) == 5 * S
    assert ntp64_diff_ns(before, after) == -5 * S


def test_diff_rounds_to_nearest_ns() -> None:
    assert ntp64_diff_ns(3, 0) == 1  # 0.698 ns
    assert ntp64_diff_ns(2, 0) == 0  # 0.466 ns
    assert ntp64_diff_ns(0, 3) == -1
    assert ntp64_diff_ns(0, 2) == 0


def test_diff_limits_are_half_an_era() -> None:
    assert ntp64_diff_ns(2**63 - 2**32, 0) == (2**31 - 1) * S
    assert ntp64_diff_ns(2**63, 0) == -(2**31) * S  # exactly half: reads as negative


def test_add_ns_wraps() -> None:
    assert ntp64_add_ns(0xFFFFFFFF_00000000, 2 * S) == 0x00000001_00000000
    assert ntp64_add_ns(0x00000001_00000000, -2 * S) == 0xFFFFFFFF_00000000
    assert ntp64_add_ns(0x83AA7E80_00000000, S // 2) == 0x83AA7E80_80000000
    base = ntp64_from_unix_ns(NOW_NS)
    assert ntp64_diff_ns(ntp64_add_ns(base, 123_456_789), base) == 123_456_789


def test_parts() -> None:
    ts = ntp64_from_parts(0xEEAEC889, 0xAB643800)
    assert ts == 0xEEAEC889_AB643800
    assert ntp64_seconds(ts) == 0xEEAEC889
    assert ntp64_fraction(ts) == 0xAB643800
    assert ntp64_from_parts(2**32 + 1, 2**32 + 2) == 0x00000001_00000002


@pytest.mark.parametrize(
    ("ns", "short"),
    [
        (-1, 0),
        (-(10**20), 0),
        (0, 0),
        (1, 1),  # rounds up: a bound must not shrink
        (15_258, 1),  # 0.99994 units
        (15_259, 2),  # 1.00001 units
        (S, 0x0001_0000),
        (S // 2, 0x0000_8000),
        (65_535 * S, 0xFFFF_0000),
        (65_536 * S - 15_258, 0xFFFF_FFFF),
        (65_536 * S, 0xFFFF_FFFF),  # saturates
        (10**20, 0xFFFF_FFFF),
    ],
)
def test_short_from_ns(ns: int, short: int) -> None:
    assert short_from_ns(ns) == short


def test_ns_from_short() -> None:
    assert ns_from_short(0) == 0
    assert ns_from_short(1) == 15_258  # 15258.789 ns, truncated
    assert ns_from_short(0x0001_0000) == S
    assert ns_from_short(0x0000_8000) == S // 2
    assert ns_from_short(0xFFFF_FFFF) == 65_536 * S - 15_259


@pytest.mark.parametrize("v", [0, 1, 2, 3, 0x7F, 0x8000, 0x1_0000, 0x1234_5678, 0xFFFF_FFFF])
def test_short_round_trip(v: int) -> None:
    assert short_from_ns(ns_from_short(v)) == v
