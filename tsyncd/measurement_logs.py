"""Measurement logs in files, as chrony's ``log measurements statistics tracking``.

Operators read these after the fact: every sample each source gave (``measurements.log``), what
each source's clock filter made of them (``statistics.log``), and every clock update the
discipline made (``tracking.log``), one line each, in the directory ``[log] directory`` names.
As chrony does (its ``logbanner``), a banner naming the columns starts each file and comes
again every ``BANNER_EVERY`` lines, so a ``tail`` or a rotated file is readable on its own.
``tsyncctl cyclelogs`` reopens the files, after logrotate has renamed them.

A log is a record, never a dependency: a file that cannot be written (disk full, a reopen that
failed) loses its lines with one warning, and sync goes on; a reopen that fails keeps writing to
the file already open and says which one failed, so the operator can fix its permissions and
cycle again (logrotate's ``create`` may make a file the daemon's user cannot open).

Times are UTC with microseconds; offsets, delays and dispersions are seconds, offsets with the
sign of ``tsyncctl`` (source time minus our clock).  The lines are formatted by the pure
functions below; ``MeasurementLogs`` is the IO around them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Final, TextIO

from tsyncd.sync.filter import FilterOutput
from tsyncd.sync.sample import Sample
from tsyncd.wire.ntp import refid_to_str

_log = logging.getLogger(__name__)

__all__ = [
    "BANNER_EVERY",
    "MeasurementLogs",
    "measurement_line",
    "statistics_line",
    "tracking_line",
]

BANNER_EVERY: Final = 32  # chrony's default logbanner
_LEAP: Final = "NID?"  # LI 0..3: normal, insert, delete, alarm (as chrony's measurements.log)
_COLUMNS: Final = {
    "measurements": "Date (UTC) Time           Source                         L St  Offset      "
    "Peer delay  Peer disp.  Root delay  Root disp.  Refid            Mode",
    "statistics": "Date (UTC) Time           Source                         Samples Offset      "
    "Jitter      Dispersion  Delay",
    "tracking": "Date (UTC) Time           Reference ID     St Freq ppm   Skew ppm   Offset      "
    "L Co Offset sd   Root delay  Root disp.",
}


def _when(now_ns: int) -> str:
    stamp = dt.datetime.fromtimestamp(now_ns // 1000 / 1e6, dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.%f")


def _s(ns: int) -> str:
    return f"{ns * 1e-9:+.4e}"


def measurement_line(now_ns: int, name: str, sample: Sample) -> str:
    """One sample of source ``name`` as it went into its clock filter."""
    refid = refid_to_str(sample.reference_id, sample.stratum)
    mode = "interleaved" if sample.interleaved else "basic"
    return (
        f"{_when(now_ns)} {name:30} {_LEAP[sample.leap]} {sample.stratum:2} "
        f"{_s(sample.offset_ns)} {_s(sample.delay_ns)} {_s(sample.dispersion_ns)} "
        f"{_s(sample.root_delay_ns)} {_s(sample.root_dispersion_ns)} {refid:16} {mode}"
    )


def statistics_line(now_ns: int, name: str, samples: int, output: FilterOutput) -> str:
    """What source ``name``'s clock filter chose from its ``samples`` samples."""
    chosen = output.sample
    return (
        f"{_when(now_ns)} {name:30} {samples:7} {_s(chosen.offset_ns)} "
        f"{_s(output.jitter_ns)} {_s(output.dispersion_ns)} {_s(chosen.delay_ns)}"
    )


def tracking_line(
    now_ns: int,
    *,
    reference: str,
    stratum: int,
    frequency_ppm: float,
    skew_ppm: float,
    offset_ns: int,
    leap: int,
    combined: int,
    jitter_ns: int,
    root_delay_ns: int,
    root_dispersion_ns: int,
) -> str:
    """One clock update: the reference, the discipline's frequency and the system offset."""
    return (
        f"{_when(now_ns)} {reference:16} {stratum:2} {frequency_ppm:+10.3f} {skew_ppm:10.3f} "
        f"{_s(offset_ns)} {_LEAP[leap]} {combined:2} {_s(jitter_ns)} {_s(root_delay_ns)} "
        f"{_s(root_dispersion_ns)}"
    )


class _LogFile:
    """One appended log file with its banner."""

    def __init__(self, path: Path, columns: str) -> None:
        self.path = path
        self._banner = "=" * len(columns) + "\n" + columns + "\n" + "=" * len(columns) + "\n"
        self._lines = 0
        self._file: TextIO = self._open()
        self.failing = False  # the last write failed (warned once until one succeeds)

    def _open(self) -> TextIO:
        # Line-buffered: a line is in the file when it is written (tail -f, a crash).
        return open(self.path, "a", buffering=1, encoding="utf-8")

    def write(self, line: str) -> None:
        try:
            if self._lines % BANNER_EVERY == 0:
                self._file.write(self._banner)
            self._file.write(line + "\n")
        except (OSError, ValueError) as exc:  # ValueError: the file is closed
            if not self.failing:
                _log.warning(
                    "cannot write %s (%s): its lines are lost until it can", self.path, exc
                )
            self.failing = True
            return
        self.failing = False
        self._lines += 1

    def reopen(self) -> None:
        """Open the file anew; if that fails, the old one stays open and the error is raised."""
        new = self._open()
        old, self._file = self._file, new
        old.close()
        self._lines = 0

    def close(self) -> None:
        self._file.close()


class MeasurementLogs:
    """The log files ``[log]`` asks for, in ``directory`` (made if missing)."""

    def __init__(self, directory: Path, *, measurements: bool, statistics: bool, tracking: bool):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        wanted = {"measurements": measurements, "statistics": statistics, "tracking": tracking}
        self._files = {
            kind: _LogFile(directory / f"{kind}.log", _COLUMNS[kind])
            for kind, on in wanted.items()
            if on
        }

    def sample(
        self, now_ns: int, name: str, sample: Sample, samples: int, output: FilterOutput | None
    ) -> None:
        """A sample of ``name`` went into its filter, which now gives ``output``."""
        if (log := self._files.get("measurements")) is not None:
            log.write(measurement_line(now_ns, name, sample))
        if output is not None and (log := self._files.get("statistics")) is not None:
            log.write(statistics_line(now_ns, name, samples, output))

    def update(self, line: str) -> None:
        """A clock update, formatted by ``tracking_line``."""
        if (log := self._files.get("tracking")) is not None:
            log.write(line)

    @property
    def tracking(self) -> bool:
        """Whether clock updates are logged (the caller formats them only then)."""
        return "tracking" in self._files

    def reopen(self) -> tuple[list[str], list[str]]:
        """Reopen every file (after logrotate moved them): (the paths reopened, an error for
        each that could not be, which keeps writing where it did)."""
        reopened: list[str] = []
        errors: list[str] = []
        for log in self._files.values():
            try:
                log.reopen()
            except OSError as exc:
                errors.append(f"cannot reopen {log.path}: {exc.strerror or exc}")
            else:
                reopened.append(str(log.path))
        return reopened, errors

    def close(self) -> None:
        for log in self._files.values():
            log.close()
