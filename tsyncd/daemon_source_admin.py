"""Sources added and removed while the daemon runs (``tsyncctl add`` / ``tsyncctl delete``, as
``chronyc add server`` / ``chronyc delete``).

Every source, from the config file or added later, runs as one task kept by name; the task
kind per mode is the one start-up uses (``_start_source``).  A source may create several
associations (a pool one per member, named "ip:port"), so each association remembers the
source that made it, and removing a source removes exactly those.  An added source is checked
by the config file's own rules (``config.parse_source``) and is not written to the config file:
it is gone after a restart, as with chronyc.

SIGHUP applies the config file's ``[[source]]`` tables the same way (``_reload_sources``): a
table gone from the file stops its source, a new one starts, a changed one restarts; sources
added at run time stay, as with ``chronyc reload sources``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from tsyncd.config import Config, ConfigErrors, Endpoint, SourceConfig, address_user, parse_source
from tsyncd.control.rpc import ErrorCode, InvalidParams, RpcError
from tsyncd.daemon_sources import SourceMobilizer
from tsyncd.kiss_log import KissLog
from tsyncd.net.udp import is_ip_literal
from tsyncd.servers.tsq_setup import require_aioquic
from tsyncd.source_selectors import Association, select_associations
from tsyncd.sync.core import SourceState

log = logging.getLogger("tsyncd.daemon")

_CANCEL_WAIT_S: Final = 5.0  # a cancelled source task ends at once; this bounds a lost cancel


class SourceAdmin(SourceMobilizer):
    """Per-source tasks by name, and the ``add_source`` / ``remove_source`` control methods."""

    _source_configs: dict[str, SourceConfig]  # every running source, by name
    _source_tasks: dict[str, asyncio.Task[None]]  # its mobilizing task (may have finished)
    _association_source: dict[str, str]  # association name -> the source that created it
    _reload_task: asyncio.Task[dict[str, Any]] | None  # the last reload's source changes
    _not_started: set[str]  # file sources a reload could not start: tried at every reload

    def _init_source_admin(self) -> None:
        self._source_configs = {}
        self._source_tasks = {}
        self._association_source = {}
        self._refresh_events = {}
        self._nts_tallies = {}
        self._address_waits = {}
        self._resolve_failures = {}
        self._pool_shortfalls = {}
        self._kiss_log = KissLog()
        self._reload_task = None
        self._not_started = set()

    def _start_source(self, cfg: SourceConfig) -> None:
        """Start ``cfg``'s task, the same kind for a source from the file or one added later."""
        mobilize = self._mobilize_tsq if cfg.mode == "tsq" else self._mobilize
        self._source_configs[cfg.name] = cfg
        self._source_tasks[cfg.name] = asyncio.get_running_loop().create_task(
            mobilize(cfg), name=f"source {cfg.name}"
        )

    async def _stop_sources(self) -> None:
        """Cancel every source's task (the daemon closes their sockets afterwards)."""
        if self._reload_task is not None:
            await _cancel([self._reload_task])  # first: it may start sources
        tasks = list(self._source_tasks.values())
        self._source_tasks.clear()
        await _cancel(tasks)

    def _add_association(
        self, cfg: SourceConfig, ip: str, name: str, port: int | None = None
    ) -> SourceState | None:
        state = super()._add_association(cfg, ip, name, port)
        if state is not None:
            self._association_source[name] = cfg.name
        return state

    def _remove_association(self, name: str) -> None:
        super()._remove_association(name)
        self._association_source.pop(name, None)

    def _addresses_in_use(self) -> dict[Endpoint | SourceConfig, str]:
        """Who uses which address: the sources, pool members (whose names are "ip:port"), the
        address a server given by name polls, and the NTP server an NTS source's NTS-KE named."""
        in_use: dict[Endpoint | SourceConfig, str] = {
            cfg: f"source {name}" for name, cfg in self._source_configs.items()
        }
        for name, owner in self._association_source.items():
            sock = self.sockets.get(name)
            cfg = self._source_configs.get(owner)
            if sock is None or cfg is None:
                continue
            if owner != name:
                in_use.setdefault(Endpoint(sock.ip, sock.port), f"{name}, a member of {owner}")
            elif cfg.mode == "server" and not is_ip_literal(cfg.address.host):
                in_use.setdefault(
                    Endpoint(sock.ip, sock.port),
                    f"source {name}, which polls it as an address of {cfg.address.host}",
                )
            elif cfg.mode == "nts":
                in_use.setdefault(
                    Endpoint(sock.ip, sock.port),
                    f"source {name}, which polls it as the NTP server its NTS-KE named",
                )
        return in_use

    def _server_ports(self) -> set[int]:
        return {server.listen.port for server in self.config.servers}

    def _rpc_add_source(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check ``params`` as a ``[[source]]`` table and start it; its name comes back."""
        try:
            keys = self.config.symmetric_keys if self.config.keys.file is not None else None
            cfg = parse_source(params, self._addresses_in_use(), keys=keys)
        except ConfigErrors as exc:
            # One line for tsyncctl; each error, as the config file reports it, in ``data``.
            lines = [str(e) for e in exc.errors]
            raise RpcError(ErrorCode.INVALID_PARAMS, "; ".join(lines), {"errors": lines}) from None
        problem = self._cannot_start_now(cfg)
        if cfg.name in self._source_configs or cfg.name in self.sockets:
            key = "name" if "name" in params else "address"
            problem = (
                f"source.{key} = {cfg.name!r}: expected a name no other source has"
                " (give it its own name = ...)"
            )
        if problem:
            raise InvalidParams(f"add_source: {problem}")
        self._start_source(cfg)
        log.info("source %s (%s) added at run time", cfg.name, cfg.mode)
        return {"name": cfg.name}

    async def _rpc_remove_source(self, params: dict[str, Any]) -> dict[str, Any]:
        """Stop source ``params["name"]`` (a source's name, or a selector of ``tsyncctl
        offline`` that picks one source's own association: its IP address, a network),
        remove every association it made, re-select."""
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidParams('remove_source needs {"name": NAME}, a name tsyncctl sources shows')
        if name not in self._source_configs:
            name = self._one_source(name)
        removed = await self._stop_source(name)
        log.info("source %s removed at run time (%s)", name, ", ".join(removed) or "not mobilized")
        return {"name": name, "associations": removed}

    def _one_source(self, selector: str) -> str:
        """The source whose own association ``selector`` alone picks (``select_associations``),
        for ``remove_source``; else InvalidParams saying why: it picks none, a pool's member
        (the pool is removed by its name, with all its members), or several (chronyc's delete
        removes one source, and a network is easily wider than meant)."""
        picked, _ = select_associations([selector], self._associations())
        owners = {a: self._association_source.get(a, a) for a in picked}
        if len(picked) == 1 and owners[picked[0]] == picked[0]:
            return picked[0]
        known = ", ".join(sorted(self._source_configs)) or "none"
        if len(picked) > 1:
            listed = ", ".join(a if owners[a] == a else f"{a} of {owners[a]}" for a in picked)
            raise InvalidParams(
                f"remove_source: {selector!r} matches {len(picked)} sources ({listed});"
                " delete removes one: give its name"
            )
        hint = ""
        if picked:  # one pool member
            member, pool = picked[0], owners[picked[0]]
            hint = f"{member} is a member of {pool}: remove {pool}; "
        raise InvalidParams(f"remove_source: no source named {selector!r} ({hint}sources: {known})")

    def _associations(self) -> list[Association]:
        """What selectors pick from: the running associations, and the sources that have none
        yet (a name not resolved, every address in use, before the first NTS-KE), by their
        configured names."""
        running = [
            Association(name, self._association_source.get(name, name), sock.ip)
            for name, sock in self.sockets.items()
            if name in self.core.sources
        ]
        return running + [Association(name, name, "") for name in self._unplaced()]

    def _unplaced(self) -> list[str]:
        """The sources that have no association yet."""
        owners = {self._association_source.get(name, name) for name in self.core.sources}
        return [name for name in self._source_configs if name not in owners]

    def _rpc_refresh(self, params: dict[str, Any]) -> dict[str, Any]:
        """Resolve every pool's, server's and NTS source's name again now, as chronyc refresh
        (or those ``params["sources"]`` names: each a source's name, its address as configured,
        or the host alone): a server moves if its name no longer gives its address, a pool
        replaces members DNS no longer gives, an NTS source runs NTS-KE again if the name no
        longer gives the NTS-KE server its keys came from.  Each logs what it did."""
        wanted = params.get("sources", [])
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise InvalidParams('refresh takes {"sources": [NAME, ...]} (or nothing: all)')
        named = [name for name in self._source_configs if name in self._refresh_events]
        if wanted:
            by = {name: _refresh_keys(self._source_configs[name]) for name in named}
            unmatched = [w for w in wanted if not any(w in keys for keys in by.values())]
            if unmatched:
                raise InvalidParams(
                    f"refresh: no source given by name matches {', '.join(unmatched)}"
                    f" (sources given by name: {', '.join(named) or 'none'})"
                )
            named = [name for name in named if any(w in by[name] for w in wanted)]
        for name in named:
            self._refresh_events[name].set()
        return {"sources": named}

    def _schedule_source_reload(
        self, old: tuple[SourceConfig, ...], new: Config
    ) -> asyncio.Task[dict[str, Any]]:
        """Apply a reloaded file's sources in a task, after the previous reload's."""
        previous = self._reload_task

        async def reload() -> dict[str, Any]:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            return await self._reload_sources(old, new)

        task = asyncio.get_running_loop().create_task(reload(), name="reload")
        self._reload_task = task
        return task

    async def _reload_sources(self, old: tuple[SourceConfig, ...], new: Config) -> dict[str, Any]:
        """Make the running sources from the file match ``new``'s (``old``: the file's sources
        as last applied); sources added at run time are left alone.  What changed: names of
        the sources stopped and started, and of those not started with the reason."""
        before = {cfg.name: cfg for cfg in old}
        after = {cfg.name: cfg for cfg in new.sources}
        if before and not after:  # a truncated file reads as valid: say what it does
            log.warning("%s has no [[source]] now: stopping every source it had", new.path)
        done: dict[str, Any] = {"stopped": [], "started": [], "not_started": []}
        for name, cfg in before.items():
            if after.get(name) != cfg and self._source_configs.get(name) == cfg:
                removed = await self._stop_source(name)
                done["stopped"].append(name)
                log.info(
                    "source %s stopped: %s (%s)", name, _WHY[name in after], ", ".join(removed)
                )
        self._not_started &= set(after)
        for name, cfg in after.items():
            unchanged = before.get(name) == cfg and name not in self._not_started
            if unchanged or self._source_configs.get(name) == cfg:
                continue  # unchanged, or added at run time just as the file now has it
            problem = self._cannot_start(cfg)
            if problem:
                # Tried again at the next reload, changed or not (as chronyd treats a source
                # it could not add as not there): the conflict may be gone by then.
                self._not_started.add(name)
                done["not_started"].append({"name": name, "reason": problem})
                log.error("%s: source %s not started: %s", new.path, name, problem)
                continue
            self._not_started.discard(name)
            self._start_source(cfg)
            done["started"].append(name)
            log.info("source %s (%s) started from %s", name, cfg.mode, new.path)
        return done

    def _cannot_start(self, cfg: SourceConfig) -> str | None:
        """Why a source from a reloaded file cannot start now (what ``add_source`` checks)."""
        running = self._source_configs.get(cfg.name)
        if running is not None:
            return f"{cfg.name} runs already (added at run time: tsyncctl delete it first)"
        in_use = self._addresses_in_use()
        used = address_user(cfg, in_use)
        if used is not None:
            return f"its address is in use by {used}"
        # tsyncctl add has parse_source check this; a reloaded table, the same rule here.
        from tsyncd.config_names import name_clash_error, selector_clash  # read-time modules

        clash = next((who for other, who in in_use.items() if selector_clash(cfg, other)), None)
        if clash is not None:
            return name_clash_error(cfg.name, clash)
        return self._cannot_start_now(cfg)

    def _cannot_start_now(self, cfg: SourceConfig) -> str | None:
        """Why a valid source cannot start while the daemon runs, for ``add_source`` and a
        reload alike: a peer on a server's port, TSQ without aioquic."""
        if cfg.mode == "peer" and cfg.local_port in self._server_ports():
            # A server shares its port with a peer only when both are in the config file at
            # start-up (the socket is then bound with SO_REUSEPORT); now the bind would fail.
            return (
                f"source.local-port = {cfg.local_port}: expected a port no [[server]] listens"
                " on (a peer sharing a server's port must be in the config file)"
            )
        if cfg.mode == "tsq":
            try:
                require_aioquic(Config(path=self.config.path, sources=(cfg,)))
            except OSError as exc:
                return str(exc)
        return None

    async def _stop_source(self, name: str) -> list[str]:
        """Stop running source ``name``: its task, its associations (their names returned)."""
        task = self._source_tasks.pop(name, None)
        await _cancel([task] if task is not None else [])
        # Forgotten only now: until its task has stopped, its address is still in use.
        self._source_configs.pop(name, None)
        self._refresh_events.pop(name, None)
        self._address_waits.pop(name, None)
        self._resolve_failures.pop(name, None)
        self._pool_shortfalls.pop(name, None)
        nts = self.nts_sources.pop(name, None)
        if nts is not None:
            nts.association = None
            nts.save()  # its cookies, should it be added again (as at a clean exit)
        # Associations not in the map (TSQ) are named after their source.
        removed = [
            a
            for a in {**dict.fromkeys(self.sockets), **dict.fromkeys(self.core.sources)}
            if self._association_source.get(a, a) == name
        ]
        for association in removed:
            self._remove_association(association)
        self._after_update()
        self._wake.set()
        return removed


_WHY = {True: "changed in the config file", False: "gone from the config file"}


def _refresh_keys(cfg: SourceConfig) -> set[str]:
    """What ``tsyncctl refresh NAME`` picks source ``cfg`` by: its name, its address as
    host:port, and the host alone."""
    return {cfg.name, str(cfg.address), cfg.address.host}


async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they are done, at most ``_CANCEL_WAIT_S``: a task that
    does not end then (a cancellation lost somewhere) is logged and left, so the delete or
    reload waiting here still answers.  Their own errors are logged, not raised."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=_CANCEL_WAIT_S)
    for task in pending:
        log.error("source task %s did not end when cancelled; left running", task.get_name())
    for task in done:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("source task failed: %r", exc)
