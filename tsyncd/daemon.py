"""The daemon: builds the parts from the config, runs them on one event loop, and stops cleanly.

Data flows one way (ARCHITECTURE.md): sources hand samples to their filters and poke
``_schedule_update``; one coalesced update asks the system process for a decision, applies it to
the clock backend, and refreshes the servers' response template.  Control and metrics read only
snapshots built here.  A one-second housekeeping tick keeps root dispersion growing, reach states
current and the systemd watchdog fed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

from tsyncd import __version__
from tsyncd.clock.base import Clock, ClockState
from tsyncd.config import Config, ConfigErrors, SourceConfig, load_config
from tsyncd.control.server import ControlServer
from tsyncd.metrics import MetricsExporter
from tsyncd.sdnotify import Notifier
from tsyncd.servers.ntp import NtpServer
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.snapshots import ServerStatsSnapshot, SourceSnapshot, SystemSnapshot
from tsyncd.sources.ntp import NtpSource
from tsyncd.sync.system import SystemDecision, SystemProcess
from tsyncd.wire.ntp import Leap, refid_to_str
from tsyncd.wire.timestamps import ntp64_from_unix_ns, short_from_ns

log = logging.getLogger(__name__)

_STEP_THRESHOLD_NS: Final = 128_000_000  # ntpd's CLOCK_MAX, RFC 5905 STEPT (appendix)
_STEP_LIMIT: Final = 3  # step only in the first few clock updates (chrony's makestep 0.128 3)
_RESOLVE_RETRY_S: Final = 30.0
_LEAP_NAMES: Final = {0: "none", 1: "insert", 2: "delete", 3: "unsynchronized"}


def measure_precision_log2(now_ns: Any = time.time_ns) -> int:
    """RFC 5905 precision: log2 of the larger of clock resolution and the time to read it."""
    smallest = 1 << 62
    for _ in range(64):
        a = now_ns()
        b = now_ns()
        while b == a:
            b = now_ns()
        smallest = min(smallest, b - a)
    return math.ceil(math.log2(smallest * 1e-9))


@dataclass(frozen=True, slots=True)
class _Applied:
    """The last sample that reached the clock, so each is used once."""

    source: str
    rx_ns: int


class Daemon:
    """A configured tsyncd; ``await run()`` until ``stop()`` (or a signal)."""

    def __init__(self, config: Config, clock: Clock, notifier: Notifier | None = None) -> None:
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.precision_log2 = measure_precision_log2(clock.now_ns)
        self.system = SystemProcess(
            local_stratum=config.synchronization.local_stratum,
            min_sources=config.synchronization.min_sources,
        )
        self.sources: list[NtpSource] = []
        self.servers: list[NtpServer] = []
        self.control: ControlServer | None = None
        self.metrics: MetricsExporter | None = None
        self.decision: SystemDecision = self.system.choose([], clock.now_ns())
        self._rng = random.Random()
        self._started_ns = clock.now_ns()
        self._stop = asyncio.Event()
        self._update_pending = False
        self._last_applied: _Applied | None = None
        self._clock_updates = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._last_status = ""

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind every socket and start every task; raises OSError if a socket cannot be bound."""
        loop = asyncio.get_running_loop()
        for server_cfg in self.config.servers:
            responder = NtpResponder(AccessList(server_cfg.allow, server_cfg.deny))
            server = NtpServer.create(
                server_cfg.listen.host,
                server_cfg.listen.port,
                responder.access,
                self.clock.now_ns,
                responder=responder,
            )
            self.servers.append(server)
            log.info("serving NTP on %s", server.listen)
        for source_cfg in self.config.sources:
            self._tasks.append(loop.create_task(self._mobilize(source_cfg)))
        self.control = ControlServer(
            self.config.control.socket,
            read_methods={
                "status": lambda _p: self.system_snapshot(),
                "sources": lambda _p: self.source_snapshots(),
                "serverstats": lambda _p: self.server_snapshot(),
                "version": lambda _p: {"version": __version__},
            },
            admin_methods={},
            group=self.config.control.group,
            admin_group=self.config.control.admin_group,
        )
        await self.control.start()
        if self.config.metrics.listen is not None:
            self.metrics = MetricsExporter(
                self, self.config.metrics.listen.host, self.config.metrics.listen.port
            )
            await self.metrics.start()
            log.info("metrics on http://%s/metrics", self.config.metrics.listen)
        self._update()
        self._tasks.append(loop.create_task(self._housekeeping()))
        self.notifier.ready(self._status_line())

    async def run(self) -> None:
        """Start, serve until stopped, then close everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            await self.close()

    def stop(self) -> None:
        """Ask ``run`` to return (signal-safe)."""
        log.info("stopping")
        self._stop.set()

    async def close(self) -> None:
        """Close sockets and tasks; safe to call more than once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for source in self.sources:
            await source.close()
        for server in self.servers:
            server.close()
        if self.control is not None:
            await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply the log level, report what needs a restart."""
        self.notifier.reloading()
        try:
            new = load_config(self.config.path)
        except ConfigErrors as exc:
            log.error("reload failed, keeping the running configuration:\n%s", exc)
        else:
            logging.getLogger().setLevel(new.log.level.upper())
            changed = [
                name
                for name in ("clock", "synchronization", "sources", "servers", "control", "metrics")
                if getattr(new, name) != getattr(self.config, name)
            ]
            if changed:
                log.warning(
                    "reloaded %s; changes to %s take effect after a restart",
                    self.config.path,
                    ", ".join(changed),
                )
            else:
                log.info("reloaded %s", self.config.path)
        self.notifier.ready(self._status_line())

    # ---------------------------------------------------------------- sources

    async def _mobilize(self, cfg: SourceConfig) -> None:
        """Resolve a source's address (retrying) and start its association(s)."""
        host, port = cfg.address.host, cfg.address.port
        while True:
            try:
                ips = await self._resolve(host, port)
            except OSError as exc:
                log.warning("cannot resolve %s: %s; retrying", cfg.name, exc)
                await asyncio.sleep(_RESOLVE_RETRY_S)
                continue
            break
        wanted = ips[: cfg.count] if cfg.mode == "pool" else ips[:1]
        for ip in wanted:
            name = cfg.name if cfg.mode == "server" else _join_host_port(ip, port)
            source = NtpSource(
                name=name,
                mode=cfg.mode,
                ip=ip,
                port=port,
                min_poll=cfg.min_poll,
                max_poll=cfg.max_poll,
                iburst=cfg.iburst,
                clock=self.clock,
                precision_log2=self.precision_log2,
                rng=self._rng,
                on_update=self._schedule_update,
            )
            source.start()
            self.sources.append(source)
            log.info("polling %s (%s)", name, source.address)

    @staticmethod
    async def _resolve(host: str, port: int) -> list[str]:
        """IP literals need no resolver thread; names go through getaddrinfo."""
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
        )
        ips: list[str] = []
        for info in infos:
            ip = str(info[4][0])
            if ip not in ips:
                ips.append(ip)
        if not ips:
            raise OSError(f"no addresses for {host}")
        return ips

    # ---------------------------------------------------------------- the system process

    def _schedule_update(self) -> None:
        """Coalesce bursts of source events into one update on the next loop turn."""
        if not self._update_pending:
            self._update_pending = True
            asyncio.get_running_loop().call_soon(self._update)

    def _update(self) -> None:
        self._update_pending = False
        now = self.clock.now_ns()
        previous = self.decision
        self.decision = d = self.system.choose([s.candidate() for s in self.sources], now)
        if d.selected != previous.selected:
            if d.selected:
                log.info("selected source %s (stratum %d)", d.selected, d.stratum - 1)
            else:
                log.warning("no source selected: %s", d.reason)
        if d.synchronized and d.selected is not None and d.reference_time_ns is not None:
            applied = _Applied(d.selected, d.reference_time_ns)
            if applied != self._last_applied:
                self._last_applied = applied
                self._correct_clock(d)
        template = ResponseTemplate(
            leap=Leap(d.leap),
            stratum=d.stratum if d.stratum < 16 else 0,
            precision=self.precision_log2,
            root_delay=short_from_ns(d.root_delay_ns),
            root_dispersion=short_from_ns(d.root_dispersion_ns),
            reference_id=d.reference_id,
            reference_ts=ntp64_from_unix_ns(d.reference_time_ns or now)
            if d.synchronized or self.system.local_stratum is not None
            else 0,
        )
        for server in self.servers:
            server.responder.template = template
        status = self._status_line()
        if status != self._last_status:
            self._last_status = status
            self.notifier.status(status)

    def _correct_clock(self, d: SystemDecision) -> None:
        """Hand one new offset to the clock backend (a no-op in measure mode)."""
        self._clock_updates += 1
        step = abs(d.offset_ns) > _STEP_THRESHOLD_NS and self._clock_updates <= _STEP_LIMIT
        try:
            done = self.clock.correct(d.offset_ns, step_allowed=step)
        except OSError as exc:
            log.error("cannot adjust the clock: %s", exc)
            return
        if done != "none":
            log.info("clock %s by %+.6f s", done, d.offset_ns * 1e-9)
            # The old samples measured a clock that no longer exists.
            for source in self.sources:
                source.filter.clear()
        with contextlib.suppress(OSError):
            self.clock.publish_state(
                ClockState(
                    synchronized=True,
                    max_error_ns=d.root_delay_ns // 2 + d.root_dispersion_ns,
                    est_error_ns=d.jitter_ns,
                    leap=d.leap,
                )
            )

    async def _housekeeping(self) -> None:
        interval = self.notifier.watchdog_interval_s()
        tick = 1.0 if interval is None else min(1.0, interval / 2)
        while True:
            await asyncio.sleep(tick)
            self._update()
            self.notifier.watchdog()

    def _status_line(self) -> str:
        d = self.decision
        if d.synchronized:
            return f"synchronized to {d.selected}, stratum {d.stratum}"
        return f"not synchronized: {d.reason}"

    # ---------------------------------------------------------------- snapshots

    def system_snapshot(self) -> SystemSnapshot:
        """The system variables as control and metrics show them."""
        d = self.decision
        now = self.clock.now_ns()
        return SystemSnapshot(
            synchronized=d.synchronized,
            unsynchronized_reason=d.reason,
            clock_mode=self.clock.mode,
            stratum=d.stratum,
            reference_id=refid_to_str(d.reference_id, 1 if d.selected is None else d.stratum),
            reference_id_raw=d.reference_id,
            reference_time=d.reference_time_ns * 1e-9 if d.reference_time_ns else None,
            offset=d.offset_ns * 1e-9,
            root_delay=d.root_delay_ns * 1e-9,
            root_dispersion=d.root_dispersion_ns * 1e-9,
            leap=_LEAP_NAMES[d.leap],
            poll=min((s.association.poll for s in self.sources), default=6),
            precision=self.precision_log2,
            selected_source=d.selected,
            uptime=(now - self._started_ns) * 1e-9,
        )

    def source_snapshots(self) -> list[SourceSnapshot]:
        """Every association, in configuration order."""
        return [s.snapshot(self.decision.states.get(s.name, "init")) for s in self.sources]

    def server_snapshot(self) -> ServerStatsSnapshot:
        """Counters summed over every NTP server socket."""
        drops: dict[str, int] = {}
        for server in self.servers:
            for reason, count in server.responder.drops_by_reason().items():
                drops[reason] = drops.get(reason, 0) + count
        return ServerStatsSnapshot(
            listen=[s.listen for s in self.servers],
            received=sum(s.responder.received for s in self.servers),
            sent=sum(s.responder.sent for s in self.servers),
            dropped=sum(s.responder.dropped for s in self.servers),
            dropped_by_reason=drops,
        )


def _join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
