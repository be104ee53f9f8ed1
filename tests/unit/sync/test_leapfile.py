"""tsyncd.sync.leapfile: the leap-seconds.list format, and which leap ends today."""

from __future__ import annotations

import calendar

import pytest

from tsyncd.sync.leapfile import parse_leap_seconds

NTP = 2_208_988_800
S = 1_000_000_000


def unix(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    return calendar.timegm((y, m, d, hh, mm, ss, 0, 0, 0))


# As tzdata ships it (trimmed): #$ last update, #@ expiry, data, #h hash.
TEXT = f"""\
#	Updated through IERS Bulletin C 70
#$	3960835200
#@	3991593600
2272060800	10	# 1 Jan 1972
{unix(2015, 7, 1) + NTP}	36	# 1 Jul 2015
{unix(2017, 1, 1) + NTP}	37	# 1 Jan 2017
#h	49db2447 571e5e1b 2f002a53 9c8da8e4 39b8e49e
"""


def test_the_shipped_layout_parses() -> None:
    table = parse_leap_seconds(TEXT)
    assert table.expires_s == 3991593600 - NTP  # 28 June 2026
    assert table.tai_offset(unix(2016, 6, 1) * S) == 36
    assert table.tai_offset(unix(2017, 1, 1) * S) == 37
    assert table.tai_offset(unix(2016, 12, 31, 23, 59, 59) * S) == 36


def test_the_leap_is_announced_on_its_day_only() -> None:
    table = parse_leap_seconds(TEXT)
    assert table.leap_today(unix(2016, 12, 31, 0, 0, 1) * S) == 1  # inserted tonight
    assert table.leap_today(unix(2016, 12, 30, 23, 59, 59) * S) == 0  # not yet
    assert table.leap_today(unix(2017, 1, 1) * S) == 0  # done
    negative = TEXT.replace("\t37\t", "\t35\t")  # a deleted second, for once
    assert parse_leap_seconds(negative).leap_today(unix(2016, 12, 31, 12) * S) == 2


def test_expiry() -> None:
    table = parse_leap_seconds(TEXT)
    assert not table.expired(unix(2026, 6, 27) * S)
    assert table.expired(unix(2026, 6, 28) * S)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#@ 3991593600\n", "no leap second lines"),
        ("2272060800 10\n", "no expiry line (#@)"),
        ("#@ 3991593600\n2272060800\n", "line 2: '2272060800': expected NTP-SECONDS TAI-UTC"),
        ("#@ 3991593600\n2272060800 ten\n", "line 2: '2272060800 ten': invalid literal"),
        ("#@ 3991593600\n2272060801 10\n", "line 2: '2272060801 10': not at a UTC midnight"),
        (
            "#@ 3991593600\n2287785600 11\n2272060800 10\n",
            "line 3: '2272060800 10': not after the line before",
        ),
    ],
)
def test_bad_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_leap_seconds(text)


def test_the_system_file_if_tzdata_is_there() -> None:
    """The real file parses (tzdata installs it; the test command installs tzdata)."""
    with open("/usr/share/zoneinfo/leap-seconds.list", encoding="ascii") as f:
        table = parse_leap_seconds(f.read())
    assert table.tai_offset(unix(2020, 1, 1) * S) == 37
