"""``tsyncctl``'s commands that change the running tsyncd, over its admin methods (root or the
admin group): its sources (add, delete, offline, online, onoffline, burst, refresh, reselect,
reset, minpoll, maxpoll, maxdelay), the NTP server's access rules (allow, deny) and the
daemon itself (makestep, local, reload, rekey, cyclelogs, shutdown).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from tsyncctl.group import cli, selector_argument, show
from tsyncctl.hostnames import for_tsyncd
from tsyncctl.options import json_option


def _finite(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse ``nan`` and ``inf`` here, where the user sees what they typed, rather than in
    tsyncd after JSON has lost them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number", param=param)
    return value


@cli.command()
@json_option
@click.pass_context
def makestep(ctx: click.Context, as_json: bool) -> None:
    """Step the clock by the current offset now (needs root or the admin group)."""
    show(
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
@selector_argument
def burst(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Send a quick burst of requests to SOURCEs, like 'chronyc burst' (needs root or the
    admin group); an offline source goes offline again after it.  A broadcast source only
    listens: it is skipped, and named.  When none is burst (only broadcast sources, or none
    with an address yet) it fails, saying why, as chronyc's '513 No such source'."""

    def human(r: dict[str, Any]) -> str:
        lines = [f"burst started for {r.get('sources', 0)} source(s)"]
        lines += [f"skipped {name}: {why}" for name, why in r.get("skipped", {}).items()]
        return "\n".join(lines)

    show(
        ctx,
        "burst",
        dict,
        as_json,
        human,
        {"sources": list(sources)} if sources else None,  # None: what an older tsyncd takes
    )


def _connectivity(ctx: click.Context, method: str, sources: tuple[str, ...], as_json: bool) -> None:
    def human(r: dict[str, Any]) -> str:
        changed, selected = r.get("changed", []), r.get("selected", [])
        state = "online" if method == "online" else "offline"
        already = len(selected) - len(changed)
        text = f"{len(changed)} source(s) set {state}"
        return f"{text} ({already} already were)" if already else text

    show(ctx, method, dict, as_json, human, {"sources": list(sources)})


@cli.command()
@json_option
@click.pass_context
@selector_argument
def offline(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Stop polling SOURCEs until 'tsyncctl online', like 'chronyc offline' (needs root or the
    admin group): for when the network to them is down, so that they neither age into
    unreachable nor get replaced.  With no SOURCE, sources mobilized later start offline
    too."""
    _connectivity(ctx, "offline", sources, as_json)


@cli.command()
@json_option
@click.pass_context
@selector_argument
def online(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Poll SOURCEs again, soon, like 'chronyc online' (needs root or the admin group)."""
    _connectivity(ctx, "online", sources, as_json)


@cli.command()
@json_option
@click.pass_context
@selector_argument
def onoffline(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Set each source online if this host has a route to its address, else offline, like
    'chronyc onoffline' (needs root or the admin group); for network managers' hooks."""

    def human(r: dict[str, Any]) -> str:
        lines = [f"online: {', '.join(r.get('online', [])) or 'none'}"]
        lines.append(f"offline: {', '.join(r.get('offline', [])) or 'none'}")
        return "\n".join(lines)

    show(ctx, "onoffline", dict, as_json, human, {"sources": list(sources)})


@cli.command()
@json_option
@click.pass_context
@click.argument("names", nargs=-1, metavar="[NAME]...")
def refresh(ctx: click.Context, names: tuple[str, ...], as_json: bool) -> None:
    """Resolve the names of servers, pools and NTS sources again now, like 'chronyc refresh'
    (needs root or the admin group): a server whose name no longer gives its address moves to
    one it gives, a pool replaces members no longer in DNS, an NTS source whose name no longer
    gives the NTS-KE server its keys came from runs NTS-KE again (the old keys serve until it
    works).  Also done on its own for a server that turns unreachable or a falseticker.

    NAMEs pick sources by name, by address as configured (host:port) or by host alone; none:
    every source given by name.  tsyncd's log says what each one did."""

    def human(r: dict[str, Any]) -> str:
        names = r.get("sources", [])
        return f"resolving again: {', '.join(names)}" if names else "no source is given by name"

    show(ctx, "refresh", dict, as_json, human, {"sources": list(names)} if names else None)


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

    show(ctx, "reselect", dict, as_json, human)


@cli.command()
@click.argument("what", type=click.Choice(["sources"]))
@json_option
@click.pass_context
def reset(ctx: click.Context, what: str, as_json: bool) -> None:
    """'reset sources': drop every measurement, e.g. after a resume or a move to another
    network, like 'chronyc reset sources' (needs root or the admin group).  tsyncd is
    unsynchronized until new replies come; the frequency is kept."""
    show(
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

        show(ctx, "set_source", dict, as_json, human, {"sources": [source], key: value})


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
    show(ctx, "local", dict, as_json, human, params)


@cli.command()
@json_option
@click.pass_context
def shutdown(ctx: click.Context, as_json: bool) -> None:
    """Stop tsyncd, as SIGTERM does (the drift and NTS sessions are saved), like 'chronyc
    shutdown' (needs root or the admin group).  Under systemd, prefer systemctl stop."""
    show(ctx, "shutdown", dict, as_json, lambda _r: "tsyncd is stopping")


@cli.command()
@json_option
@click.pass_context
def cyclelogs(ctx: click.Context, as_json: bool) -> None:
    """Reopen the measurement logs ([log] measurements, statistics, tracking), after logrotate
    has moved them, like 'chronyc cyclelogs' (needs root or the admin group)."""
    show(
        ctx,
        "cyclelogs",
        dict,
        as_json,
        lambda r: (
            "\n".join(f"reopened {path}" for path in r.get("reopened", []))
            or "no measurement log is configured"
        ),
    )


def _key_id(result: dict[str, Any]) -> str:
    """ ", key 1a2b3c4d": the fingerprint fleet members compare (older daemons send none)."""
    return f", key {result['key_id']}" if result.get("key_id") else ""


@cli.command()
@json_option
@click.pass_context
def rekey(ctx: click.Context, as_json: bool) -> None:
    """Reload the NTS cookie keys from the key file (needs root or the admin group)."""
    show(
        ctx,
        "rekey",
        dict,
        as_json,
        lambda r: (
            f"NTS keys reloaded from {r['key_file']} (epoch {r['epoch']}{_key_id(r)})"
            if r.get("key_file")
            else f"NTS keys replaced by a new random key (epoch {r.get('epoch')}{_key_id(r)})"
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
    show(ctx, "reload", dict, as_json, _reload_lines)


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
    restart = r.get("restart_sections") or r.get("restart_needed")  # as the file writes them
    if restart:
        lines.append(f"takes a restart: {', '.join(restart)}")
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
@click.option(
    "--max-delay",
    type=float,
    callback=_finite,
    help="Drop samples with a longer round trip, s.",
)
@click.option(
    "--offset",
    type=float,
    callback=_finite,
    help="Add this to every measured offset, s (asymmetry).",
)
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
@click.option(
    "--broadcast-delay",
    type=float,
    callback=_finite,
    help="Broadcast only: assumed round trip, s.",
)
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
    show(ctx, "add_source", dict, as_json, lambda r: f"added source {r.get('name')}", table)


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
    show(
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


_ACCESS_HELP = """SUBNET is an IP address or CIDR network, or as in chrony a short IPv4 one
('10.2' is 10.2.0.0/16, '0/0' every IPv4 address) or a host name (resolved here, as chronyc
does: its first address); without it, every address (IPv4 and IPv6).  'all' also drops the rules
of the networks inside SUBNET, so this one decides for all of them.  As in chrony, the most
specific network that holds a client decides, and a client no rule holds is refused.  Every
[[server]] of the running tsyncd (its worker processes too) and every [[nts-ke-server]] (a refused
client's NTS-KE connection is closed before TLS), until a restart: the config file is not
changed, and a reload keeps the change (needs root or the admin group)."""


def _access_command(method: str, summary: str) -> None:
    """``tsyncctl allow|deny [all] [SUBNET]`` (methods ``allow``, ``deny``), as chronyc's."""

    @cli.command(name=method, help=f"{summary}, like 'chronyc {method}'.\n\n{_ACCESS_HELP}")
    @click.argument("words", nargs=-1, metavar="[all] [SUBNET]")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, words: tuple[str, ...], as_json: bool) -> None:
        replace_inside = words[:1] == ("all",)
        subnets = words[1:] if replace_inside else words
        if len(subnets) > 1:
            raise click.UsageError(f"expected [all] [SUBNET], got {' '.join(words)!r}")

        def human(r: dict[str, Any]) -> str:
            rows = [("", row) for row in r.get("servers", [])]
            rows += [("NTS-KE ", row) for row in r.get("nts_ke_servers", [])]
            return "\n".join(
                f"{kind}{row.get('listen')}{_rules_of(row)}: allow"
                f" {', '.join(row.get('allow') or ['-'])};"
                f" deny {', '.join(row.get('deny') or ['-'])}{_refused(row)}"
                for kind, row in rows
            )

        subnet = for_tsyncd(method, subnets[0]) if subnets else None
        params = {"subnet": subnet, "all": replace_inside}
        show(ctx, method, dict, as_json, human, params)


def _rules_of(row: dict[str, Any]) -> str:
    """An NTS-KE listener without rules of its own judges a client by the running rules of
    the [[server]] its NTP will reach: which one this row is."""
    return f" (for clients sent to {row['rules_of']})" if row.get("rules_of") else ""


def _refused(row: dict[str, Any]) -> str:
    """What happens to a client no rule of ``row`` holds: refused, unless 0.0.0.0/0 or ::/0
    is a rule, which holds every client of its family (then none is left "other")."""
    rules = {*(row.get("allow") or ()), *(row.get("deny") or ())}
    left = [family for family, every in _EVERY if every not in rules]
    if not left:
        return ""
    return f"; refused: any other{'' if len(left) == 2 else ' ' + left[0]}"


_EVERY = (("IPv4", "0.0.0.0/0"), ("IPv6", "::/0"))  # a family, the rule that holds all of it


_access_command("allow", "Serve NTP (and NTS-KE) to the clients in SUBNET")
_access_command("deny", "Refuse NTP (and NTS-KE) to the clients in SUBNET")
