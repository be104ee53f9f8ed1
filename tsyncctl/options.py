"""Options shared by tsyncctl's commands and its ``tsq`` group."""

from __future__ import annotations

from typing import Any

import click

from tsyncctl.group import JSON_WANTED

__all__ = ["chronyc_habit_options", "json_option"]


def _json_wanted(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """A command's ``--json``, or the main command's (``tsyncctl --json peers``, as chronyc
    takes its ``-c`` before the command)."""
    root = ctx.find_root()
    wanted = bool(value or root.params.get("as_json"))
    if wanted:
        root.meta[JSON_WANTED] = True  # failures too are printed as JSON (group.py)
    return wanted


json_option = click.option(
    "--json", "as_json", is_flag=True, callback=_json_wanted, help="Print JSON for scripts."
)


def chronyc_habit_options(command: Any) -> Any:
    """``-v`` and ``-a``, which chronyc's ``sources`` and ``sourcestats`` take (a legend, and
    unresolved sources too): tsyncctl always shows both, so they are accepted and change
    nothing, rather than a usage error for a chronyc user's muscle memory."""
    command = click.option("-a", "_all", is_flag=True, hidden=True, expose_value=False)(command)
    return click.option(
        "-v",
        "_verbose",
        is_flag=True,
        help="Accepted as chronyc's; the legend is always shown.",
        expose_value=False,
    )(command)
