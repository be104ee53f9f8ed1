"""The drift file: the oscillator's frequency error, kept across restarts.

With a good drift file the first clock updates only have to correct phase, so synchronization
is quick and the clock does not wander off while the frequency is being measured again.

Format: chrony's, so a file can move between the two daemons: one line, two decimal numbers in
ppm, ``"<frequency> <skew>"`` (chrony writes ``%20.6f %20.6f``; older chrony files hold the
frequency alone).  chrony's frequency is how fast the free-running clock *gains*, the opposite
sign of the correction that compensates it, so the file holds ``-frequency_ppm`` of
``Discipline.frequency_ppm`` (the correction: positive makes the clock run faster).

The file is replaced atomically (temporary file in the same directory, fsync, rename, fsync of
the directory), so a crash or power cut leaves the old file or the new one, never a torn one.
Reading never raises: a missing, unreadable or corrupt file logs a warning and reads as None,
and the daemon starts as if it had none.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Final

from tsyncd.statefile import write_atomic

_log = logging.getLogger(__name__)

MAX_DRIFT_PPM: Final = 500.0  # beyond what any clock backend can correct: the file is wrong
DEFAULT_SKEW_PPM: Final = 1.0  # for a file that holds only the frequency
_MAX_FILE_BYTES: Final = 4096


def read_drift(path: Path) -> tuple[float, float] | None:
    """The frequency correction and its skew (both ppm) from ``path``, or None.

    Returns ``(frequency_ppm, skew_ppm)`` in ``Discipline`` terms (the correction to apply).
    None, with a warning, when the file is missing, unreadable or does not hold sensible
    numbers; never raises.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        _log.info("drift file %s does not exist yet; measuring the frequency from scratch", path)
        return None
    except OSError as exc:
        _log.warning("cannot read drift file %s: %s; ignoring it", path, exc)
        return None
    parsed = _parse(raw)
    if parsed is None:
        _log.warning("drift file %s is corrupt (%r); ignoring it", path, raw[:80])
    return parsed


def _parse(raw: bytes) -> tuple[float, float] | None:
    if len(raw) > _MAX_FILE_BYTES:
        return None
    try:
        fields = raw.decode("ascii").split()
    except UnicodeDecodeError:
        return None
    if len(fields) not in (1, 2):
        return None
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return None
    gain_ppm = values[0]
    skew_ppm = values[1] if len(values) == 2 else DEFAULT_SKEW_PPM
    if not (math.isfinite(gain_ppm) and math.isfinite(skew_ppm)):
        return None
    if abs(gain_ppm) > MAX_DRIFT_PPM or skew_ppm < 0:
        return None
    return -gain_ppm + 0.0, skew_ppm  # + 0.0: no "-0.0" for a zero frequency


def write_drift(path: Path, ppm: float, skew_ppm: float) -> None:
    """Replace ``path`` atomically with the frequency correction ``ppm`` and its skew.

    Raises ``OSError`` when the directory is not writable (the caller logs it and goes on:
    a drift file is an optimisation) and ``ValueError`` for non-finite numbers.
    """
    if not (math.isfinite(ppm) and math.isfinite(skew_ppm)):
        raise ValueError(f"drift values must be finite, got {ppm!r} {skew_ppm!r}")
    line = f"{-ppm + 0.0:20.6f} {skew_ppm:20.6f}\n".encode("ascii")
    write_atomic(path, line, 0o644)
