"""``tsyncd -c CONFIG [--measure-only] [--check]``: run the daemon in the foreground.

Logs go to stderr; under systemd (``JOURNAL_STREAM`` set) they go to journald, through
systemd-python's handler when it is installed, else as plain lines journald picks up from
stderr.  Exit codes: 0 clean stop or valid config, 1 bad config, 2 cannot start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path

import click

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
        click.echo(f"tsyncd: invalid configuration:\n{exc}", err=True)
        sys.exit(1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("/etc/tsyncd/tsyncd.toml"),
    show_default=True,
    help="TOML configuration file.",
)
@click.option("--check", is_flag=True, help="Validate the configuration and exit.")
@click.option(
    "--measure-only",
    is_flag=True,
    help="Compute and report everything, never change the host clock ([clock] mode = measure).",
)
@click.version_option(__version__, prog_name="tsyncd")
def main(config_path: Path, check: bool, measure_only: bool) -> None:
    """Time synchronization daemon: NTP client and server."""
    config = _load(config_path)
    if check:
        click.echo(
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


if __name__ == "__main__":
    main()
