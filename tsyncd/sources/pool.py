"""The IO loop of one ``mode = "pool"`` source: resolve, mobilize, replace bad members.

Decisions (which member is bad, when to resolve, which addresses to take) live in the sans-IO
``tsyncd.sync.pool.PoolMembers``; this loop only resolves names and calls the daemon back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from tsyncd.asyncwait import wait_for
from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.pool import PoolMembers

log = logging.getLogger(__name__)

_CHECK_INTERVAL_S: Final = 1.0

MemberStatus = Callable[[str], tuple[NtpAssociation, str] | None]  # ip -> (assoc, sel. state)


async def run_pool(
    name: str,
    members: PoolMembers,
    *,
    resolve: Callable[[], Awaitable[list[str]]],
    add: Callable[[str], str | None],
    remove: Callable[[str], None],
    status: MemberStatus,
    polled_by: Callable[[str], str | None],
    now_ns: Callable[[], int],
    refresh: asyncio.Event | None = None,
    report: Callable[[str], None] | None = None,
) -> None:
    """Keep ``members.count`` good addresses of pool ``name`` mobilized, until cancelled.
    ``add(ip)`` mobilizes a member and returns None, or why it cannot (its socket cannot be
    opened, or the same resolution gave its address already in another form).
    ``polled_by(ip)``: the associations polling ``ip`` ("a, b"), if any: such an address (not
    a member) is left out while they do, not held out as bad; it is said at INFO once, then at
    DEBUG while it stays so.  ``refresh`` set (tsyncctl refresh): resolve now, and replace
    members DNS no longer gives.  ``report(why)`` after each resolution: why the pool is short
    ("" when it is not), for ``tsyncctl sources``."""
    refresh = refresh or asyncio.Event()
    shortfall = ""  # the last shortfall logged at INFO; the same again goes to DEBUG
    said: set[str] = set()  # the addresses in use by others said at INFO last time
    while True:
        now = now_ns()
        refreshing = refresh.is_set()
        refresh.clear()
        if refreshing:
            members.reset_backoff()
        if refreshing or members.wants_resolution(now):
            try:
                ips = await resolve()
            except OSError as exc:
                log.warning("cannot resolve pool %s: %s; retrying", name, exc)
                members.resolution_failed(now)
                if report is not None:
                    report("")  # the Note says why the name did not resolve instead
            else:
                for ip in members.stale(ips) if refreshing else []:
                    log.info("pool %s: replacing %s: no longer in DNS", name, ip)
                    members.drop(ip, now, bad=False)
                    remove(ip)
                taken = {
                    ip: who
                    for ip in ips
                    if ip not in members.members and (who := polled_by(ip)) is not None
                }
                refusals = [f"{ip} not used: {who} polls it already" for ip, who in taken.items()]
                for why in refusals:  # not ours to watch; used once that source is gone
                    level = logging.DEBUG if why in said else logging.INFO
                    log.log(level, "pool %s: %s", name, why)
                said = set(refusals)
                for ip in members.choose(ips, now, taken):
                    refused = add(ip)
                    if refused is not None:  # no socket, or a duplicate: later
                        log.info("pool %s: %s not used: %s", name, ip, refused)
                        members.refuse(ip, now)
                        refusals.append(f"{ip} not used: {refused}")
                shortfall = _log_shortfall(name, members, now, shortfall)
                if report is not None:
                    report(_shortfall_note(shortfall, len(ips), refusals))
        for ip in list(members.members):
            current = status(ip)
            if current is None:
                # No longer ours: another source at the same address took it over.  The
                # address did nothing wrong: used again once that source no longer polls it.
                who = polled_by(ip) or "another source"
                log.info(
                    "pool %s: %s is polled by %s now; replacing it (used again once %s no "
                    "longer polls it)",
                    name,
                    ip,
                    who,
                    who,
                )
                members.drop(ip, now, bad=False)
                continue
            reason = members.check(ip, *current, now)
            if reason is not None:
                log.warning("pool %s: replacing %s: %s", name, ip, reason)
                remove(ip)
        with contextlib.suppress(TimeoutError):
            await wait_for(refresh.wait(), _CHECK_INTERVAL_S)


def _shortfall_note(shortfall: str, resolved: int, refusals: list[str]) -> str:
    """Why a pool is short after a resolution of ``resolved`` addresses ("" if it is not):
    the shortfall, then the first refusals (a pool whose every address another source polls
    would otherwise look as if it were still resolving)."""
    if not shortfall:
        return ""
    shown = "; ".join(refusals[:2]) + ("; ..." if len(refusals) > 2 else "")
    why = f" ({shown})" if shown else " (the rest kept out as bad)" if resolved else ""
    return f"resolved {resolved} address{'es' if resolved != 1 else ''}, {shortfall}{why}"


def _log_shortfall(name: str, members: PoolMembers, now_ns: int, logged: str) -> str:
    """Say that pool ``name`` has too few members after a resolution: at INFO when that is
    news (``logged``: what was said last), else at DEBUG; what is now said ("" if complete)."""
    have, want = len(members.members), members.count
    if have >= want:
        return ""
    shortfall = f"{have} of {want} addresses usable"
    wait_s = (members.next_resolution_ns - now_ns) / 1e9
    log.log(
        logging.DEBUG if shortfall == logged else logging.INFO,
        "pool %s: %s; asking DNS again in %.0f s",
        name,
        shortfall,
        wait_s,
    )
    return shortfall
