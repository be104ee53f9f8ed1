"""The daemon: builds the parts from the config, runs them on one event loop, and stops cleanly.

Data flows one way (ARCHITECTURE.md): source sockets hand replies to the sans-IO ``SyncCore``,
which filters, selects and disciplines and answers with clock actions; the daemon applies them to
the clock backend and refreshes the servers' response template.  One timer, re-armed from
``core.next_deadline_ns()``, drives polling and the discipline.  Control and metrics read only
snapshots built here.  A one-second housekeeping tick keeps root dispersion growing, reach states
current, the drift file fresh and the systemd watchdog fed.
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
from typing import TYPE_CHECKING, Any, Final

from tsyncd import __version__
from tsyncd.clock.base import Clock, ClockState
from tsyncd.config import Config, ConfigErrors, SourceConfig, load_config
from tsyncd.control.server import ControlServer
from tsyncd.sdnotify import Notifier
from tsyncd.servers.ntp import NtpServer
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.servers.stats import merge_client_rows, server_stats
from tsyncd.servers.workers import WorkerPool, start_server
from tsyncd.snapshots import (
    ClientSnapshot,
    ServerStatsSnapshot,
    SourceSnapshot,
    SourceStatsSnapshot,
    SystemSnapshot,
    TrackingSnapshot,
)
from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.sync.core import SyncCore
from tsyncd.sync.discipline import (
    ClockAction,
    Discipline,
    DisciplineConfig,
    Panic,
    SetFrequency,
    Step,
)
from tsyncd.sync.driftfile import read_drift, write_drift
from tsyncd.sync.leap import kernel_leap, leap_applied, utc_day
from tsyncd.sync.system import SystemDecision
from tsyncd.wire.ntp import Leap, refid_for_address, refid_to_str
from tsyncd.wire.timestamps import ntp64_from_unix_ns, short_from_ns

if TYPE_CHECKING:  # imported when [metrics] is configured: prometheus_client costs memory
    from tsyncd.metrics import MetricsExporter

log = logging.getLogger(__name__)

_RESOLVE_RETRY_S: Final = 30.0
_DRIFT_WRITE_INTERVAL_S: Final = 3600.0
_NS_PER_S: Final = 1_000_000_000
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


class Daemon:
    """A configured tsyncd; ``await run()`` until ``stop()`` (or a signal)."""

    def __init__(self, config: Config, clock: Clock, notifier: Notifier | None = None) -> None:
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.precision_log2 = measure_precision_log2(clock.now_ns)
        sync = config.synchronization
        drift_path = config.clock.drift_file
        drift = read_drift(drift_path) if drift_path is not None else None
        now = clock.now_ns()
        self.discipline = Discipline(
            DisciplineConfig(
                step_threshold_ns=round(sync.step_threshold * _NS_PER_S),
                step_limit=sync.step_limit,
                panic_threshold_ns=None
                if sync.panic_threshold is None
                else round(sync.panic_threshold * _NS_PER_S),
            ),
            initial_frequency_ppm=drift[0] if drift is not None else None,
            initial_skew_ppm=drift[1] if drift is not None else None,
            now_ns=now,
        )
        self.core = SyncCore(
            local_stratum=sync.local_stratum,
            min_sources=sync.min_sources,
            precision_log2=self.precision_log2,
            discipline=self.discipline,
            now_ns=now,
        )
        self.sockets: dict[str, NtpSourceSocket] = {}
        self.servers: list[NtpServer | WorkerPool] = []
        self.control: ControlServer | None = None
        self.metrics: MetricsExporter | None = None
        self._rng = random.Random()
        self._started_ns = now
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_status = ""
        self._last_selected: str | None = None
        self._panic_logged = False
        self._drift_written_ns = now
        self._leap_armed = 0  # leap passed to the kernel: 0 none, 1 insert, 2 delete
        self._leap_day = utc_day(now)

    @property
    def decision(self) -> SystemDecision:
        """The system process's latest decision."""
        return self.core.decision

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind every socket and start every task; raises OSError if a socket cannot be bound."""
        loop = asyncio.get_running_loop()
        for server_cfg in self.config.servers:
            template = self._response_template(self.clock.now_ns())
            server = start_server(server_cfg, self.clock, template)
            self.servers.append(server)
            log.info("serving NTP on %s", server.listen)
        for source_cfg in self.config.sources:
            self._tasks.append(loop.create_task(self._mobilize(source_cfg)))
        self.control = ControlServer(
            self.config.control.socket,
            read_methods={
                "status": lambda _p: self.system_snapshot(),
                "tracking": lambda _p: self.tracking_snapshot(),
                "sources": lambda _p: self.source_snapshots(),
                "sourcestats": lambda _p: self.sourcestats_snapshots(),
                "serverstats": self._rpc_serverstats,
                "clients": self._rpc_clients,
                "version": lambda _p: {"version": __version__},
            },
            admin_methods={"makestep": self._rpc_makestep, "burst": self._rpc_burst},
            group=self.config.control.group,
            admin_group=self.config.control.admin_group,
        )
        await self.control.start()
        if self.config.metrics.listen is not None:
            from tsyncd.metrics import MetricsExporter

            self.metrics = MetricsExporter(
                self, self.config.metrics.listen.host, self.config.metrics.listen.port
            )
            await self.metrics.start()
            log.info("metrics on http://%s/metrics", self.config.metrics.listen)
        self._after_update()
        self._tasks.append(loop.create_task(self._timer_loop()))
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
        """Close sockets and tasks, save the drift; safe to call more than once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._write_drift()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        for server in self.servers:
            server.close()
        self.servers.clear()
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None

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
            if name in self.sockets:
                continue
            sock = NtpSourceSocket(name=name, mode=cfg.mode, ip=ip, port=port)
            sock.open(self._on_reply)
            self.sockets[name] = sock
            self.core.add_source(
                name,
                reference_id=refid_for_address(sock.ip),
                min_poll=cfg.min_poll,
                max_poll=cfg.max_poll,
                iburst=cfg.iburst,
                rng=self._rng,
                now_ns=self.clock.now_ns(),
            )
            log.info("polling %s (%s)", name, sock.address)
        self._wake.set()

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

    def _on_reply(self, name: str, data: bytes, kernel_rx_ns: int) -> None:
        rx_ns = self.clock.from_kernel_ns(kernel_rx_ns)
        self._apply(self.core.handle_reply(name, data, rx_ns))
        self._after_update()
        self._wake.set()  # a reply can move deadlines (KoD RATE, poll changes)

    # ---------------------------------------------------------------- timer and clock

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline_ns()
            delay_s = 3600.0 if deadline is None else (deadline - self.clock.now_ns()) * 1e-9
            if delay_s > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay_s)
                continue
            self._run_timer()

    def _run_timer(self) -> None:
        requests, actions = self.core.handle_timer(self.clock.now_ns())
        for name, data in requests:
            sock = self.sockets.get(name)
            if sock is None:
                continue
            # T1 is read before the send: on loopback the kernel hands the datagram to the
            # server inside sendto, and the server may run (and answer) before we return.
            t1_ns = self.clock.now_ns()
            if sock.send(data):
                self.core.handle_sent(name, t1_ns)
        self._apply(actions)
        self._after_update()

    def _apply(self, actions: list[ClockAction]) -> None:
        """Carry the core's decisions out on the clock backend."""
        for action in actions:
            try:
                if isinstance(action, Step):
                    self.clock.step(action.offset_ns)
                    log.info("clock stepped by %+.6f s", action.offset_ns * 1e-9)
                elif isinstance(action, SetFrequency):
                    self.clock.set_frequency(action.ppm)
                elif isinstance(action, Panic) and not self._panic_logged:
                    self._panic_logged = True
                    log.error(
                        "not correcting an offset of %+.3f s: %s (tsyncctl makestep steps it)",
                        action.offset_ns * 1e-9,
                        action.reason,
                    )
            except OSError as exc:
                log.error("cannot adjust the clock: %s", exc)

    def _after_update(self) -> None:
        """Refresh what we serve and announce from the current decision."""
        now = self.clock.now_ns()
        d = self.core.decision
        if d.selected != self._last_selected:
            self._last_selected = d.selected
            if d.selected:
                log.info("selected source %s (stratum %d)", d.selected, d.stratum - 1)
            else:
                log.warning("no source selected: %s", d.reason)
        template = self._response_template(now)
        for server in self.servers:
            server.set_template(template)
        status = self._status_line()
        if status != self._last_status:
            self._last_status = status
            self.notifier.status(status)

    def _response_template(self, now: int) -> ResponseTemplate:
        """What the NTP servers answer with, from the system process's current decision."""
        d = self.core.decision
        return ResponseTemplate(
            leap=Leap(d.leap),
            stratum=d.stratum if d.stratum < 16 else 0,
            precision=self.precision_log2,
            root_delay=short_from_ns(d.root_delay_ns),
            root_dispersion=short_from_ns(d.root_dispersion_ns),
            reference_id=d.reference_id,
            reference_ts=ntp64_from_unix_ns(d.reference_time_ns or now)
            if d.synchronized or self.core.system.local_stratum is not None
            else 0,
        )

    async def _housekeeping(self) -> None:
        interval = self.notifier.watchdog_interval_s()
        tick = 1.0 if interval is None else min(1.0, interval / 2)
        while True:
            await asyncio.sleep(tick)
            self._run_timer()  # re-selects: root dispersion and reach age with time
            self._track_leap()
            d = self.core.decision
            with contextlib.suppress(OSError):
                self.clock.publish_state(
                    ClockState(
                        synchronized=d.synchronized,
                        max_error_ns=d.root_delay_ns // 2 + d.root_dispersion_ns,
                        est_error_ns=d.jitter_ns,
                        leap=self._leap_armed,
                    )
                )
            if (self.clock.now_ns() - self._drift_written_ns) * 1e-9 >= _DRIFT_WRITE_INTERVAL_S:
                self._write_drift()
            self.notifier.watchdog()

    def _track_leap(self) -> None:
        """Arm the kernel for an announced leap on its day; tell the discipline once it happened.

        Only the system clock leaps (the kernel does it); a measure-mode virtual clock follows
        the host clock, which we do not steer.
        """
        now = self.clock.now_ns()
        if self.clock.mode == "system":
            jump = leap_applied(self._leap_armed, self._leap_day, now)
            if jump:
                log.warning("leap second applied by the kernel (clock moved %+d s)", jump)
                self.discipline.handle_leap(now, jump)
        self._leap_day = utc_day(now)
        self._leap_armed = kernel_leap(self.core.decision.leap, now)

    def _write_drift(self) -> None:
        path = self.config.clock.drift_file
        self._drift_written_ns = self.clock.now_ns()
        if path is None or self.core.clock_updates == 0:
            return
        try:
            write_drift(path, self.discipline.frequency_ppm, self.discipline.skew_ppm)
        except OSError as exc:
            log.warning("cannot write the drift file %s: %s", path, exc)

    def _rpc_makestep(self, _params: dict[str, Any]) -> dict[str, Any]:
        actions = self.core.makestep(self.clock.now_ns())
        self._apply(actions)
        self._after_update()
        steps = [a.offset_ns * 1e-9 for a in actions if isinstance(a, Step)]
        return {"stepped": bool(steps), "offset": steps[0] if steps else 0.0}

    def _rpc_burst(self, _params: dict[str, Any]) -> dict[str, Any]:
        self.core.burst(self.clock.now_ns())
        self._wake.set()
        return {"sources": len(self.core.sources)}

    async def refresh_snapshots(self) -> None:
        """Fresh counters from every worker pool, before control or metrics read them."""
        pools = [s for s in self.servers if isinstance(s, WorkerPool)]
        await asyncio.gather(*(pool.refresh() for pool in pools))

    async def _rpc_serverstats(self, _params: dict[str, Any]) -> ServerStatsSnapshot:
        await self.refresh_snapshots()
        return self.server_snapshot()

    async def _rpc_clients(self, _params: dict[str, Any]) -> list[ClientSnapshot]:
        await self.refresh_snapshots()
        return self.client_snapshots()

    def _status_line(self) -> str:
        d = self.core.decision
        if d.synchronized:
            return f"synchronized to {d.selected}, stratum {d.stratum}"
        return f"not synchronized: {d.reason}"

    # ---------------------------------------------------------------- snapshots

    def system_snapshot(self) -> SystemSnapshot:
        """The system variables as control and metrics show them."""
        d = self.core.decision
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
            poll=self.core.system_poll(),
            precision=self.precision_log2,
            selected_source=d.selected,
            uptime=(now - self._started_ns) * 1e-9,
        )

    def tracking_snapshot(self) -> TrackingSnapshot:
        """The discipline's state, like chronyc tracking."""
        d = self.core.decision
        disc = self.discipline.snapshot()
        return TrackingSnapshot(
            synchronized=d.synchronized,
            unsynchronized_reason=d.reason,
            clock_mode=self.clock.mode,
            reference_id=refid_to_str(d.reference_id, 1 if d.selected is None else d.stratum),
            stratum=d.stratum,
            reference_time=d.reference_time_ns * 1e-9 if d.reference_time_ns else None,
            system_offset=d.offset_ns * 1e-9,
            last_offset=disc.last_offset_ns * 1e-9,
            rms_offset=disc.rms_offset_ns * 1e-9,
            residual_offset=disc.residual_offset_ns * 1e-9,
            frequency_ppm=disc.frequency_ppm,
            skew_ppm=disc.skew_ppm,
            applied_frequency_ppm=self.clock.frequency_ppm,
            host_clock_offset=(d.offset_ns + self.clock.host_offset_ns()) * 1e-9,
            root_delay=d.root_delay_ns * 1e-9,
            root_dispersion=d.root_dispersion_ns * 1e-9,
            update_interval=self.core.update_interval_ns * 1e-9
            if self.core.update_interval_ns is not None
            else None,
            clock_updates=self.core.clock_updates,
            discipline_state=disc.state,
            leap=_LEAP_NAMES[d.leap],
            poll=self.core.system_poll(),
        )

    def source_snapshots(self) -> list[SourceSnapshot]:
        """Every association, in the order they were mobilized."""
        now = self.clock.now_ns()
        d = self.core.decision
        return [
            sock.snapshot(
                self.core.sources[name],
                d.states.get(name, "init"),
                getattr(d, "reasons", {}).get(name),
                now,
            )
            for name, sock in self.sockets.items()
            if name in self.core.sources
        ]

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
                )
            )
        return out

    def server_snapshot(self) -> ServerStatsSnapshot:
        """Counters summed over every NTP server socket (and its workers)."""
        return server_stats([s.listen for s in self.servers], [s.counters() for s in self.servers])

    def client_snapshots(self) -> list[ClientSnapshot]:
        """The server's clients, busiest first."""
        now = self.clock.now_ns()
        rows = merge_client_rows(row for server in self.servers for row in server.client_rows(now))
        return [ClientSnapshot(**row) for row in rows]


def _join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
