"""``tsyncd -c CONFIG [--measure-only] [--check]``: run the daemon in the foreground.

Started through ``tsyncd.__main__`` (the ``tsyncd`` command, ``python -m tsyncd``).

Logs go to stderr; under systemd (``JOURNAL_STREAM`` set) they go to journald, through
systemd-python's handler when it is installed, else as plain lines journald picks up from
stderr.  Exit codes: 0 clean stop or valid config, 1 bad config, 2 cannot start (or a bad
command line).

The command line is parsed with argparse, not click (which ``tsyncctl`` uses): click and what it
imports (uuid, platform, datetime) are about 1.5 MB of heap the daemon would carry all its life,
and every forked server worker with it (bench/README.md, "Server memory").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tsyncd import __version__
from tsyncd.clock import make_clock
from tsyncd.config import ClockConfig, Config, ConfigErrors, load_config
from tsyncd.net.eventloop import loop_factory


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM"):
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found,unused-ignore]

            handler = JournalHandler(SYSLOG_IDENTIFIER="tsyncd")
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigErrors as exc:
        print(f"tsyncd: invalid configuration:\n{exc}", file=sys.stderr)
        sys.exit(1)


class _Formatter(argparse.HelpFormatter):
    """Help as the other tools print it: "Usage: tsyncd ..." (the packaging tests check it).

    The width is given, so argparse does not import ``shutil`` (with bz2 and lzma) to ask for
    the terminal's size each time it builds a formatter, which it does for every option.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)


def _terminal_columns() -> int:
    """$COLUMNS, else the width of the terminal on stdout, else 80 (as shutil would say)."""
    with contextlib.suppress(KeyError, ValueError):
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):
        return 80


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsyncd",
        description="Time synchronization daemon: NTP client and server.",
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "-c",
        "--config",
        dest="config_path",
        type=Path,
        default=Path("/etc/tsyncd/tsyncd.toml"),
        metavar="FILE",
        help="TOML configuration file (default: %(default)s).",
    )
    parser.add_argument("--check", action="store_true", help="Validate the configuration and exit.")
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="Compute and report everything, never change the host clock ([clock] mode = measure).",
    )
    parser.add_argument("--version", action="version", version=f"tsyncd, version {__version__}")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Time synchronization daemon: NTP client and server."""
    parser = _parser()
    args = parser.parse_args(argv)
    config_path: Path = args.config_path
    check: bool = args.check
    measure_only: bool = args.measure_only
    if config_path.is_dir():
        parser.error(f"-c/--config: {config_path} is a directory, not a file")
    config = _load(config_path)
    if check:
        print(
            f"{config_path}: configuration OK "
            f"({len(config.sources)} source(s), {len(config.servers)} server(s))"
        )
        return
    if measure_only:
        config = dataclasses.replace(config, clock=ClockConfig(mode="measure"))
    _setup_logging(config.log.level)
    from tsyncd.control.server import ControlSetupError
    from tsyncd.daemon import Daemon

    daemon = Daemon(config, make_clock(config.clock.mode))
    logging.getLogger("tsyncd").info(
        "tsyncd %s starting, clock mode %s, config %s",
        __version__,
        config.clock.mode,
        config_path,
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(daemon.run())
    except (OSError, ControlSetupError) as exc:
        logging.getLogger("tsyncd").error("cannot start: %s", exc)
        sys.exit(2)
