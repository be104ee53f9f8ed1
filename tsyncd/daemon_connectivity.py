"""Sources taken offline and back online while the daemon runs, as with chronyc.

``tsyncctl offline [SELECTOR]...`` stops polling the sources it selects, ``online`` starts them
again, ``burst`` sends them a quick burst of requests, ``onoffline`` sets each one by whether
the kernel has a route to its address (what a network manager's dispatcher script calls when
links come and go; a source with no association yet by the route to an address of its name, an
NTS source's NTS-KE server's), and ``activity`` counts them, with chronyc's ``activity``
categories.  A laptop or an intermittent link then neither fills the log with unanswered polls
nor lets its sources' reach decay into "unreachable" (which would make a pool replace its
members) while the network is down.

Selectors: a name as ``tsyncctl sources`` shows it, the configured name of the source that made
an association (a pool's name selects all its members), or an IP address or network
("192.0.2.0/24", "192.0.2.0/255.255.255.0", "2001:db8::/32") containing its address.  No
selector: every association, and associations made later (pool replacements, sources added or
resolved later) start offline too until ``online`` with no selector, as chronyd's ``offline``
without an address does.

``offline = true`` on a ``[[source]]`` (chrony's ``offline`` option) starts its associations
offline, until an ``online`` covers the source; an NTS source's first NTS-KE waits for that
too (a session saved at the last exit is taken up without one, and then polls nothing until
online).  A source with no association yet (a name not resolved, every address of its name in
use, an NTS source before its first NTS-KE) is selected by its configured name: an ``offline``
or ``online`` then decides how its associations start once it has them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from typing import Any

from tsyncd.config import SourceConfig
from tsyncd.control.rpc import InvalidParams
from tsyncd.daemon_source_admin import SourceAdmin
from tsyncd.net.udp import Address, family_for_host
from tsyncd.source_selectors import Association, select_associations
from tsyncd.sync.core import SourceState

__all__ = ["Association", "Connectivity", "has_route", "nothing_to_burst", "select_associations"]

log = logging.getLogger("tsyncd.daemon")


def has_route(ip: str, peer: Address) -> bool:
    """Whether the kernel has a route to ``peer`` (at ``ip``) now.  Connecting a UDP socket
    sends nothing, it only looks the route up, as chronyd's ``onoffline`` does; as there, any
    failure counts as no route."""
    with socket.socket(family_for_host(ip), socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(peer)
        except OSError:
            return False
    return True


class Connectivity(SourceAdmin):
    """The ``online``, ``offline``, ``onoffline`` and ``activity`` control methods."""

    _all_offline: bool  # "offline" with no selector: new associations start offline too
    _onlined: set[str]  # offline = true sources an "online" has covered since
    _offlined: set[str]  # sources an "offline" selected before they had an association
    _waiting: dict[str, asyncio.Event]  # offline NTS sources waiting for "online" to NTS-KE

    def _init_connectivity(self) -> None:
        self._all_offline = False
        self._onlined = set()
        self._offlined = set()
        self._waiting = {}

    def _starts_offline(self, cfg: SourceConfig) -> bool:
        return (
            self._all_offline
            or cfg.name in self._offlined
            or (cfg.offline and cfg.name not in self._onlined)
        )

    def _mobilized(self, cfg: SourceConfig, state: SourceState) -> None:
        if self._starts_offline(cfg):
            state.association.set_online(False, self.clock.now_ns())

    async def _until_online(self, cfg: SourceConfig) -> None:
        if self._starts_offline(cfg):
            log.info("%s: offline; NTS-KE waits for tsyncctl online", cfg.name)
            try:
                await self._waiting.setdefault(cfg.name, asyncio.Event()).wait()
            finally:  # also when the source is deleted meanwhile
                self._waiting.pop(cfg.name, None)

    def _resolving(self) -> list[str]:
        """The sources with no association yet because their name has not resolved yet: not
        those waiting for an address no other source polls, nor NTS sources (both have rows
        of their own in ``tsyncctl sources``), nor one whose task has ended (its socket could
        not be opened: logged)."""
        return [
            name
            for name in self._unplaced()
            if name not in self._address_waits
            and name not in self.nts_sources
            and (task := self._source_tasks.get(name)) is not None
            and not task.done()
        ]

    def _selected(self, method: str, params: dict[str, Any]) -> list[str]:
        """The association names ``params["sources"]`` selects (all when absent or empty)."""
        selectors = params.get("sources", [])
        if not isinstance(selectors, list) or not all(isinstance(s, str) for s in selectors):
            raise InvalidParams(f'{method} takes {{"sources": [NAME, IP or NETWORK, ...]}}')
        associations = self._associations()
        if not selectors:
            return [a.name for a in associations]
        names, unmatched = select_associations(selectors, associations)
        if unmatched:
            known = ", ".join(a.name for a in associations) or "none"
            raise InvalidParams(
                f"{method}: no source matches {', '.join(unmatched)} (sources: {known})"
            )
        return names

    def _set_online(
        self, names: Iterable[str], online: bool, *, everything: bool = False
    ) -> list[str]:
        """Set associations ``names`` online or offline, and the sources among them with no
        association yet by how theirs will start; ``everything`` (no selector): sources
        mobilized later too.  The names whose state this changed."""
        names = list(names)
        # How the sources with no association would start, taken before ``everything`` changes
        # it for all of them at once: else each would look unchanged, either way.
        was_offline = {
            name: self._starts_offline(cfg)
            for name in names
            if name not in self.core.sources and (cfg := self._source_configs.get(name))
        }
        if everything:
            self._set_everything(online)
        now = self.clock.now_ns()
        changed = []
        for name in names:
            if name not in self.core.sources:
                if name in was_offline and self._set_unplaced_online(
                    name, online, was_offline[name]
                ):
                    changed.append(name)
                continue
            self._remember(self._association_source.get(name, name), online)
            if self.core.set_online(name, online, now):
                changed.append(name)
        if changed:
            log.info("%s: %s", "online" if online else "offline", ", ".join(changed))
            self._wake.set()
        return changed

    def _set_unplaced_online(self, name: str, online: bool, was_offline: bool) -> bool:
        """Take source ``name``, which has no association yet, online or offline: its
        associations start so (an offline NTS source's first NTS-KE waits for online).
        Whether that changed anything (``was_offline``: how they would have started)."""
        cfg = self._source_configs[name]
        self._remember(name, online, unplaced=True)
        waiting = self._waiting.get(name)  # an offline NTS source before its first NTS-KE
        if online and waiting is not None and not waiting.is_set():
            waiting.set()
            return True
        return was_offline != self._starts_offline(cfg)

    def _set_everything(self, online: bool) -> None:
        """``online`` or ``offline`` with no selector: sources mobilized later start so too
        (``offline = true`` ones included, after an ``online``)."""
        self._all_offline = not online
        if online:
            self._onlined.update(self._source_configs)  # also those not mobilized yet
            self._offlined.clear()

    def _remember(self, source: str, online: bool, *, unplaced: bool = False) -> None:
        """How associations of ``source`` made later start: online after an ``online`` that
        covered it; offline after an ``offline`` that selected it while it had none (one
        member of a pool taken offline leaves its replacements as they were)."""
        if online:
            self._onlined.add(source)
            self._offlined.discard(source)
        else:
            self._onlined.discard(source)
            if unplaced:
                self._offlined.add(source)

    async def _stop_source(self, name: str) -> list[str]:
        # A source added again later (tsyncctl add, a reload of a changed table) starts as its
        # options say: neither an "offline" nor an "online" of the old one carries over.
        self._offlined.discard(name)
        self._onlined.discard(name)
        return await super()._stop_source(name)

    def _rpc_offline(self, params: dict[str, Any]) -> dict[str, Any]:
        names = self._selected("offline", params)
        changed = self._set_online(names, False, everything=not params.get("sources"))
        return {"changed": changed, "selected": names}

    def _rpc_online(self, params: dict[str, Any]) -> dict[str, Any]:
        names = self._selected("online", params)
        changed = self._set_online(names, True, everything=not params.get("sources"))
        return {"changed": changed, "selected": names}

    async def _rpc_onoffline(self, params: dict[str, Any]) -> dict[str, Any]:
        """Each selected association online if there is a route to it, else offline; a source
        with no association yet by whether there is a route to an address of its name (an NTS
        source's: its NTS-KE server)."""
        names = self._selected("onoffline", params)
        routed: dict[str, bool] = {}
        for name in names:
            sock = self.sockets.get(name)
            if sock is not None:
                routed[name] = has_route(sock.ip, sock.peer)
            elif name in self._source_configs:
                routed[name] = await self._address_routed(self._source_configs[name])
        up = [name for name, ok in routed.items() if ok]
        down = [name for name, ok in routed.items() if not ok]
        self._set_online(up, True)
        self._set_online(down, False)
        return {"online": up, "offline": down}

    def _rpc_burst(self, params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl burst [SOURCE]...``: a quick burst of requests from the associations
        ``params["sources"]`` selects (every one when absent or empty), as chronyc burst;
        how many (a source with no association yet has nothing to burst), and ``skipped``:
        the selected sources that send nothing (a broadcast source only listens), with why.
        None burst at all is invalid params, as a selector matching no source is: chronyd
        answers both "513 No such source" (QA s19: tsyncctl said "0 source(s)" and exited 0)."""
        selected = self._selected("burst", params)
        names = [name for name in selected if name in self.core.sources]
        skipped = self.core.burst(self.clock.now_ns(), names)
        self._wake.set()
        # An NTS source whose NTS-KE is backing off tries again now.
        retried = [n for n in selected if n in self.nts_sources and self.nts_sources[n].retry_now()]
        started = {n for n in names if n not in skipped} | set(retried)
        if not started:
            raise InvalidParams(nothing_to_burst(selected, skipped))
        return {"sources": len(started), "skipped": skipped}

    async def _address_routed(self, cfg: SourceConfig) -> bool:
        """Whether any address of ``cfg``'s (for NTS: its NTS-KE server's) has a route (a name
        that cannot be resolved counts as none: polling, or the NTS-KE, would fail as well)."""
        host, port = cfg.address.host, cfg.address.port
        try:
            ips = await self._resolve(host, port)
        except OSError as exc:
            log.info("%s: onoffline: cannot resolve %s: %s", cfg.name, host, exc)
            return False
        return any(has_route(ip, (ip, port)) for ip in ips)

    def _rpc_activity(self, _params: dict[str, Any]) -> dict[str, Any]:
        """chronyc activity's counts: how many associations poll, burst, or wait offline, and
        how many sources have no address yet (resolving, or before their first NTS-KE)."""
        counts = dict.fromkeys(
            ("online", "offline", "burst_online", "burst_offline", "unknown_address"), 0
        )
        for state in self.core.sources.values():
            a = state.association
            kind = "online" if a.polled_online else "offline"  # a kiss-stopped one: offline
            counts[f"burst_{kind}" if a.bursting else kind] += 1
        counts["unknown_address"] = len(self._unplaced())
        return counts


def nothing_to_burst(selected: list[str], skipped: dict[str, str]) -> str:
    """Why a burst of the ``selected`` sources started none, ``skipped`` saying why for those
    that send nothing (the lines ``tsyncctl burst`` prints for them, on one line)."""
    why = [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    waiting = [name for name in selected if name not in skipped]
    if waiting:
        why.append(f"not polling yet (no address, or NTS-KE not done): {', '.join(waiting)}")
    return f"burst: no source to burst ({'; '.join(why) or 'no sources'})"
