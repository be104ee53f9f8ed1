"""The multi-core NTP server: N forked receive workers on one port, managed from the event loop.

The main process binds one ``SO_REUSEPORT`` socket per worker (so a bad address fails at
start, and a restarted worker takes over the same socket: the kernel's hash keeps sending it
the same clients, and nothing queued is lost), then forks a worker onto each
(``servers/worker.py``).  Before binding, a probe bound without ``SO_REUSEPORT`` makes sure
nobody holds the port yet: a second tsyncd on it would otherwise join the group and replace
its client-steering program (chronyd's plain bind refuses such a port too).  It talks to
each worker over a pipe: the response template, clock mapping, access list (``tsyncctl
allow``/``deny``) and NTS cookie keys (``ntskeys.KeyState``, after a rotation or reload) go
down when they change; counters and
the busiest clients come up twice a second under traffic (idle workers: every 2.5 s) and
when control or metrics ask (``refresh``), and are kept here.

A worker that dies is noticed at once (its pidfd becomes readable; without pidfds, within
``_REAP_INTERVAL_S``), logged, counted and forked again (after a growing delay if it keeps
dying within seconds of its start: a crash loop should not flood the log or the CPU).  Idle,
the pool wakes the main process about once a second (each worker's heartbeat, the stuck check).
``close`` asks each worker to exit with SIGTERM, waits briefly, and kills what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import gc
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tsyncd.asyncwait import wait_for
from tsyncd.clock.base import Clock
from tsyncd.config import ServerConfig
from tsyncd.net.udp import (
    SocketOptions,
    bind_udp,
    enable_rx_timestamps,
    ensure_port_free,
    is_ipv6_wildcard,
    listen_text,
)
from tsyncd.servers import worker as worker_mod
from tsyncd.servers.ntp import NtpServer
from tsyncd.servers.ntskeys import KeyState
from tsyncd.servers.pipe import Connection, pipe
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate, ServerPolicy
from tsyncd.servers.stats import server_policy, sum_counters

if TYPE_CHECKING:
    from tsyncd.symkey import SymmetricKey

log = logging.getLogger(__name__)

_REAP_INTERVAL_S: Final = 0.5  # the restart back-off's unit; the reaper's pace without pidfds
_WATCH_S: Final = 2.5  # the reaper's pace with pidfds: only for stuck workers
_STOP_WAIT_S: Final = 2.0
_QUICK_DEATH_S: Final = 10.0  # a worker dying younger than this may be crash-looping ...
_RESTART_MAX_DELAY_S: Final = 30.0  # ... so its restarts back off, up to this
_BLOCKED: Final = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
# A live worker that has not reported for this long is stuck (stopped, hung): its clients get
# no answers, so it is killed and restarted.  It reports every 0.5 s, busy or idle.
_STUCK_S: Final = 10.0
# A woken worker answers within a millisecond or so; one still silent after this may have
# taken the signal just before its receive (and would wait out the receive timeout): again.
_REWAKE_S: Final = 0.02


def default_workers() -> int:
    """One worker per CPU, at most 4: past that the kernel's UDP path, not Python, limits."""
    return max(1, min(4, os.cpu_count() or 1))


def clock_map_of(clock: Clock) -> worker_mod.ClockMap:
    """The clock's mapping from host CLOCK_REALTIME to daemon time, as a line through now."""
    u0 = time.time_ns()
    v0 = clock.from_kernel_ns(u0)
    span = worker_mod.RATE_UNIT  # a long span, so the rate resolves to 1e-12
    v1 = clock.from_kernel_ns(u0 + span)
    return worker_mod.ClockMap(u0, v0, v1 - v0 - span)


@dataclass
class _Worker:
    index: int
    sock: socket.socket
    pid: int = 0
    conn: Connection | None = None
    counters: dict[str, Any] = field(default_factory=dict)
    clients: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] | None = None  # its client log's keys, when last asked (refresh)
    pushes: int = 0  # stats messages received from the current process
    acked: int = 0  # the last "push" request its stats answered (WorkerPool._push_seq)
    started_at: float = 0.0  # monotonic s of the last fork
    quick_deaths: int = 0  # deaths in a row, each within _QUICK_DEATH_S of its start
    restart_at: float = 0.0  # monotonic s when a dead worker may be forked again
    heard_at: float = 0.0  # monotonic s of its last message (0.5 s apart busy, 2.5 s idle)
    killed: str = ""  # why we killed it (stuck), for the log line of its death
    pidfd: int = -1  # readable once the process has exited (``_watch``)


class WorkerPool:
    """Several worker processes serving one listening address."""

    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        access: AccessList,
        policy: ServerPolicy,
        clock: Clock,
        template: ResponseTemplate | None = None,
        options: SocketOptions | None = None,
        keys: KeyState | None = None,
    ) -> None:
        """Bind one socket per worker (OSError if the address is taken); ``start`` forks.

        With ``keys``, the workers answer NTS requests too (``set_keys`` keeps them current).
        """
        if workers < 1:
            raise ValueError(f"a worker pool needs at least one worker, not {workers}")
        self._access = access
        self._policy = policy
        self._clock = clock
        self._template = template or ResponseTemplate()
        self._clock_map = clock_map_of(clock)
        self._keys = keys
        self._loop = asyncio.get_running_loop()
        self._workers: list[_Worker] = []
        self._reaper: asyncio.Task[None] | None = None
        self.restarts = 0
        self._retired: dict[str, Any] = {}  # counters of workers that died
        # refresh() calls waiting: (their push number, set when every worker answered it)
        self._waiting: list[tuple[int, asyncio.Event]] = []
        # Numbered "push" requests: stats already in the pipe when we ask are not fresh.
        self._push_seq = 0
        self._reap_now = asyncio.Event()  # a worker exited (its pidfd): look at once
        self._closed = False
        # SO_REUSEPORT would let this group join one already on the port (another tsyncd),
        # whose steering program ours would then replace: refuse, as a plain bind does.
        ensure_port_free(host, port, options)
        try:
            for index in range(workers):
                sock = _bind_reuseport(host, port, options)
                port = sock.getsockname()[1]  # port 0: the others join the first one's port
                self._workers.append(_Worker(index, sock))
        except OSError:
            for w in self._workers:
                w.sock.close()
            raise
        self._host = host
        self._port = port
        # Whether each client IP meets one worker only (the workers' client logs are disjoint).
        self.steered = workers == 1
        if workers > 1:
            try:
                attach_ip_hash(self._workers[0].sock, workers)
                self.steered = True
            except OSError as exc:
                log.info("cannot steer clients by IP (%s): the kernel hashes address and port", exc)

    def start(self) -> WorkerPool:
        """Fork the workers and watch them (on the running loop); once only (idempotent)."""
        if self._reaper is not None:
            return self
        worker_mod.warm_up(self._workers[0].sock, self._setup(self._workers[0]))
        # Every pipe made before the first fork, every worker watched after the last: what the
        # main process allocates between two forks copies pages the worker forked first shares
        # (about 0.1 MB less anonymous memory over two workers, bench/README.md).
        pipes = [pipe() for _ in self._workers]
        for i, w in enumerate(self._workers):
            self._fork(w, pipes[i], [end for later in pipes[i + 1 :] for end in later])
        for w in self._workers:
            self._watch(w)
        self._reaper = self._loop.create_task(self._reap())
        return self

    @property
    def listen(self) -> str:
        """The bound address as 'ip:port' or '[ip6]:port'."""
        return listen_text(self._host, self._port)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.pid for w in self._workers if w.pid]

    # ---------------------------------------------------------------- processes

    def _setup(self, w: _Worker) -> worker_mod.WorkerSetup:
        return worker_mod.WorkerSetup(
            w.index, self._access, self._policy, self._template, self._clock_map, self._keys
        )

    def _fork(
        self,
        w: _Worker,
        ends: tuple[Connection, Connection] | None = None,
        spare: list[Connection] | tuple[Connection, ...] = (),
    ) -> None:
        """Fork ``w``'s process, talking over ``ends`` (a new pipe if None); ``spare`` are
        the pipe ends made for workers forked later, which this one must not hold.  ``_watch``
        then listens to it."""
        parent_end, child_end = ends or pipe()
        setup = self._setup(w)
        # Signals stay blocked across fork so the child cannot run the parent's handlers
        # (asyncio's wakeup fd) before it has replaced them.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        # Objects the worker inherits stay out of both collectors' sight, for good: a full
        # collection writes to every tracked object, which would copy each page the processes
        # share (in the worker, or in this process, which un-shares it just the same).  They
        # are the daemon's long-lived start-up objects; leaving them uncollected costs nothing.
        # (No gc.collect() first: it frees start-up garbage into holes that the main process
        # then fills with new objects, writing to pages it shares with the workers.)
        _trim_heap()
        gc.freeze()
        try:
            pid = os.fork()
            if pid == 0:
                parent_end.close()
                for end in spare:
                    os.close(end.fileno())
                for other in self._workers:  # so a sibling sees EOF when the parent is gone
                    if other is not w:
                        if other.conn is not None:
                            os.close(other.conn.fileno())
                        other.sock.close()
                worker_mod.run(w.sock, child_end, setup)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child_end.close()
        w.pid = pid
        w.conn = parent_end
        w.started_at = w.heard_at = time.monotonic()
        w.killed = ""
        w.pushes = 0
        w.acked = self._push_seq  # a newborn worker has nothing older to report
        w.keys = None

    def _watch(self, w: _Worker) -> None:
        """Read ``w``'s messages on the event loop, and wake the reaper when it exits."""
        if w.conn is not None:
            self._loop.add_reader(w.conn.fileno(), self._on_message, w)
        if w.pid and w.pidfd < 0:
            try:
                w.pidfd = os.pidfd_open(w.pid)
            except OSError:  # a kernel before 5.3: the reaper looks every _REAP_INTERVAL_S
                return
            self._loop.add_reader(w.pidfd, self._exited, w)

    def _exited(self, w: _Worker) -> None:
        self._forget_pidfd(w)
        self._reap_now.set()

    def _forget_pidfd(self, w: _Worker) -> None:
        if w.pidfd >= 0:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = -1

    def _on_message(self, w: _Worker) -> None:
        conn = w.conn
        if conn is None:
            return
        try:
            while conn.poll():
                message = conn.recv()
                w.heard_at = time.monotonic()
                if message[0] == "stats":
                    w.counters, w.clients = message[1], message[2]
                    w.pushes += 1
                    w.acked = message[3]
                    if message[4] is not None:
                        w.keys = message[4]
                    if self._waiting:
                        self._wake_answered()
        except (EOFError, OSError):
            self._drop_conn(w)  # the worker is gone; the reaper restarts it

    def _drop_conn(self, w: _Worker) -> None:
        if w.conn is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(w.conn.fileno())
                self._loop.remove_writer(w.conn.fileno())
            w.conn.close()
            w.conn = None

    def _kill_stuck(self, w: _Worker, why: str) -> None:
        """Kill a worker that stopped serving (SIGKILL works on a stopped process too); the
        reaper then restarts it as after any death."""
        if not w.pid or w.killed:
            return
        w.killed = why
        log.warning(
            "server worker %d (pid %d) on %s is stuck (%s): killing it",
            w.index,
            w.pid,
            self.listen,
            why,
        )
        self._drop_conn(w)
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGKILL)

    async def _reap(self) -> None:
        while True:
            now = time.monotonic()
            watched = all(w.pidfd >= 0 for w in self._workers if w.pid)
            pause = _WATCH_S if watched else _REAP_INTERVAL_S
            for w in self._workers:
                if not w.pid:  # a restart due sooner
                    pause = min(pause, max(0.0, w.restart_at - now))
            with contextlib.suppress(TimeoutError):
                await wait_for(self._reap_now.wait(), pause)
            self._reap_now.clear()
            now = time.monotonic()
            for w in self._workers:
                if w.pid:
                    self._check(w, now)
                elif now >= w.restart_at:
                    self.restarts += 1
                    self._fork(w)
                    self._watch(w)

    def _check(self, w: _Worker, now: float) -> None:
        """Notice a dead worker and schedule its restart: at once, unless it keeps dying young."""
        try:
            pid, status = os.waitpid(w.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = w.pid, 0
        if pid == 0:
            if w.conn is not None and not w.killed:
                self._on_message(w)  # what it sent while our loop was busy counts first
                if now - w.heard_at > _STUCK_S:
                    self._kill_stuck(w, f"no report for {now - w.heard_at:.0f} s")
            return
        self._forget_pidfd(w)
        w.quick_deaths = w.quick_deaths + 1 if now - w.started_at < _QUICK_DEATH_S else 0
        delay = min(_RESTART_MAX_DELAY_S, _REAP_INTERVAL_S * 2**w.quick_deaths) - _REAP_INTERVAL_S
        log.warning(
            "server worker %d (pid %d) on %s died (%s); restarting it%s",
            w.index,
            w.pid,
            self.listen,
            f"killed: {w.killed}" if w.killed else _describe(status),
            f" in {delay + _REAP_INTERVAL_S:.0f} s" if delay > 0 else "",
        )
        self._drop_conn(w)
        w.pid = 0
        w.restart_at = now + max(0.0, delay)
        # Its counters are kept: they were served, and the totals must not go back.
        self._retire_counters(w)

    def _retire_counters(self, w: _Worker) -> None:
        # Its client log died with it: ``clients`` (a gauge) counts live logs only.
        self._retired = sum_counters([self._retired, {**w.counters, "clients": 0}])
        w.counters = {}
        w.keys = None

    # ---------------------------------------------------------------- main-process side

    def _send_all(self, message: tuple[Any, ...]) -> None:
        """Send ``message`` to every worker without ever waiting for one (the event loop
        serves the others, control and the clock): what a pipe does not take at once is
        written when it drains, and a worker whose queue overflows is stuck."""
        for w in self._workers:
            conn = w.conn
            if conn is None:
                continue
            try:
                fits = conn.send_nowait(message)
            except OSError:
                self._drop_conn(w)
                continue
            if not fits:
                self._kill_stuck(w, "not reading its pipe")
            elif conn.pending:
                self._loop.add_writer(conn.fileno(), self._flush, w)
                self._ring(w)  # idle, it reads its pipe only when a request or this wakes it

    def _flush(self, w: _Worker) -> None:
        conn = w.conn
        if conn is None:
            return
        try:
            done = conn.flush()
        except OSError:
            self._drop_conn(w)
            return
        if done:
            self._loop.remove_writer(conn.fileno())

    def set_template(self, template: ResponseTemplate) -> None:
        """Serve ``template`` from now on (pushed to every worker when it changed)."""
        if template != self._template:
            self._template = template
            self._send_all(("template", template))
        clock_map = clock_map_of(self._clock)
        if _map_moved(self._clock_map, clock_map):
            self._clock_map = clock_map
            self._send_all(("clock", clock_map))

    @property
    def access(self) -> AccessList:
        """The allow/deny rules the workers judge clients by."""
        return self._access

    def set_access(self, access: AccessList) -> None:
        """Judge clients by ``access`` from now on: pushed to every worker (each judges the
        clients it knows again) and what a restarted worker starts with.  A ``refresh``
        after this returns once every live worker has it."""
        if access != self._access:
            self._access = access
            self._send_all(("access", access))

    def set_keys(self, keys: KeyState) -> None:
        """Open and issue NTS cookies with ``keys`` from now on (after a rotation or rekey)."""
        if self._keys is not None and keys != self._keys:
            self._keys = keys  # also what a restarted worker starts with
            self._send_all(("keys", keys))

    async def refresh(self, timeout_s: float = 1.0, *, keys: bool = False) -> None:
        """Ask every worker for its counters now and wait (bounded) until all have answered;
        with ``keys``, for its client log's keys too (``client_keys``)."""
        self._push_seq += 1
        seq = self._push_seq
        waiter = (seq, asyncio.Event())
        self._waiting.append(waiter)  # several callers (scrapes, tsyncctl) wait side by side
        try:
            self._send_all(("push", seq, keys))
            for wait_s in (_REWAKE_S, timeout_s - _REWAKE_S):
                self._wake(seq)  # an idle worker would read its pipe at its receive timeout
                with contextlib.suppress(TimeoutError):
                    await wait_for(waiter[1].wait(), wait_s)
                if waiter[1].is_set():
                    break
        finally:
            self._waiting.remove(waiter)

    def _wake(self, seq: int) -> None:
        """Interrupt the receive of every live worker that has not answered push ``seq``."""
        for w in self._workers:
            if w.conn is not None and w.acked < seq:
                self._ring(w)

    @staticmethod
    def _ring(w: _Worker) -> None:
        """Wake ``w`` to read its pipe (``worker.WAKE_SIGNAL``)."""
        if w.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, worker_mod.WAKE_SIGNAL)

    def _wake_answered(self) -> None:
        """Wake the ``refresh`` callers whose push every live worker has answered."""
        acked = min((w.acked for w in self._workers if w.conn is not None), default=None)
        for seq, event in self._waiting:
            if acked is None or acked >= seq:
                event.set()

    def counters(self) -> dict[str, Any]:
        """Counters summed over the workers (as last pushed), with restarts."""
        parts = [w.counters for w in self._workers]
        parts.append(self._retired)
        total = sum_counters(parts)
        total["workers"] = len(self._workers)
        total["worker_restarts"] = self.restarts
        return total

    def client_keys(self) -> tuple[list[str], int]:
        """The live workers' client log keys from the last ``refresh(keys=True)`` (handed
        over once), and how many clients the workers that sent none hold."""
        keys: list[str] = []
        unknown = 0
        for w in self._workers:
            if w.keys is None:
                unknown += int(w.counters.get("clients", 0))
            else:
                keys.extend(w.keys)
            w.keys = None
        return keys, unknown

    def client_rows(self, now_ns: int) -> list[dict[str, Any]]:
        """Each worker's busiest clients (a client always meets the same worker)."""
        del now_ns  # the workers computed `last_rx` when they pushed
        return [row for w in self._workers for row in w.clients]

    def close(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) and close the sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for w in self._workers:
            self._drop_conn(w)
            self._forget_pidfd(w)
            if w.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_WAIT_S
        for w in self._workers:
            while w.pid:
                try:
                    pid, _ = os.waitpid(w.pid, os.WNOHANG)
                except ChildProcessError:
                    pid = w.pid
                if pid:
                    w.pid = 0
                elif time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(w.pid, signal.SIGKILL)
                    os.waitpid(w.pid, 0)
                    w.pid = 0
                else:
                    time.sleep(0.01)
            w.sock.close()


# Classic BPF for SO_ATTACH_REUSEPORT_CBPF: pick the group's socket by the client's IP only
# (not its port), so a client that changes source port per request (chronyd does, RFC 9109)
# still always meets the worker holding its rate-limit bucket and interleaved timestamps.
# Loads reach the IP header through the SKF_NET_OFF window; the packet may be IPv4 (also on a
# dual-stack socket) or IPv6.  An index out of range makes the kernel fall back to its hash.
_SO_ATTACH_REUSEPORT_CBPF: Final = 51
_NET: Final = (-0x100000) & 0xFFFF_FFFF  # SKF_NET_OFF
_SOCK_FILTER: Final = struct.Struct("@HBBI")


def _ip_hash_program(workers: int) -> list[tuple[int, int, int, int]]:
    return [
        (0x30, 0, 0, _NET),  # ldb [net+0]: version/IHL byte
        (0x74, 0, 0, 4),  # rsh #4: the IP version
        (0x15, 0, 2, 4),  # jeq #4 ? next : +2
        (0x20, 0, 0, _NET + 12),  # ld [net+12]: IPv4 source address
        (0x05, 0, 0, 1),  # ja +1
        (0x20, 0, 0, _NET + 20),  # ld [net+20]: last word of the IPv6 source address
        (0x07, 0, 0, 0),  # tax
        (0x74, 0, 0, 16),  # rsh #16
        (0xAC, 0, 0, 0),  # xor x: fold the high half onto the low one
        (0x94, 0, 0, workers),  # mod #workers
        (0x16, 0, 0, 0),  # ret a: the socket index
    ]


def attach_ip_hash(sock: socket.socket, workers: int) -> None:
    """Make the reuseport group of ``sock`` choose sockets by client IP; OSError if refused."""
    program = _ip_hash_program(workers)
    code = b"".join(_SOCK_FILTER.pack(*ins) for ins in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HxxxxxxP", len(program), ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)


def _trim_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc's ``malloc_trim``) before a fork.

    Start-up (imports, config parsing) leaves free but resident memory in the heap; trimmed, it
    is neither in the main process nor copied into each worker: about 0.7 MB per process here.
    A libc without ``malloc_trim`` (musl) keeps its pages; nothing else changes.
    """
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)  # the process's own libc (ARCHITECTURE.md, "One libc")


def _bind_reuseport(host: str, port: int, options: SocketOptions | None) -> socket.socket:
    # On a wildcard, replies leave from their request's destination (udp.enable_pktinfo).
    options = dataclasses.replace(options or SocketOptions(), reuse_port=True)
    sock = bind_udp(host, port, options, pktinfo=True)
    enable_rx_timestamps(sock)
    return sock


def _map_moved(old: worker_mod.ClockMap, new: worker_mod.ClockMap) -> bool:
    """Whether the workers' mapping is off by more than 1 ns at ``new.u0``."""
    return abs(old(new.u0) - new.v0) > 1 or abs(old.rate_ppt - new.rate_ppt) > 1


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def start_server(
    cfg: ServerConfig,
    clock: Clock,
    template: ResponseTemplate,
    *,
    options: SocketOptions | None = None,
    event_loop_only: bool = False,
    keys: KeyState | None = None,
    fork: bool = True,
    symmetric_keys: Mapping[int, SymmetricKey] | None = None,
) -> NtpServer | WorkerPool:
    """Serve one ``[[server]]`` with ``template``: a worker pool, or (``workers = 0``, or
    ``event_loop_only``) the event loop itself.  ``options`` apply to every socket; ``keys``
    (NTS) reach a pool's workers, while an event-loop server gets its NTS hook from the
    caller.  With ``fork=False`` a pool's sockets are bound (so a bad address fails here) but
    its workers are forked only by the caller's ``start()``: a daemon does that once the rest
    of its start-up is done, so what start-up still allocates does not land on pages the
    workers would share, copying them (0.6 MB less summed PSS here, bench/README.md)."""
    access = AccessList(cfg.allow, cfg.deny)
    policy = server_policy(cfg, symmetric_keys)
    host, port = cfg.listen.host, cfg.listen.port
    workers = 0 if event_loop_only else default_workers() if cfg.workers is None else cfg.workers

    def start(host: str) -> NtpServer | WorkerPool:
        if workers == 0:
            responder = NtpResponder(access, policy)
            responder.template = template
            return NtpServer.create(host, port, access, clock, responder=responder, options=options)
        pool = WorkerPool(host, port, workers, access, policy, clock, template, options, keys)
        return pool.start() if fork else pool

    try:
        return start(host)
    except OSError as exc:
        # The wildcard "[::]" (the default) on a host without IPv6 (or in a simulator that
        # has only IPv4): serve IPv4, as chronyd does, rather than not at all.
        if not is_ipv6_wildcard(host) or exc.errno not in (errno.EAFNOSUPPORT, errno.EINVAL):
            raise
        log.warning("no IPv6 here (%s): serving NTP on 0.0.0.0:%d, IPv4 only", exc.strerror, port)
        return start("0.0.0.0")
