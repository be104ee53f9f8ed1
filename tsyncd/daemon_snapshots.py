"""The read-only views of a running daemon that control and metrics serve (ARCHITECTURE.md,
"Control reads snapshots"): each builds a frozen snapshot from the live parts, and nothing
else reads them.  ``Daemon`` inherits these; the attributes below are what they read.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from tsyncd.net.udp import normalize_ip
from tsyncd.servers.stats import distinct_clients, merge_client_rows, server_stats
from tsyncd.servers.tsq_setup import tsq_server_snapshots
from tsyncd.snapshots import (
    ClientSnapshot,
    ServerStatsSnapshot,
    SourceSnapshot,
    SourceStatsSnapshot,
    SystemSnapshot,
    TrackingSnapshot,
    pending_source_snapshot,
)
from tsyncd.sync.leap import kernel_leap
from tsyncd.sync.system import NO_SOURCES
from tsyncd.wire.ntp import refid_for_address, refid_to_str

if TYPE_CHECKING:
    from tsyncd.clock.base import Clock
    from tsyncd.config import Config, SourceConfig
    from tsyncd.servers.ntp import NtpServer
    from tsyncd.servers.nts import NtsServerSide
    from tsyncd.servers.workers import WorkerPool
    from tsyncd.sources.ntp import NtpSourceSocket
    from tsyncd.sources.nts import NtsSource
    from tsyncd.sync.core import SyncCore
    from tsyncd.sync.discipline import Discipline
    from tsyncd.sync.system import SelectData

_LEAP_NAMES: Final = {0: "none", 1: "insert", 2: "delete", 3: "unsynchronized"}


class SnapshotViews:
    """Snapshot builders over the daemon's parts."""

    core: SyncCore
    clock: Clock
    discipline: Discipline
    precision_log2: int
    sockets: dict[str, NtpSourceSocket]
    servers: list[NtpServer | WorkerPool]
    tsq_servers: list[Any]
    nts: NtsServerSide | None
    nts_sources: dict[str, NtsSource]
    _waiting: dict[str, asyncio.Event]  # offline NTS sources before their first NTS-KE
    _address_waits: dict[str, str]  # servers by name polling nothing (addresses in use) -> why
    _resolve_failures: dict[str, str]  # source -> why its name did not resolve last time
    _pool_shortfalls: dict[str, str]  # pool -> why it has too few members after resolving
    _association_source: dict[str, str]  # association name -> the source that made it
    _source_configs: dict[str, SourceConfig]
    _started_ns: int
    config: Config

    if TYPE_CHECKING:  # the daemon's own (daemon_connectivity); declared for the type checker

        def _starts_offline(self, cfg: SourceConfig) -> bool: ...

        def _unplaced(self) -> list[str]: ...

        def _resolving(self) -> list[str]: ...

    def effective_leap(self, now_ns: int) -> int:
        """The leap we announce and arm the kernel for (0 none, 1 insert, 2 delete, 3 alarm).

        While ``[synchronization] leap-seconds-file`` is current, it decides: it knows the
        leaps to come better than sources (several of which may not announce them), and a
        server on its own clock has nothing else.  Expired, or while we are unsynchronized
        (the alarm), the system peer's word stands, but as chronyd's, only on a day a leap
        can end (30 June, 31 December; RFC 5905: LI warns of a leap "in the last minute of
        the current day"): servers that announce a month ahead are not passed on early, and
        a reply from before midnight does not announce the leap that has just happened."""
        leap = self.core.decision.leap
        table = self.config.leap_table
        if leap == 3:
            return leap
        if table is None or table.expired(now_ns):
            return kernel_leap(leap, now_ns)
        return int(table.leap_today(now_ns))

    def _unsynchronized_reason(self) -> str | None:
        """The sync core's reason for being unsynchronized (None if it is not), except that
        where it sees no sources while sources are configured with nothing to poll yet, it
        says how many wait and for what: "no sources configured" would send an operator
        looking for a config file that is fine.  A pool that resolved but whose addresses
        other sources poll waits for no resolution (QA s21 hunt-nts #4)."""
        reason = self.core.decision.reason
        unplaced = len(self._unplaced())
        if reason is None or not reason.startswith(NO_SOURCES) or not unplaced:
            return reason
        resolving = len([n for n in self._resolving() if not self._pool_shortfalls.get(n)])
        waits = [
            f"{resolving} source(s) waiting for name resolution" if resolving else "",
            f"{unplaced - resolving} source(s) not polling yet (tsyncctl sources says why)"
            if unplaced > resolving
            else "",
        ]
        return reason.replace(NO_SOURCES, "; ".join(w for w in waits if w), 1)

    def system_snapshot(self) -> SystemSnapshot:
        """The system variables as control and metrics show them."""
        d = self.core.decision
        now = self.clock.now_ns()
        return SystemSnapshot(
            synchronized=d.synchronized,
            unsynchronized_reason=self._unsynchronized_reason(),
            clock_mode=self.clock.mode,
            stratum=d.stratum,
            reference_id=refid_to_str(d.reference_id, 1 if d.selected is None else d.stratum),
            reference_id_raw=d.reference_id,
            reference_time=d.reference_time_ns * 1e-9 if d.reference_time_ns else None,
            offset=d.offset_ns * 1e-9,
            root_delay=d.root_delay_ns * 1e-9,
            root_dispersion=d.root_dispersion_ns * 1e-9,
            leap=_LEAP_NAMES[self.effective_leap(self.clock.now_ns())],
            poll=self.core.system_poll(),
            precision=self.precision_log2,
            selected_source=d.selected,
            uptime=(now - self._started_ns) * 1e-9,
            reference_address=self._reference_address(),
        )

    def tracking_snapshot(self) -> TrackingSnapshot:
        """The discipline's state, like chronyc tracking."""
        d = self.core.decision
        disc = self.discipline.snapshot()
        return TrackingSnapshot(
            synchronized=d.synchronized,
            unsynchronized_reason=self._unsynchronized_reason(),
            clock_mode=self.clock.mode,
            reference_id=refid_to_str(d.reference_id, 1 if d.selected is None else d.stratum),
            stratum=d.stratum,
            reference_time=d.reference_time_ns * 1e-9 if d.reference_time_ns else None,
            system_offset=d.offset_ns * 1e-9,
            last_offset=disc.last_offset_ns * 1e-9,
            rms_offset=disc.rms_offset_ns * 1e-9,
            residual_offset=disc.residual_offset_ns * 1e-9,
            frequency_ppm=disc.frequency_ppm,
            skew_ppm=self.core.reference_skew_ppm(self.clock.now_ns()),
            applied_frequency_ppm=self.clock.frequency_ppm,
            host_clock_offset=(d.offset_ns + self.clock.host_offset_ns()) * 1e-9,
            root_delay=d.root_delay_ns * 1e-9,
            root_dispersion=d.root_dispersion_ns * 1e-9,
            update_interval=self.core.update_interval_ns * 1e-9
            if self.core.update_interval_ns is not None
            else None,
            clock_updates=self.core.clock_updates,
            discipline_state=disc.state,
            leap=_LEAP_NAMES[self.effective_leap(self.clock.now_ns())],
            poll=self.core.system_poll(),
            reference_id_raw=d.reference_id,
            selected_source=d.selected,
            reference_address=self._reference_address(),
        )

    def _reference_address(self) -> str | None:
        """The system peer's IP address if the reference ID is made from it (RFC 5905 §7.3),
        else None: tsyncctl shows it as chronyc does, since an IPv6 address's refid is a hash
        that reads as an unrelated IPv4 address."""
        d = self.core.decision
        sock = self.sockets.get(d.selected) if d.selected is not None else None
        if sock is None or not sock.ip or refid_for_address(sock.ip) != d.reference_id:
            return None
        return str(normalize_ip(sock.ip))

    def source_snapshots(self) -> list[SourceSnapshot]:
        """Every association, in the order they were mobilized."""
        now = self.clock.now_ns()
        d = self.core.decision
        snapshots = [
            sock.snapshot(
                self.core.sources[name],
                d.states.get(name, "init"),
                getattr(d, "reasons", {}).get(name),
                now,
            )
            for name, sock in self.sockets.items()
            if name in self.core.sources
        ]
        snapshots = [
            dataclasses.replace(s, nts=self.nts_sources[s.name].snapshot())
            if s.name in self.nts_sources
            else s
            for s in snapshots
        ]
        snapshots = [_with_selection(s, d.selection.get(s.name)) for s in snapshots]
        snapshots = [
            dataclasses.replace(
                s,
                drops_by_reason=self._drops_by_reason(s.name),
                source=self._association_source.get(s.name, s.name),
            )
            for s in snapshots
        ]
        # Sources that poll nothing yet: shown, with why they wait.
        snapshots.extend(
            pending_source_snapshot(
                name,
                cfg.mode,
                why,
                cfg.min_poll,
                select_code="?",  # every address it could poll is another source's
                online=not self._starts_offline(cfg),
            )
            for name, why in self._address_waits.items()
            if name not in self.sockets and (cfg := self._source_configs.get(name)) is not None
        )
        snapshots.extend(
            nts.pending_snapshot()
            if name not in self._waiting
            else dataclasses.replace(
                nts.pending_snapshot(),
                online=False,
                state_reason="offline: its NTS-KE waits for tsyncctl online",
            )
            for name, nts in self.nts_sources.items()
            if name not in self.sockets
        )
        # Sources whose names do not resolve (yet): shown, not left out as if not configured.
        snapshots.extend(
            pending_source_snapshot(
                name,
                cfg.mode,
                self._resolving_note(cfg),
                cfg.min_poll,
                online=not self._starts_offline(cfg),
            )
            for name in self._resolving()
            if (cfg := self._source_configs.get(name)) is not None
        )
        return snapshots

    def _resolving_note(self, cfg: SourceConfig) -> str:
        """The Note of a source whose name has not resolved yet: the name, and why the last
        try failed (which the log says only after the resolver's retries); of a pool that
        resolved but could take none of the addresses, why (``run_pool``'s ``report``)."""
        shortfall = self._pool_shortfalls.get(cfg.name)
        if shortfall:  # resolved, but no address it gave could be taken
            return shortfall
        failure = self._resolve_failures.get(cfg.name)
        return f"resolving {cfg.address.host}" + (f" (last try: {failure})" if failure else "")

    def _drops_by_reason(self, name: str) -> dict[str, int]:
        """Source ``name``'s dropped replies by reason: its association's, and those from other
        addresses that its socket counted itself."""
        drops = dict(self.core.sources[name].association.stats.drops_by_reason)
        wrong = getattr(self.sockets.get(name), "wrong_address", 0)
        if wrong:
            drops["wrong_address"] = drops.get("wrong_address", 0) + wrong
        return drops

    def sourcestats_snapshots(self) -> list[SourceStatsSnapshot]:
        """Per-source sample statistics, like chronyc sourcestats."""
        now = self.clock.now_ns()
        out: list[SourceStatsSnapshot] = []
        for name, sock in self.sockets.items():
            state = self.core.sources.get(name)
            if state is None:
                continue
            samples = state.filter.samples()
            est = state.filter.output(now)
            rx = [s.local_rx_ns for s in samples]
            delays = [s.delay_ns for s in samples]
            line = state.history.regression(now)
            span_ns = state.history.span_ns()
            out.append(
                SourceStatsSnapshot(
                    name=name,
                    address=sock.address,
                    samples=len(samples),
                    span=(max(rx) - min(rx)) * 1e-9 if rx else None,
                    offset=est.sample.offset_ns * 1e-9 if est else None,
                    std_dev=est.jitter_ns * 1e-9 if est else None,
                    delay_min=min(delays) * 1e-9 if delays else None,
                    delay_max=max(delays) * 1e-9 if delays else None,
                    regression_samples=line.samples,
                    regression_span=_seconds(span_ns),
                    runs=line.runs,
                    frequency_ppm=line.frequency_ppm,
                    skew_ppm=line.skew_ppm,
                    estimated_offset=_seconds(line.offset_ns),
                    estimated_std_dev=_seconds(line.std_dev_ns),
                )
            )
        return out

    def clients_may_overlap(self) -> bool:
        """Whether one client can be in several client logs: with several server sockets, or
        workers that the kernel cannot steer by client IP."""
        return len(self.servers) > 1 or not all(s.steered for s in self.servers)

    def server_snapshot(self) -> ServerStatsSnapshot:
        """Counters summed over every NTP server socket (and its workers); ``clients`` counts
        each client once, from the client log keys the last refresh brought where clients
        may be in several logs (``clients_may_overlap``)."""
        stats = server_stats([s.listen for s in self.servers], [s.counters() for s in self.servers])
        if self.clients_may_overlap():
            stats = dataclasses.replace(
                stats, clients=distinct_clients(s.client_keys() for s in self.servers)
            )
        return dataclasses.replace(
            stats,
            tsq=tsq_server_snapshots(self.tsq_servers),
            **(self.nts.counters() if self.nts is not None else {}),  # type: ignore[arg-type]
        )

    def client_snapshots(self) -> list[ClientSnapshot]:
        """The server's clients, busiest first."""
        now = self.clock.now_ns()
        return _client_snapshots(row for server in self.servers for row in server.client_rows(now))

    def ke_client_snapshots(self) -> list[ClientSnapshot]:
        """The NTS-KE server's clients, busiest first (none without NTS-KE)."""
        servers = self.nts.ke_servers if self.nts is not None else []
        return _client_snapshots(row for server in servers for row in server.client_rows())


def _seconds(ns: float | None) -> float | None:
    return ns * 1e-9 if ns is not None else None


def _client_snapshots(rows: Iterable[Mapping[str, Any]]) -> list[ClientSnapshot]:
    return [ClientSnapshot(**row) for row in merge_client_rows(rows)]


def _with_selection(snapshot: SourceSnapshot, row: SelectData | None) -> SourceSnapshot:
    """``snapshot`` with what the last selection made of it (chronyc selectdata's row)."""
    if row is None:
        return snapshot
    interval = row.interval_ns
    return dataclasses.replace(
        snapshot,
        select_code=row.code,
        select_interval=None if interval is None else (interval[0] * 1e-9, interval[1] * 1e-9),
        select_age=None if row.age_ns is None else row.age_ns * 1e-9,
    )
