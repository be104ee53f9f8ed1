"""``tsyncctl``'s read-only commands, over tsyncd's read methods (anyone who can open the
control socket, like chronyc's monitoring commands): status, tracking, sources (peers),
sourcestats, selectdata, ntpdata, authdata, activity, serverstats, clients, accheck, version,
and waitsync, which asks for 'tracking' until the clock is synchronized.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

import click

from tsyncctl import render
from tsyncctl.client import ControlError
from tsyncctl.group import CliError, call, cli, expect, print_json, selector_argument, show
from tsyncctl.hostnames import for_tsyncd
from tsyncctl.options import chronyc_habit_options, json_option
from tsyncctl.waitsync import NoAnswer, SyncWanted, wait_for_sync
from tsyncd.config_fields import is_host_name
from tsyncd.source_selectors import Association, select_associations


def _sources_text(ctx: click.Context, rows: list[Any], human: Callable[[list[Any]], str]) -> str:
    """``human(rows)``; for no rows, whether none are configured or they have no address to
    poll yet (``activity``'s ``unknown_address``: names not resolved, before an NTS-KE),
    which ``sourcestats`` (and an older tsyncd's ``sources``) leaves out."""
    if rows:
        return human(rows)
    try:
        counts = call(ctx, "activity")
    except ControlError:
        return render.NO_SOURCES
    waiting = counts.get("unknown_address") if isinstance(counts, dict) else None
    if not isinstance(waiting, int) or isinstance(waiting, bool) or waiting <= 0:
        return render.NO_SOURCES
    return (
        f"no source has an address to poll yet: {waiting} source(s) waiting for name"
        " resolution or an NTS-KE (tsyncctl sources)"
    )


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Synchronized or why not: stratum, reference, offset (the short form of 'tracking')."""
    show(ctx, "status", dict, as_json, render.render_status)


@cli.command()
@json_option
@chronyc_habit_options
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """The time sources and their state (like 'chronyc sources')."""
    result = expect(call(ctx, "sources"), list, "sources")
    if as_json:
        print_json(result)
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
    cookies, AEAD, last key exchange and NAKs, or none.

    AEAD, Last KE (its age) and TLS group are those of the NTS-KE that made the keys in use,
    also after a reload or restart resumed a saved session.  KEs and NAKs count for the
    daemon's life: a reload restarting a source keeps them, a restart starts them at 0."""
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
    result = expect(call(ctx, "sources"), list, "sources")
    if not as_json:
        click.echo(_sources_text(ctx, result, human))
        return
    print_json(
        [
            {f: render.auth_kind(src) if f == "auth" else src.get(f) for f in fields}
            for src in result
        ]
    )


@cli.command()
@json_option
@click.pass_context
@selector_argument
def ntpdata(ctx: click.Context, sources: tuple[str, ...], as_json: bool) -> None:
    """Everything known of each source, or of the SOURCEs (or the Addresses 'tsyncctl
    sources' shows), one block per source (like 'chronyc ntpdata')."""
    result = expect(call(ctx, "sources"), list, "sources")
    if sources:
        result = _picked(result, sources)
    if as_json:
        print_json(result)
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
    show(ctx, "serverstats", dict, as_json, render.render_serverstats)


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
    result = expect(call(ctx, "clients", {"nts_ke": nts_ke}), list, "clients")
    busy = [c for c in result if int(c.get("received", 0)) >= packets]
    if as_json:
        print_json(busy)
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
    """The clock discipline: offsets, frequency, skew (like 'chronyc tracking').

    Skew is the frequency's 99.9 % error bound, as chronyc's: the sourcestats Freq Skew of
    the system peer, or of the sources combined with it (0 while unsynchronized)."""
    show(ctx, "tracking", dict, as_json, render.render_tracking)


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
            answer: dict[str, Any] = expect(call(ctx, "tracking"), dict, "tracking")
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
@chronyc_habit_options
@click.pass_context
def sourcestats(ctx: click.Context, as_json: bool) -> None:
    """Sample statistics per source (like 'chronyc sourcestats')."""
    show(
        ctx,
        "sourcestats",
        list,
        as_json,
        lambda r: _sources_text(ctx, r, render.render_sourcestats),
    )


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
@click.argument("address")
@json_option
@click.pass_context
def accheck(ctx: click.Context, address: str, as_json: bool) -> None:
    """Whether tsyncd's NTP server answers ADDRESS (its allow and deny lists), like
    'chronyc accheck'; a host name is resolved here, as chronyc does (its first address).
    Exit status 1 if any server socket that ADDRESS can reach (one of its address family)
    refuses it, or none can.  NTP server sockets only, not the NTS-KE listeners (an
    [[nts-ke-server]] without allow or deny judges a client by the rules of the [[server]] that
    gets its NTP: the one on the address the client reached NTS-KE on, else its family's
    wildcard; otherwise by its own)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not is_host_name(address):
            raise CliError(f"accheck: {address!r} is not an IP address or host name") from None
    ip = for_tsyncd("accheck", address)
    result = expect(call(ctx, "accheck", {"address": ip}), list, "accheck")
    if as_json:
        print_json(result)
    else:
        click.echo(render.render_accheck(address if ip == address else f"{address} ({ip})", result))
    reached = [row for row in result if row.get("reason") != "unreachable"]
    if not reached or not all(row.get("allowed") for row in reached):
        ctx.exit(1)


@cli.command()
@json_option
@click.pass_context
def activity(ctx: click.Context, as_json: bool) -> None:
    """How many sources are online, offline, in a burst, or without an address yet (like
    'chronyc activity')."""
    show(ctx, "activity", dict, as_json, render.render_activity)


@cli.command()
@json_option
@click.pass_context
def version(ctx: click.Context, as_json: bool) -> None:
    """The version of the running tsyncd."""
    show(ctx, "version", dict, as_json, lambda r: f"tsyncd {r.get('version', '-')}")
