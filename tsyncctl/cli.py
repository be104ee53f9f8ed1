"""``tsyncctl``: ask a running tsyncd what it is doing, or query an NTP server directly.

Every command prints a table for people, or with ``--json`` the daemon's JSON for scripts.
Every failure is one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import ipaddress
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from tsyncctl import render
from tsyncctl.client import ControlClient, ControlError
from tsyncctl.options import json_option
from tsyncctl.query import QueryError, run_query
from tsyncctl.tsq import tsq as tsq_commands
from tsyncctl.waitsync import NoAnswer, SyncWanted, wait_for_sync
from tsyncd import __version__
from tsyncd.control.rpc import ErrorCode
from tsyncd.source_selectors import Association, select_associations

DEFAULT_SOCKET = Path("/run/tsyncd/tsyncd.sock")
SOCKET_ENV = "TSYNCD_SOCKET"


class CliError(click.ClickException):
    """A failure shown as ``tsyncctl: MESSAGE`` on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"tsyncctl: {self.format_message()}", err=True)


@dataclass(frozen=True, slots=True)
class Settings:
    """Options given before the command."""

    socket_path: Path
    timeout: float


class TsyncctlGroup(click.Group):
    """Turns expected failures raised by any command into one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ControlError, QueryError) as exc:
            raise CliError(str(exc)) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _call(ctx: click.Context, method: str, params: dict[str, Any] | None = None) -> Any:
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


def _show(
    ctx: click.Context,
    method: str,
    kind: type,
    as_json: bool,
    human: Any,
    params: dict[str, Any] | None = None,
) -> None:
    """Call ``method``, check its result's type, print it as JSON or through ``human``."""
    result = _expect(_call(ctx, method, params), kind, method)
    if as_json:
        _print_json(result)
    else:
        click.echo(human(result))


def _sources_text(ctx: click.Context, rows: list[Any], human: Callable[[list[Any]], str]) -> str:
    """``human(rows)``; for no rows, whether none are configured or they have no address to
    poll yet (``activity``'s ``unknown_address``: names not resolved, before an NTS-KE),
    which ``sourcestats`` (and an older tsyncd's ``sources``) leaves out."""
    if rows:
        return human(rows)
    try:
        counts = _call(ctx, "activity")
    except ControlError:
        return render.NO_SOURCES
    waiting = counts.get("unknown_address") if isinstance(counts, dict) else None
    if not isinstance(waiting, int) or isinstance(waiting, bool) or waiting <= 0:
        return render.NO_SOURCES
    return (
        f"no source has an address to poll yet: {waiting} source(s) waiting for name"
        " resolution or an NTS-KE (tsyncctl sources)"
    )


def _expect(value: Any, kind: type, method: str) -> Any:
    if not isinstance(value, kind):
        raise CliError(f"tsyncd answered '{method}' with unexpected data (is tsyncctl too old?)")
    return value


def _finite(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse ``nan`` and ``inf`` here, where the user sees what they typed, rather than in
    tsyncd after JSON has lost them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number", param=param)
    return value


_SELECTOR_HELP = """SOURCEs are names as 'tsyncctl sources' shows them, configured names (a
pool's selects its members), or IP addresses or networks (192.0.2.0/24) containing a source's
address; none means every source."""

F = TypeVar("F", bound=Callable[..., Any])


def _selectors(command: F) -> F:
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


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Synchronized or why not: stratum, reference, offset (the short form of 'tracking')."""
    result = _expect(_call(ctx, "status"), dict, "status")
    if as_json:
        _print_json(result)
    else:
        click.echo(render.render_status(result))


@cli.command()
@json_option
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """The time sources and their state (like 'chronyc sources')."""
    result = _expect(_call(ctx, "sources"), list, "sources")
    if as_json:
        _print_json(result)
    else:
        click.echo(_sources_text(ctx, result, render.render_sources))
        nts = render.render_nts_sources(result)
        if nts is not None:
            click.echo(f"\n{nts}")


cli.add_command(peers, name="sources")


@cli.command()
@json_option
@click.pass_context
def authdata(ctx: click.Context, as_json: bool) -> None:
    """How each source's packets are authenticated (like 'chronyc authdata'): NTS with its
    cookies, AEAD, last key exchange and NAKs, or none."""
    fields = ("name", "address", "mode", "auth", "nts", "key_id", "key_type")
    _show_source_view(ctx, as_json, fields, render.render_authdata)


def _show_source_view(
    ctx: click.Context,
    as_json: bool,
    fields: tuple[str, ...],
    human: Callable[[list[dict[str, Any]]], str],
) -> None:
    """A view of the ``sources`` method: as JSON, only ``fields`` of each source ("auth" is
    how it authenticates, ``render.auth_kind``); else through ``human``."""
    result = _expect(_call(ctx, "sources"), list, "sources")
    if not as_json:
        click.echo(_sources_text(ctx, result, human))
        return
    _print_json(
        [
            {f: render.auth_kind(src) if f == "auth" else src.get(f) for f in fields}
            for src in result
        ]
    )


@cli.command()
@json_option
@click.pass_context
@_selectors
def ntpdata(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Everything known of each source, or of the SOURCEs (or the Addresses 'tsyncctl
    sources' shows), one block per source (like 'chronyc ntpdata')."""
    result = _expect(_call(ctx, "sources"), list, "sources")
    if sources:
        result = _picked(result, sources)
    if as_json:
        _print_json(result)
    else:
        click.echo(_sources_text(ctx, result, render.render_ntpdata))


def _picked(rows: list[Any], selectors: tuple[str, ...]) -> list[Any]:
    """The ``sources`` rows ``selectors`` pick as tsyncd's commands pick them (by name, the
    source that made it, an IP address or network: ``select_associations``), or by the
    Address they show; CliError naming those that pick none (a typo among several is an
    error too, not a shorter answer)."""
    rows = [r for r in rows if isinstance(r, dict)]
    by_address = {str(r["address"]): str(r.get("name")) for r in rows if r.get("address")}
    associations = [
        Association(
            str(r.get("name")), str(r.get("source") or r.get("name")), _ip_of(r.get("address"))
        )
        for r in rows
    ]
    names, unmatched = select_associations([by_address.get(s, s) for s in selectors], associations)
    if unmatched:
        raise CliError(f"no source matches {', '.join(unmatched)} (see tsyncctl sources)")
    return [r for r in rows if str(r.get("name")) in names]


def _ip_of(address: Any) -> str:
    """The IP of an Address as 'sources' shows it ("ip:port", "[ip6]:port"), "" if none."""
    text = str(address or "")
    if text.startswith("["):
        return text[1 : text.find("]")]
    return text.rpartition(":")[0]


@cli.command()
@json_option
@click.pass_context
def serverstats(ctx: click.Context, as_json: bool) -> None:
    """Counters of tsyncd's NTP server, with drops by reason."""
    result = _expect(_call(ctx, "serverstats"), dict, "serverstats")
    if as_json:
        _print_json(result)
    else:
        click.echo(render.render_serverstats(result))


@cli.command()
@click.option(
    "-p", "--packets", type=click.IntRange(min=0), default=0, help="Only clients with this many."
)
@click.option("-k", "--nts-ke", is_flag=True, help="The NTS-KE server's clients instead.")
@json_option
@click.pass_context
def clients(ctx: click.Context, packets: int, nts_ke: bool, as_json: bool) -> None:
    """Clients of tsyncd's NTP server, busiest first (like 'chronyc clients'); with -k, of its
    NTS-KE server (connections, sessions that gave cookies, connections refused)."""
    result = _expect(_call(ctx, "clients", {"nts_ke": nts_ke}), list, "clients")
    busy = [c for c in result if int(c.get("received", 0)) >= packets]
    if as_json:
        _print_json(busy)
    elif result and not busy:
        click.echo(f"no client has sent {packets} or more ({len(result)} sent fewer)")
    elif nts_ke:
        click.echo(render.render_ke_clients(busy))
    else:
        click.echo(render.render_clients(busy))


@cli.command()
@json_option
@click.pass_context
def tracking(ctx: click.Context, as_json: bool) -> None:
    """The clock discipline: offsets, frequency, skew (like 'chronyc tracking')."""
    _show(ctx, "tracking", dict, as_json, render.render_tracking)


@cli.command()
@click.argument("max_tries", type=click.IntRange(min=0), default=0, required=False)
@click.argument("max_correction", type=click.FloatRange(min=0.0), default=0.0, required=False)
@click.argument("max_skew", type=click.FloatRange(min=0.0), default=0.0, required=False)
@click.argument("interval", type=click.FloatRange(min=0.1), default=10.0, required=False)
@click.pass_context
def waitsync(
    ctx: click.Context, max_tries: int, max_correction: float, max_skew: float, interval: float
) -> None:
    """Wait until the clock is synchronized, like 'chronyc waitsync': ask every INTERVAL
    seconds (default 10) until tsyncd follows a real source, the correction it still has to
    apply is at most MAX_CORRECTION seconds and the frequency's error bound at most MAX_SKEW
    ppm (0: not checked), or until MAX_TRIES asks (0, the default: no limit).  Exits 0 once
    synchronized, 1 when out of tries.
    """

    def tracking() -> dict[str, Any]:
        try:
            answer: dict[str, Any] = _expect(_call(ctx, "tracking"), dict, "tracking")
        except ControlError as exc:
            if exc.code is not None:  # the daemon answered with an error: asking again won't help
                raise
            raise NoAnswer(str(exc)) from None  # not up yet, or restarting: keep asking
        return answer

    wanted = SyncWanted(max_correction=max_correction, max_skew_ppm=max_skew)
    synced = wait_for_sync(
        tracking,
        wanted,
        max_tries=max_tries,
        interval_s=interval,
        sleep=time.sleep,
        echo=click.echo,
    )
    if not synced:
        raise CliError(f"not synchronized after {max_tries} tries")


@cli.command()
@json_option
@click.pass_context
def sourcestats(ctx: click.Context, as_json: bool) -> None:
    """Sample statistics per source (like 'chronyc sourcestats')."""
    _show(
        ctx,
        "sourcestats",
        list,
        as_json,
        lambda r: _sources_text(ctx, r, render.render_sourcestats),
    )


@cli.command()
@json_option
@click.pass_context
def makestep(ctx: click.Context, as_json: bool) -> None:
    """Step the clock by the current offset now (needs root or the admin group)."""
    _show(
        ctx,
        "makestep",
        dict,
        as_json,
        lambda r: (
            f"clock stepped by {r['offset']:+.9f} s"
            if r.get("stepped")
            else "not stepped: no source selected or no offset to correct"
        ),
    )


@cli.command()
@json_option
@click.pass_context
@_selectors
def burst(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Send a quick burst of requests to SOURCEs, like 'chronyc burst' (needs root or the
    admin group); an offline source goes offline again after it."""
    _show(
        ctx,
        "burst",
        dict,
        as_json,
        lambda r: f"burst started for {r.get('sources', 0)} source(s)",
        {"sources": list(sources)} if sources else None,  # None: what an older tsyncd takes
    )


def _connectivity(ctx: click.Context, method: str, sources: tuple[str, ...], as_json: bool) -> None:
    def human(r: dict[str, Any]) -> str:
        changed, selected = r.get("changed", []), r.get("selected", [])
        state = "online" if method == "online" else "offline"
        already = len(selected) - len(changed)
        text = f"{len(changed)} source(s) set {state}"
        return f"{text} ({already} already were)" if already else text

    _show(ctx, method, dict, as_json, human, {"sources": list(sources)})


@cli.command()
@json_option
@click.pass_context
@_selectors
def offline(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Stop polling SOURCEs until 'tsyncctl online', like 'chronyc offline' (needs root or the
    admin group): for when the network to them is down, so that they neither age into
    unreachable nor get replaced.  With no SOURCE, sources mobilized later start offline
    too."""
    _connectivity(ctx, "offline", sources, as_json)


@cli.command()
@json_option
@click.pass_context
@_selectors
def online(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Poll SOURCEs again, soon, like 'chronyc online' (needs root or the admin group)."""
    _connectivity(ctx, "online", sources, as_json)


@cli.command()
@json_option
@click.pass_context
@_selectors
def onoffline(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Set each source online if this host has a route to its address, else offline, like
    'chronyc onoffline' (needs root or the admin group); for network managers' hooks."""

    def human(r: dict[str, Any]) -> str:
        lines = [f"online: {', '.join(r.get('online', [])) or 'none'}"]
        lines.append(f"offline: {', '.join(r.get('offline', [])) or 'none'}")
        return "\n".join(lines)

    _show(ctx, "onoffline", dict, as_json, human, {"sources": list(sources)})


@cli.command()
@json_option
@click.pass_context
def refresh(ctx: click.Context, as_json: bool) -> None:
    """Resolve the names of servers and pools again now, like 'chronyc refresh' (needs root or
    the admin group): a server whose name no longer gives its address moves to one it gives,
    a pool replaces members no longer in DNS.  Also done on its own for a server that turns
    unreachable or a falseticker."""

    def human(r: dict[str, Any]) -> str:
        names = r.get("sources", [])
        return f"resolving again: {', '.join(names)}" if names else "no source is given by name"

    _show(ctx, "refresh", dict, as_json, human)


@cli.command()
@json_option
@click.pass_context
def selectdata(ctx: click.Context, as_json: bool) -> None:
    """How the last source selection judged each source (like 'chronyc selectdata'): its
    state letter, options, how old its measurement was, and the interval (offset ± root
    distance) it put the true offset in."""
    fields = (
        "name",
        "address",
        "select_code",
        "select_interval",
        "select_age",
        "options",
        "auth",
        "leap",
        "state",
        "state_reason",
    )
    _show_source_view(ctx, as_json, fields, render.render_selectdata)


@cli.command()
@json_option
@click.pass_context
def reselect(ctx: click.Context, as_json: bool) -> None:
    """Select the best source again now, even if the current one is still good, like
    'chronyc reselect' (needs root or the admin group)."""

    def human(r: dict[str, Any]) -> str:
        selected, previous = r.get("selected"), r.get("previous")
        if selected is None:
            return "no source is selected"
        if selected == previous:
            return f"{selected} is still selected"
        return f"{selected} is selected (was {previous or 'none'})"

    _show(ctx, "reselect", dict, as_json, human)


@cli.command()
@click.argument("what", type=click.Choice(["sources"]))
@json_option
@click.pass_context
def reset(ctx: click.Context, what: str, as_json: bool) -> None:
    """'reset sources': drop every measurement, e.g. after a resume or a move to another
    network, like 'chronyc reset sources' (needs root or the admin group).  tsyncd is
    unsynchronized until new replies come; the frequency is kept."""
    _show(
        ctx,
        "reset_sources",
        dict,
        as_json,
        lambda r: f"measurements of {r.get('sources', 0)} source(s) dropped",
    )


_SETTING_HELP = """SOURCE is a name as 'tsyncctl sources' shows it, a configured name (a pool's
selects its members), or an IP address or network.  Until the source is replaced or reloaded,
or tsyncd restarts: the config file is not changed (needs root or the admin group)."""


def _setting_command(name: str, key: str, metavar: str, kind: type, summary: str) -> None:
    """``tsyncctl NAME SOURCE VALUE``: set ``key`` of the running sources SOURCE selects
    (method ``set_source``), like the chronyc command of that name.  Unknown options pass as
    arguments, so a negative poll ("minpoll SOURCE -3") is a value, as chronyc takes it."""

    @cli.command(
        name=name,
        context_settings={"ignore_unknown_options": True},
        help=f"{summary}, like 'chronyc {name}'.\n\n{_SETTING_HELP}",
    )
    @click.argument("source")
    @click.argument("value", metavar=metavar, type=kind, callback=_finite)
    @json_option
    @click.pass_context
    def command(ctx: click.Context, source: str, value: Any, as_json: bool) -> None:
        def human(r: dict[str, Any]) -> str:
            changed = r.get("changed") or []
            return f"{key} = {value} for {', '.join(changed)}" if changed else "no source changed"

        _show(ctx, "set_source", dict, as_json, human, {"sources": [source], key: value})


_setting_command("minpoll", "min-poll", "POLL", int, "Set SOURCE's shortest poll, log2 seconds")
_setting_command("maxpoll", "max-poll", "POLL", int, "Set SOURCE's longest poll, log2 seconds")
_setting_command(
    "maxdelay",
    "max-delay",
    "SECONDS",
    float,
    "Drop SOURCE's samples with a longer round trip",
)


@cli.command()
@click.argument("address")
@json_option
@click.pass_context
def accheck(ctx: click.Context, address: str, as_json: bool) -> None:
    """Whether tsyncd's NTP server answers ADDRESS (its allow and deny lists), like
    'chronyc accheck'.  Exit status 1 if any server socket that ADDRESS can reach (one of its
    address family) refuses it, or none can."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise CliError(f"accheck: {address!r} is not an IP address") from None
    result = _expect(_call(ctx, "accheck", {"address": address}), list, "accheck")
    if as_json:
        _print_json(result)
    else:
        click.echo(render.render_accheck(address, result))
    reached = [row for row in result if row.get("reason") != "unreachable"]
    if not reached or not all(row.get("allowed") for row in reached):
        ctx.exit(1)


@cli.command()
@click.argument("off", required=False, type=click.Choice(["off"]))
@click.option(
    "--stratum", type=click.IntRange(1, 15), default=10, show_default=True, help="Stratum to serve."
)
@json_option
@click.pass_context
def local(ctx: click.Context, off: str | None, stratum: int, as_json: bool) -> None:
    """Serve this host's own clock while no source is selected ('local off': do not), like
    'chronyc local' ([synchronization] local-stratum, until a restart; needs root or the admin
    group)."""

    def human(r: dict[str, Any]) -> str:
        if r.get("local_stratum") is None:
            return "local clock not served while unsynchronized"
        return f"local clock served at stratum {r['local_stratum']} while unsynchronized"

    params = {"stratum": None if off else stratum}
    _show(ctx, "local", dict, as_json, human, params)


@cli.command()
@json_option
@click.pass_context
def shutdown(ctx: click.Context, as_json: bool) -> None:
    """Stop tsyncd, as SIGTERM does (the drift and NTS sessions are saved), like 'chronyc
    shutdown' (needs root or the admin group).  Under systemd, prefer systemctl stop."""
    _show(ctx, "shutdown", dict, as_json, lambda _r: "tsyncd is stopping")


@cli.command()
@json_option
@click.pass_context
def cyclelogs(ctx: click.Context, as_json: bool) -> None:
    """Reopen the measurement logs ([log] measurements, statistics, tracking), after logrotate
    has moved them, like 'chronyc cyclelogs' (needs root or the admin group)."""
    _show(
        ctx,
        "cyclelogs",
        dict,
        as_json,
        lambda r: (
            "\n".join(f"reopened {path}" for path in r.get("reopened", []))
            or "no measurement log is configured"
        ),
    )


@cli.command()
@json_option
@click.pass_context
def activity(ctx: click.Context, as_json: bool) -> None:
    """How many sources are online, offline, in a burst, or without an address yet (like
    'chronyc activity')."""
    _show(ctx, "activity", dict, as_json, render.render_activity)


@cli.command()
@json_option
@click.pass_context
def rekey(ctx: click.Context, as_json: bool) -> None:
    """Reload the NTS cookie keys from the key file (needs root or the admin group)."""
    _show(
        ctx,
        "rekey",
        dict,
        as_json,
        lambda r: (
            f"NTS keys reloaded from {r['key_file']} (epoch {r['epoch']})"
            if r.get("key_file")
            else f"NTS keys replaced by a new random key (epoch {r.get('epoch')})"
            if r.get("epoch") is not None
            else "NTS is not configured"
        ),
    )


@cli.command()
@click.argument("what", type=click.Choice(["sources"]), required=False)
@json_option
@click.pass_context
def reload(ctx: click.Context, what: str | None, as_json: bool) -> None:
    """Re-read tsyncd's config file, as SIGHUP does (needs root or the admin group): the log
    level and the [[source]] tables apply at once (like 'chronyc reload sources', which is
    taken too, and does the same), the rest after a restart."""
    _show(ctx, "reload", dict, as_json, _reload_lines)


def _reload_lines(r: dict[str, Any]) -> str:
    lines = [f"reloaded {r.get('config')}"]
    for key, label in (("sources_stopped", "stopped"), ("sources_started", "started")):
        if r.get(key):
            lines.append(f"{label}: {', '.join(r[key])}")
    for item in r.get("sources_not_started", []):
        lines.append(f"not started: {item.get('name')}: {item.get('reason')}")
    if r.get("certificates_reloaded"):
        lines.append(f"certificate reloaded: {', '.join(r['certificates_reloaded'])}")
    for error in r.get("certificate_errors", []):
        lines.append(f"certificate kept: {error}")
    if r.get("restart_needed"):
        lines.append(f"takes a restart: {', '.join(r['restart_needed'])}")
    return "\n".join(lines)


_MODES = ("server", "pool", "peer", "nts", "tsq", "broadcast")


@cli.command()
@click.argument("words", nargs=-1, required=True, metavar="[MODE] ADDRESS")
@click.option(
    "--mode",
    type=click.Choice(_MODES),
    default="server",
    show_default=True,
    help="What ADDRESS is, as a [[source]]'s mode (or the MODE word before it).",
)
@click.option("--iburst", is_flag=True, help="Send a quick burst of requests at start.")
@click.option("--min-poll", type=int, help="Shortest poll interval, log2 seconds.")
@click.option("--max-poll", type=int, help="Longest poll interval, log2 seconds.")
@click.option("--xleave", is_flag=True, help="Ask for interleaved mode (not TSQ).")
@click.option("--key", type=int, help="Sign with, and demand, this key of [keys] file.")
@click.option("--noselect", is_flag=True, help="Measure it, never select it.")
@click.option("--prefer", is_flag=True, help="Prefer it over sources without --prefer.")
@click.option("--trust", is_flag=True, help="Take it as true unless other --trust ones disagree.")
@click.option(
    "--require", is_flag=True, help="Update the clock only while one --require is usable."
)
@click.option("--offline", is_flag=True, help="Start it offline, until 'tsyncctl online'.")
@click.option("--max-delay", type=float, help="Drop samples with a longer round trip, s.")
@click.option("--offset", type=float, help="Add this to every measured offset, s (asymmetry).")
@click.option("--name", help="Its name in tsyncctl and metrics (default: ADDRESS as given).")
@click.option("--count", type=int, help="Pool only: how many of its addresses to use.")
@click.option(
    "--certificate-authority",
    # tsyncd reads it, not tsyncctl: one that only tsyncd's user may read is fine.
    type=click.Path(dir_okay=False, readable=False, path_type=Path),
    help="NTS/TSQ only: PEM CA file (default: NTS the system store, TSQ certifi's bundle).",
)
@click.option("--transport", type=click.Choice(["stream", "datagram"]), help="TSQ only.")
@click.option("--local-port", type=int, help="Peer only: our UDP port.")
@click.option("--dscp", type=int, help="DSCP code point of our requests.")
@click.option("--broadcast-delay", type=float, help="Broadcast only: assumed round trip, s.")
@click.option("--broadcast-calibrate", is_flag=True, help="Broadcast only: measure the round trip.")
@click.option(
    "--broadcast-server", help="Broadcast only: the server's IP[:port] (needed for a group)."
)
@click.option("--broadcast-interface", help="Multicast only: the interface to join the group on.")
@json_option
@click.pass_context
def add(ctx: click.Context, /, words: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Add a time source until tsyncd stops, like 'chronyc add server' (needs root or the
    admin group).  tsyncd checks it as a [[source]] in its config file, but does not write it
    there: add it to the file too to keep it after a restart.  'add server|pool|peer ADDRESS'
    (chronyc's words; any --mode) is 'add ADDRESS --mode server|pool|peer'."""
    address, options["mode"] = _add_words(ctx, words, options["mode"])
    table: dict[str, Any] = {"address": address}
    for key, value in options.items():
        if value is None or value is False:
            continue  # not given: the config file's default
        if isinstance(value, Path):
            value = str(value.absolute())  # tsyncd's working directory is not ours
        table[key.replace("_", "-")] = value
    _show(ctx, "add_source", dict, as_json, lambda r: f"added source {r.get('name')}", table)


def _add_words(ctx: click.Context, words: tuple[str, ...], mode: str) -> tuple[str, str]:
    """(address, mode) of 'add ADDRESS' or chronyc's 'add MODE ADDRESS'; a usage error if the
    words are neither, or MODE and an explicit --mode disagree."""
    if len(words) == 1:
        return words[0], mode
    if len(words) == 2 and words[0] in _MODES:
        given = ctx.get_parameter_source("mode") is ParameterSource.COMMANDLINE
        if given and mode != words[0]:
            raise click.UsageError(f"'add {words[0]}' and '--mode {mode}' disagree")
        return words[1], words[0]
    raise click.UsageError(
        f"expected ADDRESS or MODE ADDRESS, got {' '.join(words)!r} (chronyc's options are"
        " given as options here: --iburst, --min-poll N, ...)"
    )


@cli.command()
@click.argument("name", metavar="SOURCE")
@json_option
@click.pass_context
def delete(ctx: click.Context, name: str, as_json: bool) -> None:
    """Remove a time source, like 'chronyc delete' (needs root or the admin group): SOURCE is
    the name 'tsyncctl sources' shows (a pool's name removes it with all its members), or an
    IP address or network that selects one source's address and no other (a pool's member
    only goes with its pool)."""
    _show(
        ctx,
        "remove_source",
        dict,
        as_json,
        lambda r: (
            f"removed source {r.get('name')}"
            + (f" ({', '.join(r['associations'])})" if r.get("associations") else "")
        ),
        {"name": name},
    )


@cli.command()
@click.argument("key_id", type=click.IntRange(1, 0xFFFFFFFF), default=1, required=False)
@click.argument("kind", metavar="[TYPE]", default="SHA1", required=False)
@click.argument("bits", metavar="[BITS]", type=int, required=False)
def keygen(key_id: int, kind: str, bits: int | None) -> None:
    """Print a new random key for the [keys] file, like 'chronyc keygen': ID (default 1),
    TYPE (SHA1 by default; MD5, SHA256, SHA384, SHA512, AES128, AES256) and BITS (160 by
    default for hashes; AES keys have their own).  Needs no running tsyncd."""
    import secrets

    from tsyncd.symkey import SymmetricKey, key_line, keygen_bits

    try:
        size = keygen_bits(kind.upper(), bits)
    except ValueError as exc:
        raise CliError(f"keygen: {exc}") from None
    click.echo(key_line(SymmetricKey(key_id, kind.upper(), secrets.token_bytes(size // 8))))


@cli.command()
@json_option
@click.pass_context
def version(ctx: click.Context, as_json: bool) -> None:
    """The version of the running tsyncd."""
    result = _expect(_call(ctx, "version"), dict, "version")
    if as_json:
        _print_json(result)
    else:
        click.echo(f"tsyncd {result.get('version', '-')}")


@cli.command()
@click.argument("target", metavar="HOST[:PORT]")
@click.option(
    "-c",
    "--count",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Requests to send.",
)
@click.option(
    "-t",
    "--timeout",
    "reply_timeout",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Seconds to wait for each reply.",
)
@click.option(
    "-i",
    "--interval",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds between requests.",
)
@json_option
def query(target: str, count: int, reply_timeout: float, interval: float, as_json: bool) -> None:
    """Ask an NTP server for the time, without tsyncd (like 'sntp').

    Exits 0 if at least one reply was good. IPv6 addresses go in brackets: [::1]:123.
    """
    outcome = run_query(target, count=count, timeout=reply_timeout, interval=interval)
    if as_json:
        _print_json(
            {
                "target": outcome.target,
                "address": outcome.address,
                "replies": [
                    r.as_json(server=target, address=outcome.address) for r in outcome.replies
                ],
                "errors": outcome.errors,
            }
        )
    else:
        for reply in outcome.replies:
            click.echo(
                f"{target} offset {reply.offset_ns / 1e9:+.6f} s delay {reply.delay_ns / 1e9:.6f} s"
                f" stratum {reply.stratum} refid {reply.reference_id}"
            )
    if not outcome.replies:
        reason = outcome.errors[-1] if outcome.errors else "no reply"
        raise CliError(f"no good reply from {target} ({outcome.address}): {reason}")
    for error in outcome.errors:
        click.echo(f"tsyncctl: {target}: one request failed: {error}", err=True)


cli.add_command(tsq_commands)


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
