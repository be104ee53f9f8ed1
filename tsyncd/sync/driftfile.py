"""The drift file: the frequency estimate kept across restarts.

Format: one line, "FREQUENCY_PPM SKEW_PPM", as chrony writes its driftfile (chrony's sign: the
rate correction applied, positive makes the clock run faster), so either daemon can read the
other's.  Writes are atomic: a temporary file in the same directory, fsync, rename over the old
one, fsync of the directory, so a crash leaves the old estimate or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_PPM = 500.0 * 2  # anything beyond is not a crystal's drift: treat the file as corrupt


def read_drift(path: Path) -> tuple[float, float] | None:
    """(frequency ppm, skew ppm) from ``path``; None (with a warning) if missing or corrupt."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        log.info("no drift file at %s yet", path)
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the drift file %s: %s; starting without it", path, exc)
        return None
    fields = text.split()
    try:
        ppm = float(fields[0])
        skew = float(fields[1]) if len(fields) > 1 else 1000.0
    except (IndexError, ValueError):
        log.warning("drift file %s is not 'PPM SKEW': %r; starting without it", path, text[:40])
        return None
    if not (math.isfinite(ppm) and math.isfinite(skew)) or abs(ppm) > _MAX_PPM or skew < 0:
        log.warning("drift file %s holds implausible values %r; ignoring it", path, text[:40])
        return None
    return ppm, skew


def write_drift(path: Path, ppm: float, skew_ppm: float) -> None:
    """Replace ``path`` atomically with the new estimate; OSError if the directory is unwritable."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{ppm:.6f} {skew_ppm:.6f}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
