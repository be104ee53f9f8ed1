"""Atomic replacement of the daemon's state files (drift, NTS keys, saved NTS cookies).

A state file is either the old version or the new one, never a torn mix, even if the machine
loses power mid-write: the bytes go to a temporary file in the same directory, are flushed to
disk, and the temporary file is renamed over the old one (rename is atomic within a file
system); the directory is then synced so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (permissions ``mode``); ``OSError`` if it cannot."""
    directory = path.parent
    # Imported here: tempfile brings shutil, bz2 and lzma, about 1 MB the daemon (and every
    # forked server worker) would otherwise carry for a write once an hour at most.
    import tempfile

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the data itself is safe
    finally:
        os.close(dir_fd)
