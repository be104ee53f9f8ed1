"""The daemon's command line (``tsyncd -c CONFIG [--measure-only] [--check]``), parsed with
argparse.

It has a module of its own so that argparse, which the daemon needs only for this, can be
forgotten once the command line is read (``startup_imports.TRANSIENT``): nothing here may
outlive the parse, so the result is a plain dataclass, not an ``argparse.Namespace``.

argparse, not click (which ``tsyncctl`` uses): click and what it imports (uuid, platform,
datetime) are about 1.5 MB of heap the daemon would carry all its life, and every forked server
worker with it (bench/README.md, "Server memory").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsyncd import __version__

__all__ = ["DaemonArgs", "parse_args"]


@dataclass(frozen=True, slots=True)
class DaemonArgs:
    """What the command line asked for."""

    config_path: Path
    check: bool  # validate the configuration and exit
    measure_only: bool  # [clock] mode = measure, whatever the file says


def parse_args(argv: list[str] | None = None) -> DaemonArgs:
    """The command line; on a bad one argparse prints the usage and exits with status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    config_path: Path = args.config_path
    if config_path.is_dir():
        parser.error(f"-c/--config: {config_path} is a directory, not a file")
    return DaemonArgs(config_path, bool(args.check), bool(args.measure_only))


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
