"""Options shared by tsyncctl's commands and its ``tsq`` group."""

from __future__ import annotations

import click

__all__ = ["json_option"]


def _json_wanted(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """A command's ``--json``, or the main command's (``tsyncctl --json peers``, as chronyc
    takes its ``-c`` before the command)."""
    return bool(value or ctx.find_root().params.get("as_json"))


json_option = click.option(
    "--json", "as_json", is_flag=True, callback=_json_wanted, help="Print JSON for scripts."
)
