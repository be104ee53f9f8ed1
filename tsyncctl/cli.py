"""``tsyncctl``: ask a running tsyncd what it is doing, or query an NTP server directly.

Every command prints a table for people, or with ``--json`` the daemon's JSON for scripts.
Every failure is one line on stderr and exit code 1, never a traceback (with ``--json``, a JSON
error object on stdout as well).

This is the console script's entry point: ``main`` runs the ``cli`` group (``group``) with every
command registered, which importing ``monitor``, ``admin`` and ``standalone`` does.
"""

from __future__ import annotations

import contextlib
import sys

import click

from tsyncctl import admin, monitor, standalone  # noqa: F401  (importing registers their commands)
from tsyncctl.group import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    # Never die on an unencodable character (µs on an ASCII terminal) or a closed pipe.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):
                reconfigure(errors="backslashreplace")
    try:
        # Click itself handles a closed stdout pipe (EPIPE) and Ctrl-C (exit 1).
        cli.main(prog_name="tsyncctl")
    except Exception as exc:  # a bug: still one line, never a traceback
        click.echo(f"tsyncctl: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
