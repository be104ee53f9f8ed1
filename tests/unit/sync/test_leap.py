"""Leap-second arming and detection."""

from __future__ import annotations

import datetime as dt

import pytest

from tsyncd.sync.leap import kernel_leap, leap_applied, utc_day


def ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()) * 10**9


@pytest.mark.parametrize(
    ("leap", "when", "armed"),
    [
        (1, "2027-06-30T12:00:00", 1),
        (2, "2027-12-31T23:59:59", 2),
        (1, "2027-06-29T23:59:59", 0),  # announced a day early: not yet
        (1, "2027-06-15T00:00:00", 0),  # ntpd announces up to a month ahead
        (1, "2027-07-01T00:00:00", 0),
        (0, "2027-06-30T12:00:00", 0),
        (3, "2027-06-30T12:00:00", 0),  # unsynchronized is not a leap
    ],
)
def test_kernel_is_armed_only_on_the_leap_day(leap: int, when: str, armed: int) -> None:
    assert kernel_leap(leap, ns(when)) == armed


def test_applied_leap_is_seen_at_the_day_boundary() -> None:
    before = utc_day(ns("2027-06-30T23:59:59"))
    assert leap_applied(1, before, ns("2027-06-30T23:59:59")) == 0
    assert leap_applied(1, before, ns("2027-07-01T00:00:00")) == -1
    assert leap_applied(2, before, ns("2027-07-01T00:00:00")) == 1
    assert leap_applied(0, before, ns("2027-07-01T00:00:00")) == 0
