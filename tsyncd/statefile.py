"""Atomic replacement of the daemon's state files (drift, NTS keys, saved NTS cookies).

A state file is either the old version or the new one, never a torn mix, even if the machine
loses power mid-write: the bytes go to a temporary file in the same directory, are flushed to
disk, and the temporary file is renamed over the old one (rename is atomic within a file
system); the directory is then synced so the rename itself survives a crash.

``exclusive`` creates a file that must not exist yet (servers of a fleet racing to make their
shared NTS key file): the temporary file is hard-linked to the final name, which fails if
another process got there first, so the file still appears whole or not at all.  A file system
without hard links gets ``O_EXCL`` instead (a reader may then see it before it is written).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

__all__ = ["write_atomic"]

_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""``link`` errors of file systems without hard links (vfat, some network file systems)."""


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` (permissions ``mode``); ``OSError`` if it cannot.

    With ``exclusive``, create it instead: ``FileExistsError`` (nothing written) if it exists.
    """
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
        if exclusive:
            _link_new(tmp_name, path, data, mode)
        else:
            os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)


def _link_new(tmp_name: str, path: Path, data: bytes, mode: int) -> None:
    """Give the written temporary file ``tmp_name`` the name ``path`` unless that exists
    (``FileExistsError``), and remove the temporary name."""
    try:
        os.link(tmp_name, path)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    os.unlink(tmp_name)


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
