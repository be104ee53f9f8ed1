"""Where the daemon's logs go (QA s17 hunt-life F2): a stale ``JOURNAL_STREAM`` (inherited, not
naming our stderr) must not swallow them, and without systemd-python journald still gets each
line's priority from sd-daemon(3)'s ``<N>`` prefix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tsyncd.daemon_cli import stderr_is_journal

_EMIT = (
    "from tsyncd.daemon_cli import _setup_logging; import logging; _setup_logging('info'); "
    "logging.getLogger('tsyncd.x').warning('first\\nsecond'); "
    "logging.getLogger('tsyncd.x').error('bad')"
)


def _run(tmp_path: Path, journal_stream: str | None) -> str:
    """Run ``_EMIT`` with stderr on a file (and systemd-python hidden); what it wrote."""
    stub = tmp_path / "stub" / "systemd"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    err = tmp_path / "stderr.txt"
    with err.open("w") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "stub"), *sys.path]))
        env.pop("JOURNAL_STREAM", None)
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream.format(dev=st.st_dev, ino=st.st_ino)
        subprocess.run([sys.executable, "-c", _EMIT], stderr=f, env=env, check=True, timeout=60)
    return err.read_text()


def test_a_journal_stream_naming_our_stderr_gets_priority_prefixes(tmp_path: Path) -> None:
    assert _run(tmp_path, "{dev}:{ino}").splitlines() == [
        "<4>tsyncd.x: first",
        "<4>second",
        "<3>tsyncd.x: bad",
    ]


def test_a_stale_journal_stream_leaves_the_logs_on_stderr(tmp_path: Path) -> None:
    lines = _run(tmp_path, "8:12345").splitlines()
    assert len(lines) == 3 and lines[0].endswith("WARNING tsyncd.x: first")
    assert lines[2].endswith("ERROR tsyncd.x: bad")


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("w") as f:
        st = os.fstat(f.fileno())
        assert stderr_is_journal(f"{st.st_dev}:{st.st_ino}", f.fileno())
        assert not stderr_is_journal(f"{st.st_dev}:{st.st_ino + 1}", f.fileno())
        assert not stderr_is_journal("garbage", f.fileno())
        assert not stderr_is_journal(None, f.fileno())
