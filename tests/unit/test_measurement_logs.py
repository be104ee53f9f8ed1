"""tsyncd.measurement_logs: line formats, the banner every 32 lines, reopening after a move."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from tsyncd.config import ConfigErrors, parse_config
from tsyncd.measurement_logs import BANNER_EVERY, MeasurementLogs, measurement_line, tracking_line
from tsyncd.sync.filter import FilterOutput
from tsyncd.sync.sample import Sample

S = 1_000_000_000
NOW = calendar.timegm((2026, 11, 27, 8, 30, 0, 0, 0, 0)) * S + 123_456_789
SAMPLE = Sample(
    offset_ns=-1_500,
    delay_ns=42_000,
    dispersion_ns=3_000,
    root_delay_ns=0,
    root_dispersion_ns=10_000,
    stratum=5,
    leap=1,
    reference_id=0x7F7F0101,
    local_rx_ns=NOW,
    interleaved=True,
)


def test_a_measurement_line() -> None:
    assert measurement_line(NOW, "ntp1:123", SAMPLE).split() == [
        "2026-11-27", "08:30:00.123456", "ntp1:123", "I", "5", "-1.5000e-06", "+4.2000e-05",
        "+3.0000e-06", "+0.0000e+00", "+1.0000e-05", "127.127.1.1", "interleaved",
    ]  # fmt: skip


def test_a_tracking_line() -> None:
    line = tracking_line(
        NOW,
        reference="192.0.2.1",
        stratum=3,
        frequency_ppm=-12.3456,
        skew_ppm=0.0421,
        offset_ns=250,
        leap=0,
        combined=2,
        jitter_ns=900,
        root_delay_ns=1_000_000,
        root_dispersion_ns=2_000_000,
    )
    assert line.split()[2:] == [
        "192.0.2.1", "3", "-12.346", "0.042", "+2.5000e-07", "N", "2", "+9.0000e-07",
        "+1.0000e-03", "+2.0000e-03",
    ]  # fmt: skip


def test_banner_every_32_lines_and_reopen_after_a_move(tmp_path: Path) -> None:
    logs = MeasurementLogs(tmp_path / "logs", measurements=True, statistics=True, tracking=False)
    output = FilterOutput(sample=SAMPLE, jitter_ns=700, dispersion_ns=5_000, new=True)
    for _ in range(BANNER_EVERY + 1):
        logs.sample(NOW, "ntp1:123", SAMPLE, 8, output)
    measurements = (tmp_path / "logs" / "measurements.log").read_text().splitlines()
    assert len(measurements) == 2 * 3 + BANNER_EVERY + 1  # two banners of three lines
    assert measurements[1].split()[:4] == ["Date", "(UTC)", "Time", "Source"]
    assert measurements[3 + BANNER_EVERY].startswith("====")
    statistics = (tmp_path / "logs" / "statistics.log").read_text().splitlines()
    assert statistics[3].split()[2:] == ["ntp1:123", "8", "-1.5000e-06", "+7.0000e-07",
                                         "+5.0000e-06", "+4.2000e-05"]  # fmt: skip
    assert not (tmp_path / "logs" / "tracking.log").exists()
    (tmp_path / "logs" / "measurements.log").rename(tmp_path / "logs" / "measurements.log.1")
    assert logs.reopen() == (
        [str(tmp_path / "logs" / f"{k}.log") for k in ("measurements", "statistics")],
        [],
    )
    logs.sample(NOW, "ntp1:123", SAMPLE, 8, output)
    fresh = (tmp_path / "logs" / "measurements.log").read_text().splitlines()
    assert len(fresh) == 4 and fresh[0].startswith("====")  # a new file, with its banner
    logs.close()


def test_a_log_needs_the_directory() -> None:
    with pytest.raises(ConfigErrors) as e:
        parse_config({"log": {"tracking": True}}, Path("t.toml"))
    assert [str(x) for x in e.value.errors] == [
        "t.toml: log.tracking = true: expected log.directory set (where tracking.log goes)"
    ]


def test_a_reopen_that_fails_keeps_the_old_file_and_a_log_never_breaks_sync(
    tmp_path: Path,
) -> None:
    """QA s17 hunt-life F1: a failed reopen used to leave the file closed, and every later
    sample then raised before reaching the selection: clock updates stopped, unreported."""
    logs = MeasurementLogs(tmp_path / "logs", measurements=True, statistics=False, tracking=False)
    output = FilterOutput(sample=SAMPLE, jitter_ns=700, dispersion_ns=5_000, new=True)
    logs.sample(NOW, "ntp1:123", SAMPLE, 8, output)
    live = tmp_path / "logs" / "measurements.log"
    live.rename(tmp_path / "logs" / "measurements.log.1")
    live.mkdir()  # what is there now cannot be opened as a file (as root too)
    reopened, errors = logs.reopen()
    assert reopened == [] and len(errors) == 1 and str(live) in errors[0]
    logs.sample(NOW, "ntp1:123", SAMPLE, 8, output)  # still written, to the old file
    old = (tmp_path / "logs" / "measurements.log.1").read_text().splitlines()
    assert len(old) == 3 + 2
    logs.close()
    logs.sample(NOW, "ntp1:123", SAMPLE, 8, output)  # a closed file loses lines, raises nothing
