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
import dataclasses
import json
import logging
import math
import os
import random
import signal
import time
from typing import TYPE_CHECKING, Any, Final

from tsyncd import __version__
from tsyncd.asyncwait import wait_for
from tsyncd.clock.base import Clock, ClockState
from tsyncd.config import Config, ConfigErrors, load_config
from tsyncd.control.rpc import ErrorCode, InvalidParams, RpcError
from tsyncd.control.server import ControlServer, ControlSetupError
from tsyncd.daemon_commands import ChronycCommands
from tsyncd.daemon_logs import MeasurementLogging
from tsyncd.daemon_snapshots import SnapshotViews
from tsyncd.daemon_source_settings import SourceSettings
from tsyncd.net.eventloop import simulator_runtime
from tsyncd.net.sockets import listen_error
from tsyncd.net.udp import SocketOptions
from tsyncd.sdnotify import Notifier
from tsyncd.servers.ntp import NtpServer
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.servers.tsq_setup import (
    TSQ_CREDENTIAL_ERRORS,
    require_aioquic,
    start_tsq_server,
    tsq_server_info,
)
from tsyncd.servers.workers import WorkerPool, start_server
from tsyncd.snapshots import (
    ClientSnapshot,
    ServerStatsSnapshot,
)
from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.startup_imports import forget_transient_modules
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
from tsyncd.wire.ntp import Leap
from tsyncd.wire.timestamps import ntp64_from_unix_ns, short_from_ns

if TYPE_CHECKING:
    from pathlib import Path

    from tsyncd.measurement_logs import MeasurementLogs
    from tsyncd.metrics import MetricsExporter  # imported with [metrics]: it costs memory
    from tsyncd.servers.credentials import ServedCredentials
    from tsyncd.servers.nts import NtsServerSide
    from tsyncd.servers.tsq import TsqServerInfo
    from tsyncd.sources.nts import NtsSource

log = logging.getLogger(__name__)

_DRIFT_WRITE_INTERVAL_S: Final = 3600.0
# The param names each control method takes: the control server refuses others (a misspelt
# name must not pass for a missing one).  add_source's are a [[source]] table, checked there.
_METHOD_PARAMS: Final[dict[str, tuple[str, ...] | None]] = {
    **dict.fromkeys(
        ("status", "tracking", "sources", "sourcestats", "serverstats", "version", "activity"),
        (),
    ),
    **dict.fromkeys(("makestep", "rekey", "reload", "reselect", "reset_sources"), ()),
    **dict.fromkeys(("cyclelogs", "shutdown"), ()),
    **dict.fromkeys(("offline", "online", "onoffline", "burst", "refresh"), ("sources",)),
    "clients": ("nts_ke",),
    "accheck": ("address",),
    **dict.fromkeys(("allow", "deny"), ("subnet", "all")),
    "add_source": None,
    "remove_source": ("name",),
    "set_source": ("sources", "min-poll", "max-poll", "max-delay"),
    "local": ("stratum",),
}
_NS_PER_S: Final = 1_000_000_000
# The Config fields a reload applies only after a restart, and how the file writes each
# (``[log]``: only what the level leaves; ``[keys]``: its file's keys too).  Reload answers
# and logs name the sections as written (QA s21 hunt-nts F5); ``restart_needed`` keeps the
# field names for scripts.
_RESTART_SECTIONS: Final = {
    "clock": "[clock]",
    "synchronization": "[synchronization]",
    "servers": "[[server]]",
    "control": "[control]",
    "metrics": "[metrics]",
    "tsq_servers": "[[tsq-server]]",
    "nts_ke_servers": "[[nts-ke-server]]",
    "keyset": "[keyset]",
    "resolver": "[resolver]",
    "broadcasts": "[[broadcast]]",
    "nts_client": "[nts-client]",
    "keys": "[keys]",
    "log": "[log]",
}


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


def measure_only(config: Config) -> Config:
    """``config`` with ``[clock] mode = "measure"`` and the rest of ``[clock]`` (the drift
    file) kept: what ``tsyncd --measure-only`` runs, at start and after each reload."""
    return dataclasses.replace(config, clock=dataclasses.replace(config.clock, mode="measure"))


class Daemon(SourceSettings, ChronycCommands, MeasurementLogging, SnapshotViews):
    """A configured tsyncd; ``await run()`` until ``stop()`` (or a signal).

    ``force_measure`` (``--measure-only``) keeps the clock in measure mode whatever the
    config file says, reloads included."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        notifier: Notifier | None = None,
        *,
        force_measure: bool = False,
    ) -> None:
        self._force_measure = force_measure
        if force_measure:
            config = measure_only(config)
        self.config = config
        self._served_keys = (config.keys, config.symmetric_keys)  # what the servers started with
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
            max_distance_ns=round(sync.max_distance * _NS_PER_S),
            precision_log2=self.precision_log2,
            discipline=self.discipline,
            now_ns=now,
        )
        self.sockets: dict[str, NtpSourceSocket] = {}
        self.servers: list[NtpServer | WorkerPool] = []
        self.tsq_servers: list[Any] = []  # TsqServer (aioquic is imported only for TSQ)
        self.tsq_credentials: list[ServedCredentials] = []  # their files, for reloads
        self.control: ControlServer | None = None
        self.metrics: MetricsExporter | None = None
        self.nts: NtsServerSide | None = None  # NTS keys and NTS-KE listeners, when configured
        self.nts_sources: dict[str, NtsSource] = {}  # mode "nts" sources by name
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
        self._leap_file_expired = False  # warned that the leap-seconds file has expired
        self.measurement_logs: MeasurementLogs | None = None  # [log] measurements, ...
        self._logged_updates = 0  # core.clock_updates at the last tracking.log line
        self._leap_day = utc_day(now)
        self._template = ResponseTemplate()
        self._init_source_admin()
        self._init_connectivity()

    @property
    def decision(self) -> SystemDecision:
        """The system process's latest decision."""
        return self.core.decision

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind every socket and start every task; raises OSError if a socket cannot be bound
        (or the measurement logs cannot be opened)."""
        loop = asyncio.get_running_loop()
        self._open_measurement_logs()
        await self._start_nts_server_side()
        peer_ports = {s.local_port for s in self.config.sources if s.mode == "peer"}
        for index, server_cfg in enumerate(self.config.servers):
            options = SocketOptions(
                dscp=server_cfg.dscp,
                ipv6_only=server_cfg.ipv6_only,
                # A peer's connected socket on this port takes that peer's packets.
                reuse_port=server_cfg.listen.port in peer_ports,
            )
            # The workers have no peer's socket: passive answers to peers and a port shared
            # with a peer are served from the event loop.  NTS keys are pushed to workers.
            # Symmetric peers need the event loop's socket; a simulator has one process only.
            on_loop = (
                server_cfg.symmetric_passive
                or server_cfg.listen.port in peer_ports
                or simulator_runtime()
            )
            if on_loop and server_cfg.workers:
                log.warning(
                    "server %s: workers = %d ignored (symmetric peers or a simulator need the "
                    "event loop's server)",
                    server_cfg.listen,
                    server_cfg.workers,
                )
            template = self._response_template(self.clock.now_ns())
            try:
                server = start_server(
                    server_cfg,
                    self.clock,
                    template,
                    options=options,
                    event_loop_only=on_loop,
                    keys=self.nts.key_state() if self.nts is not None else None,
                    fork=False,  # forked below, once the rest is started (memory)
                    symmetric_keys=self.config.symmetric_keys if self.config.keys.file else None,
                )
            except OSError as exc:
                raise listen_error(f"server[{index}].listen", server_cfg.listen, exc) from exc
            if isinstance(server, NtpServer):
                server.symmetric_passive = server_cfg.symmetric_passive
                if self.nts is not None:
                    self.nts.attach(server.responder)
            elif self.nts is not None:
                self.nts.attach_pool(server)
            self.servers.append(server)
            log.info("serving NTP on %s", server.listen)
        require_aioquic(self.config)
        await self._start_tsq_servers()
        await self._start_nts_ke_servers()
        for source_cfg in self.config.sources:
            self._start_source(source_cfg)
        for bcast in self.config.broadcasts:
            from tsyncd.servers.broadcast import BroadcastSender  # off by default: on use

            sender = BroadcastSender(
                bcast.address.host,
                bcast.address.port,
                bcast.interval,
                self.clock,
                lambda: self._template,
                dscp=bcast.dscp,
                interface=bcast.interface,
                ttl=bcast.ttl,
            )
            self._tasks.append(loop.create_task(sender.run()))
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
                "activity": self._rpc_activity,
                "accheck": self._rpc_accheck,
            },
            admin_methods={
                "makestep": self._rpc_makestep,
                "burst": self._rpc_burst,
                "rekey": self._rpc_rekey,
                "add_source": self._rpc_add_source,
                "remove_source": self._rpc_remove_source,
                "reload": self._rpc_reload,
                "offline": self._rpc_offline,
                "online": self._rpc_online,
                "onoffline": self._rpc_onoffline,
                "refresh": self._rpc_refresh,
                "reselect": self._rpc_reselect,
                "reset_sources": self._rpc_reset_sources,
                "set_source": self._rpc_set_source,
                "cyclelogs": self._rpc_cyclelogs,
                "local": self._rpc_local,
                "allow": self._rpc_allow,
                "deny": self._rpc_deny,
                "shutdown": self._rpc_shutdown,
            },
            params=_METHOD_PARAMS,
            group=self.config.control.group,
            admin_group=self.config.control.admin_group,
        )
        socket_key = f"control.socket = {json.dumps(str(self.config.control.socket))}"
        try:
            await self.control.start()
        except ControlSetupError as exc:
            if exc.key is None:  # about the path: say which setting it is
                raise ControlSetupError(f"{socket_key}: {exc}", "control.socket") from exc
            # A group checked with the config and gone since: name the file too.
            raise ControlSetupError(f"{self.config.path}: {exc}", exc.key) from exc
        except OSError as exc:
            # A simulator may offer no Unix sockets at all; time keeping matters more there.
            if not simulator_runtime():
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                raise ControlSetupError(f"{socket_key}: cannot listen ({why})") from exc
            log.error("running without a control socket: %s", exc)
            self.control = None
        if self.config.metrics.listen is not None:
            from tsyncd.metrics import MetricsExporter

            self.metrics = MetricsExporter(
                self, self.config.metrics.listen.host, self.config.metrics.listen.port
            )
            try:
                await self.metrics.start()
            except OSError as exc:
                raise listen_error("metrics.listen", self.config.metrics.listen, exc) from exc
            log.info("metrics on http://%s/metrics", self.config.metrics.listen)
        self._after_update()
        self._tasks.append(loop.create_task(self._timer_loop()))
        self._tasks.append(loop.create_task(self._housekeeping()))
        # One turn of the loop first: the tasks just created take their first step (frames,
        # timers, handles) while the heap is still the workers' too, not in pages the main
        # process would copy after the fork (about 0.2 MB less anonymous memory in all,
        # bench/README.md "Server memory").
        await asyncio.sleep(0)
        self._fork_server_workers()
        self.notifier.ready(self._status_line())

    def _fork_server_workers(self) -> None:
        """Fork every pool's workers, last in start-up: pages the main process writes after a
        fork stop being shared with the workers, so the less it still has to set up, the
        less memory the workers cost (bench/README.md, "Server memory").  Their sockets are
        bound already: requests that come meanwhile wait in the socket, none is lost."""
        for server in self.servers:
            if isinstance(server, WorkerPool):
                server.start()

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
        await self._stop_sources()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._write_drift()
        if self.measurement_logs is not None:
            self.measurement_logs.close()
            self.measurement_logs = None
        for nts in self.nts_sources.values():
            nts.save()  # unused cookies and their keys, to resume without NTS-KE
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        for server in self.servers:
            server.close()
        self.servers.clear()
        for tsq_server in self.tsq_servers:
            tsq_server.close()
        self.tsq_servers.clear()
        self.tsq_credentials.clear()
        if self.nts is not None:
            await self.nts.close()
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply the log level and the sources, report what
        needs a restart."""
        self.notifier.reloading()
        try:
            self._reload()
        except ConfigErrors as exc:
            _log_reload_failure(exc, "SIGHUP")
        self.notifier.ready(self._status_line())

    async def _rpc_reload(self, _params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl reload``: SIGHUP's work, answered once the sources have changed."""
        self.notifier.reloading()
        try:
            sources, restart, certificates = self._reload()
        except ConfigErrors as exc:
            lines = _log_reload_failure(exc, "tsyncctl reload")
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                "reload failed, keeping the running configuration: " + "; ".join(lines),
                {"errors": lines},
            ) from None
        finally:
            self.notifier.ready(self._status_line())
        done = await sources if sources is not None else {}
        return {
            "config": str(self.config.path),
            "sources_started": done.get("started", []),
            "sources_stopped": done.get("stopped", []),
            "sources_not_started": done.get("not_started", []),
            "restart_needed": restart,
            "restart_sections": [_RESTART_SECTIONS[name] for name in restart],
            "certificates_reloaded": certificates[0],
            "certificate_errors": certificates[1],
        }

    def _reload(
        self,
    ) -> tuple[asyncio.Task[dict[str, Any]] | None, list[str], tuple[list[str], list[str]]]:
        """Re-read the config file (ConfigErrors if it is bad): apply the log level, start
        the source changes (their task, None if none); the sections that need a restart; the
        NTS-KE listeners whose renewed certificate and key now serve, and why others could
        not (their old ones serve on)."""
        new = load_config(self.config.path)
        if self._force_measure:
            new = measure_only(new)
        forget_transient_modules()  # the TOML parser, until the next reload
        logging.getLogger().setLevel(new.log.level.upper())
        sources = None
        # Sources (re)started from here on sign with the file's keys as they are now; the
        # servers keep the keys they started with until a restart ("keys" below).
        keys_changed = (new.keys, new.symmetric_keys) != self._served_keys
        self.config = dataclasses.replace(self.config, symmetric_keys=new.symmetric_keys)
        if new.synchronization == self.config.synchronization:  # the leap file, read again
            self.config = dataclasses.replace(self.config, leap_table=new.leap_table)
            self._leap_file_expired = False
        if new.sources != self.config.sources or self._not_started:
            sources = self._schedule_source_reload(self.config.sources, new)
            self.config = dataclasses.replace(self.config, sources=new.sources)
        changed = [
            name
            for name in _RESTART_SECTIONS
            if name not in ("keys", "log") and getattr(new, name) != getattr(self.config, name)
        ] + (["keys"] if keys_changed else [])
        if dataclasses.replace(new.log, level=self.config.log.level) != self.config.log:
            changed.append("log")  # the measurement logs; the level applies at once
        certificates: tuple[list[str], list[str]] = ([], [])
        if self.nts is not None and "nts_ke_servers" not in changed:
            certificates = self.nts.reload_credentials(self._credentials_refused)
        if "tsq_servers" not in changed:
            from tsyncd.servers.credentials import reload_changed  # TSQ only

            tsq = reload_changed(
                self.tsq_credentials, self._credentials_refused, TSQ_CREDENTIAL_ERRORS
            )
            certificates = (certificates[0] + tsq[0], certificates[1] + tsq[1])
        for error in certificates[1]:
            log.error("keeping the running certificate: %s", error)
        if changed:
            log.warning(
                "reloaded %s; changes to %s take effect after a restart",
                self.config.path,
                ", ".join(_RESTART_SECTIONS[name] for name in changed),
            )
        else:
            log.info("reloaded %s", self.config.path)
        return sources, changed, certificates

    # ---------------------------------------------------------------- timer and clock

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline_ns()
            delay_s = 3600.0 if deadline is None else (deadline - self.clock.now_ns()) * 1e-9
            if delay_s > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._wake.wait(), delay_s)
                continue
            self._run_timer()

    def _run_timer(self) -> None:
        requests, actions = self.core.handle_timer(self.clock.now_ns())
        for name, data in requests:
            self._send_request(name, data)
        for nts in self.nts_sources.values():
            nts.kick()  # an NTS source out of cookies re-runs NTS-KE
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
        self._log_clock_update()
        if self.discipline.panic is None:
            self._panic_logged = False  # a later panic is logged again
        now = self.clock.now_ns()
        d = self.core.decision
        # While a reload swaps sources (one stopped, then its successor started) the selection
        # is empty for a moment: said only if it still is once the reload is done.
        reloading = self._reload_task is not None and not self._reload_task.done()
        if d.selected != self._last_selected and (d.selected or not reloading):
            self._last_selected = d.selected
            if d.selected:
                log.info("selected source %s (stratum %d)", d.selected, d.stratum - 1)
            else:
                # As status says it: a pool or server whose addresses others poll is not
                # "no sources configured".
                log.warning("no source selected: %s", self._unsynchronized_reason())
        template = self._response_template(now)
        for server in self.servers:
            server.set_template(template)
        self._template = template
        self._announce()
        status = self._status_line()
        if status != self._last_status:
            self._last_status = status
            self.notifier.status(status)

    def _response_template(self, now: int) -> ResponseTemplate:
        """What the NTP servers answer with, from the system process's current decision."""
        d = self.core.decision
        return ResponseTemplate(
            leap=Leap(self.effective_leap(now)),
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
            if self.nts is not None:
                self.nts.tick(self.clock.now_ns() / _NS_PER_S)
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
            if interval is not None:  # armed (WatchdogSec=): else nobody reads the pings
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
        self._leap_armed = kernel_leap(self.effective_leap(now), now)
        table = self.config.leap_table
        if table is not None and table.expired(now) and not self._leap_file_expired:
            self._leap_file_expired = True
            log.warning(
                "%s has expired: leap seconds come from the sources only (install a newer one,"
                " e.g. update tzdata, then tsyncctl reload)",
                self.config.synchronization.leap_seconds_file,
            )

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

    async def _start_nts_server_side(self) -> None:
        """Load the NTS cookie keys when NTS-KE is served or a key file is configured."""
        cfg = self.config
        if not cfg.nts_ke_servers and cfg.keyset.key_storage_path is None:
            return
        from tsyncd.servers.nts import NtsServerSide  # pyOpenSSL only when NTS is used

        try:
            self.nts = NtsServerSide(cfg.keyset, self.clock.now_ns() / _NS_PER_S)
        except ValueError as exc:  # KeyFileError: one line naming the file and the field
            key = f"keyset.key-storage-path = {json.dumps(str(cfg.keyset.key_storage_path))}"
            raise OSError(f"{key}: {exc}") from exc

    async def _start_nts_ke_servers(self) -> None:
        if self.nts is None:
            return
        from OpenSSL import SSL  # pyOpenSSL (about 10 MB) only when NTS is served

        for index, ke_cfg in enumerate(self.config.nts_ke_servers):
            try:
                await self.nts.start_ke(
                    ke_cfg, self.config.servers, self.servers, f"nts-ke-server[{index}]"
                )
            except SSL.Error as exc:
                raise OSError(
                    self._credentials_refused(
                        f"nts-ke-server[{index}]",
                        ke_cfg.certificate_chain_path,
                        ke_cfg.private_key_path,
                        exc,
                    )
                ) from exc

    def _credentials_refused(self, where: str, chain: Path, key: Path, exc: Exception) -> str:
        """Why a TLS server's PEM files were refused (OpenSSL for NTS-KE, aioquic for TSQ),
        which passed the config check (so they changed since): the check's own words again,
        else the library's reasons, with the keys."""
        from tsyncd.config_host import credential_errors

        found = credential_errors(self.config.path, where, chain, key)
        if type(exc).__module__.startswith("OpenSSL"):
            from tsyncd.net.tls import ssl_error_text  # pyOpenSSL: loaded for NTS-KE already

            why = f"OpenSSL cannot use them ({ssl_error_text(exc)})"
        else:
            why = f"cannot use them ({exc or type(exc).__name__})"
        return "\n".join(found) or (
            f"{self.config.path}: {where}: certificate-chain-path = {chain}, "
            f"private-key-path = {key}: {why}"
        )

    def _rpc_rekey(self, _params: dict[str, Any]) -> dict[str, Any]:
        if self.nts is None:
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                "NTS is not configured: no [[nts-ke-server]] and no [keyset] key-storage-path",
            )
        try:
            return self.nts.rekey(self.clock.now_ns() / _NS_PER_S)
        except (OSError, ValueError) as exc:  # KeyFileError: the file, the field, what's wrong
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"{exc}; keeping the running NTS keys (epoch {self.nts.keys.current_epoch})",
            ) from exc

    async def refresh_snapshots(self, client_keys: bool = True) -> None:
        """Fresh counters from every worker pool, before control or metrics read them (with
        ``client_keys``, what ``server_snapshot`` needs to count each client once)."""
        keys = client_keys and self.clients_may_overlap()
        pools = [s for s in self.servers if isinstance(s, WorkerPool)]
        await asyncio.gather(*(pool.refresh(keys=keys) for pool in pools))

    async def _rpc_serverstats(self, _params: dict[str, Any]) -> ServerStatsSnapshot:
        await self.refresh_snapshots()
        return self.server_snapshot()

    async def _rpc_clients(self, params: dict[str, Any]) -> list[ClientSnapshot]:
        """The NTP server's clients, or with ``{"nts_ke": true}`` the NTS-KE server's
        (``received``: connections, ``answered``: sessions that ended with cookies,
        ``dropped``: connections refused by the rate limit or the connection bound)."""
        nts_ke = params.get("nts_ke", False)
        if not isinstance(nts_ke, bool):
            raise InvalidParams(f"clients: nts_ke {nts_ke!r}: expected true or false")
        if nts_ke:
            return self.ke_client_snapshots()
        await self.refresh_snapshots(client_keys=False)
        return self.client_snapshots()

    def _status_line(self) -> str:
        d = self.core.decision
        if d.synchronized:
            return f"synchronized to {d.selected}, stratum {d.stratum}"
        if not d.states and self._source_configs:
            # At READY=1 no selection has seen the sources yet (their tasks still resolve
            # names, or handshake for TSQ and NTS): not "no sources configured".
            return f"not synchronized: starting {len(self._source_configs)} source(s)"
        return f"not synchronized: {d.reason}"

    # ---------------------------------------------------------------- TSQ (time over QUIC)

    async def _start_tsq_servers(self) -> None:
        """Bind every [[tsq-server]]; OSError (with the file named) if a PEM file is bad."""

        def info() -> TsqServerInfo:
            return tsq_server_info(self.core, self.clock.now_ns())

        for index, cfg in enumerate(self.config.tsq_servers):
            server, served = await start_tsq_server(
                cfg, self.clock.now_ns, info, f"tsq-server[{index}]"
            )
            self.tsq_servers.append(server)
            self.tsq_credentials.append(served)
            log.info("serving TSQ (%s) on %s", cfg.transport, server.listen)


def _log_reload_failure(exc: ConfigErrors, how: str) -> list[str]:
    """Log a failed reload (``how``: what asked for it) as one line per mistake, each in full
    (journald shows a multi-line message as one entry, grep finds each line); the lines."""
    lines = [str(e) for e in exc.errors]
    for line in lines:
        log.error("reload (%s) failed, keeping the running configuration: %s", how, line)
    return lines
