"""``tsyncd -c CONFIG [--measure-only] [--check]``: run the daemon in the foreground.

Started through ``tsyncd.__main__`` (the ``tsyncd`` command, ``python -m tsyncd``).

Logs go to stderr; under systemd (``JOURNAL_STREAM`` names our stderr, as systemd.exec(5) says
to check: the variable is inherited, so a stale one must not send the logs to a journal that
may not be there) they go to journald, through systemd-python's handler when it is installed,
else as lines on stderr carrying sd-daemon(3)'s ``<N>`` priority prefix, which journald parses
(so ``journalctl -p warning`` finds them without systemd-python).

Exit codes: 0 clean stop or valid config, 1 bad config, 2 cannot start (or a bad command line).

The command line is parsed in ``tsyncd.daemon_args``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Final

from tsyncd import __version__
from tsyncd.clock import make_clock
from tsyncd.config import Config, ConfigErrors, load_config
from tsyncd.net.eventloop import loop_factory
from tsyncd.startup_imports import forget_transient_modules

_JOURNAL_PRIORITY: Final = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class _JournalPrefixFormatter(logging.Formatter):
    """``<N>name: message`` on every line of a record: sd-daemon(3)'s priority prefix."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_JOURNAL_PRIORITY.get(record.levelname, 6)}>"
        text = super().format(record)
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def stderr_is_journal(journal_stream: str | None, stderr_fd: int) -> bool:
    """Whether ``JOURNAL_STREAM`` (``device:inode``) names the file ``stderr_fd`` is open on."""
    if not journal_stream:
        return False
    try:
        device, inode = (int(part) for part in journal_stream.split(":"))
        st = os.fstat(stderr_fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler: logging.Handler
    if stderr_is_journal(os.environ.get("JOURNAL_STREAM"), sys.stderr.fileno()):
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found,unused-ignore]

            handler = JournalHandler(SYSLOG_IDENTIFIER="tsyncd")
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_JournalPrefixFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]


def _startup(argv: list[str] | None) -> tuple[Path, bool, bool, Config]:
    """Read the command line and the config file, then forget the modules only that took
    (argparse, the TOML parser: about 1 MB of heap, ``startup_imports.TRANSIENT``), so the
    daemon's own modules, imported next, fill the room they leave."""
    from tsyncd.daemon_args import parse_args

    args = parse_args(argv)
    config = _load(args.config_path)
    startup = (args.config_path, args.check, args.measure_only, config)
    del args, parse_args
    forget_transient_modules()
    return startup


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigErrors as exc:
        print(f"tsyncd: invalid configuration:\n{exc}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Time synchronization daemon: NTP client and server."""
    config_path, check, measure_only, config = _startup(argv)
    if check:
        counts = [f"{len(config.sources)} source(s)", f"{len(config.servers)} server(s)"]
        for n, kind in (
            (len(config.nts_ke_servers), "NTS-KE server(s)"),
            (len(config.tsq_servers), "TSQ server(s)"),
            (len(config.broadcasts), "broadcast(s)"),
        ):
            if n:  # named when present: the line of a plain NTP config stays as it was
                counts.append(f"{n} {kind}")
        print(f"{config_path}: configuration OK ({', '.join(counts)})")
        return
    _setup_logging(config.log.level)
    from tsyncd.control.server import ControlSetupError
    from tsyncd.daemon import Daemon

    mode = "measure" if measure_only else config.clock.mode
    daemon = Daemon(config, make_clock(mode), force_measure=measure_only)
    logging.getLogger("tsyncd").info(
        "tsyncd %s starting, clock mode %s, config %s",
        __version__,
        daemon.config.clock.mode,
        config_path,
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(daemon.run())
    except (OSError, ControlSetupError) as exc:
        logging.getLogger("tsyncd").error("cannot start: %s", exc)
        sys.exit(2)
