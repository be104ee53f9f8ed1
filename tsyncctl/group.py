"""The ``tsyncctl`` main command (a click group) with its options before the command, and what
every command that asks tsyncd shares: calling a method, checking and printing the answer, the
one-line error, the [SOURCE]... argument.

The commands live in ``monitor`` (read-only), ``admin`` (they change tsyncd) and ``standalone``
(no daemon needed), each decorated with this group; the entry point, ``tsyncctl.cli``, imports
them, which registers them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from tsyncctl.client import ControlClient, ControlError
from tsyncctl.query import QueryError
from tsyncd import __version__
from tsyncd.control.rpc import ErrorCode

DEFAULT_SOCKET = Path("/run/tsyncd/tsyncd.sock")
SOCKET_ENV = "TSYNCD_SOCKET"


class CliError(click.ClickException):
    """A failure shown as ``tsyncctl: MESSAGE`` on stderr, exit code 1; ``code`` is tsyncd's
    JSON-RPC error code when tsyncd refused the call."""

    exit_code = 1

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def show(self, file: Any = None) -> None:
        click.echo(f"tsyncctl: {self.format_message()}", err=True)


JSON_WANTED = "tsyncctl.json"
"""Key in the main command's ``Context.meta``: a command's ``--json`` was given."""
_JSON_PRINTED = "tsyncctl.json-printed"
"""Key in ``Context.meta``: the command printed its JSON document (``print_json``)."""


def print_json_error(exc: click.ClickException) -> None:
    """With ``--json``, a failure is also a JSON object on stdout, so a script reading stdout
    gets JSON either way: ``{"error": {"code": CODE, "message": MESSAGE}}``, ``code``
    being tsyncd's JSON-RPC error code or null when tsyncctl failed before tsyncd answered.
    The one-line error still goes to stderr, and the exit code is unchanged."""
    code = exc.code if isinstance(exc, CliError) else None
    error = {"code": code, "message": exc.format_message()}
    click.echo(json.dumps({"error": error}, ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class Settings:
    """Options given before the command."""

    socket_path: Path
    timeout: float


class TsyncctlGroup(click.Group):
    """Turns expected failures raised by any command into one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except ControlError as exc:
                raise CliError(str(exc), exc.code) from None
            except QueryError as exc:
                raise CliError(str(exc)) from None
        except click.ClickException as exc:
            if self._json_wanted(ctx) and not ctx.meta.get(_JSON_PRINTED):
                print_json_error(exc)
            raise

    def _json_wanted(self, ctx: click.Context) -> bool:
        """The failed command prints JSON: its ``--json`` (or the main command's) was taken,
        or its arguments were refused before it could be, with the main command's
        ``--json`` and a command that has the option.  Not for the commands that print text
        only (``waitsync``, ``keygen``), nor once the command's own JSON went out: stdout
        then holds one JSON document, and the error is on stderr (``query``'s replies)."""
        if ctx.meta.get(JSON_WANTED):
            return True
        name = ctx.invoked_subcommand
        command = self.get_command(ctx, name) if ctx.params.get("as_json") and name else None
        return command is not None and any(p.name == "as_json" for p in command.params)


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON, for scripts (the command's one document: a failure
    after it is not printed as JSON too, ``TsyncctlGroup``)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_JSON_PRINTED] = True


def call(ctx: click.Context, method: str, params: dict[str, Any] | None = None) -> Any:
    """tsyncd's answer to ``method`` on the socket the main command's options name; raises
    ControlError, which names the command typed rather than the method if it is refused."""
    settings = ctx.find_object(Settings)
    if settings is None:  # the group callback sets it before any command runs
        raise CliError("internal error: no settings (run tsyncctl through its main command)")
    with ControlClient(settings.socket_path, timeout=settings.timeout) as client:
        try:
            return client.call(method, params)
        except ControlError as exc:
            if exc.code != ErrorCode.PERMISSION_DENIED:
                raise
            # tsyncd names its method (and who may call it); the user typed the command.
            command = f"'tsyncctl {ctx.info_name}'"
            raise ControlError(exc.message.replace(f"'{method}'", command), exc.code) from None


def show(
    ctx: click.Context,
    method: str,
    kind: type,
    as_json: bool,
    human: Any,
    params: dict[str, Any] | None = None,
) -> None:
    """Call ``method``, check its result's type, print it as JSON or through ``human``."""
    result = expect(call(ctx, method, params), kind, method)
    if as_json:
        print_json(result)
    else:
        click.echo(human(result))


def expect(value: Any, kind: type, method: str) -> Any:
    """``value``, tsyncd's answer to ``method``, if it is a ``kind``; else CliError."""
    if not isinstance(value, kind):
        raise CliError(f"tsyncd answered '{method}' with unexpected data (is tsyncctl too old?)")
    return value


_SELECTOR_HELP = """SOURCEs are names as 'tsyncctl sources' shows them, configured names (a
pool's selects its members), or IP addresses or networks (192.0.2.0/24) containing a source's
address; none means every source."""

F = TypeVar("F", bound=Callable[..., Any])


def selector_argument(command: F) -> F:
    """The [SOURCE]... argument, explained after the command's own help."""
    command.__doc__ = f"{inspect.cleandoc(command.__doc__ or '')}\n\n{_SELECTOR_HELP}"
    decorated: F = click.argument("sources", nargs=-1, metavar="[SOURCE]...")(command)
    return decorated


@click.group(cls=TsyncctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-s",
    "--socket",
    "socket_path",
    # readable=False: connect() needs write permission, not read, and ControlClient says what
    # to do when it is refused (root or the socket's group); click would say "not readable".
    type=click.Path(dir_okay=False, readable=False, path_type=Path),
    envvar=SOCKET_ENV,
    default=DEFAULT_SOCKET,
    show_default=True,
    show_envvar=True,
    help="tsyncd's control socket.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for tsyncd's answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Every command prints JSON for scripts.")
@click.version_option(__version__, prog_name="tsyncctl", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, socket_path: Path, timeout: float, as_json: bool) -> None:
    """Inspect and steer a running tsyncd; 'query', 'tsq' and 'keygen' need no daemon."""
    ctx.obj = Settings(socket_path=socket_path, timeout=timeout)  # as_json: options.py
