"""What every benchmark needs to run peers: find a binary, pick a free port, run a process.

All processes run on loopback; chronyd is always started with ``-x`` by the callers, so no
benchmark ever touches the host clock.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def find_binary(name: str) -> str:
    """The path of ``name`` (also looked up in /usr/sbin and /sbin); exit if it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise SystemExit(f"{name} is not installed (the README's test command installs it)")
    return path


_handed_out: set[int] = set()  # ports given out in this process


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port of ``kind`` (UDP by default) free on 127.0.0.1 right now, and never one this
    process handed out before: the kernel may give the same ephemeral port to two binds in a
    row, and two servers asked for two ports would then be configured on one."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@contextmanager
def running(argv: Sequence[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in ``log``; SIGTERM it (then SIGKILL) on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
