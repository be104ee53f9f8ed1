"""One receive worker of the multi-core server: a tight blocking loop in a forked process.

Theory of operation
-------------------
The per-packet work is parse, check, fill, send (``NtpResponder.respond``); what limits a
Python server is everything around it.  An asyncio datagram protocol pays for the event loop
on every packet (about 33 k/s here), a blocking ``recvmsg``/``sendto`` loop does not (about
five times that), so each worker is a process running just that loop on its own
``SO_REUSEPORT`` socket.  The kernel spreads clients over the sockets by their IP (a BPF
program attached by ``workers.py``), so each client always meets the same worker, which keeps
that client's rate-limit bucket and interleaved timestamps (ARCHITECTURE.md, "Servers").
The loop takes every queued request at once (``recvmmsg``, up to 32) and sends the batch's
answers with one ``sendmmsg`` (``servers/mmsg.py``): fewer system calls and no address
parsing per answer.  Basic answers get their Transmit read once, right before the batch is
sent, plus the send lag learnt from the kernel's TX stamps of lone answers (``latetx.py``).
A lone answer (light load, where a client's precision shows) is made ready before that read
and sent by itself, so only the system call follows the read (``lonesend.py``).  Interleaved
clients, which want precision, get the kernel's own transmit stamp, sent one by one.

While requests come, the loop waits on nothing but its socket.  ``SO_RCVTIMEO`` bounds each
receive (no extra ``poll`` per packet, as a Python socket timeout would cost), and every
``_CHECK_EVERY`` packets, ``_CHECK_INTERVAL_S`` or receive timeout the worker looks at its pipe
from the main process: a new response template, clock mapping, access list (``tsyncctl
allow``/``deny``) or NTS key set (``ntskeys``), or a request to exit.  After a receive timeout
(idle) it waits in ``poll`` for a request or ``WAKE_SIGNAL``, up to ``_IDLE_WAIT_MS``, and
reads its pipe before the next request.
It pushes its counters and busiest clients up the same pipe every ``_PUSH_INTERVAL_S`` (idle:
at the end of each idle wait), when it goes idle after traffic, and when asked: then the main
process also sends it ``WAKE_SIGNAL``, which ends a waiting receive, and the worker takes the
requests already queued and pushes at once (a scrape or ``tsyncctl serverstats`` took up to
two receive timeouts).

Time: the kernel stamps arrivals by the host's CLOCK_REALTIME; the daemon serves its own
(disciplined or virtual) time.  The main process sends a linear mapping ``ClockMap`` from one
to the other whenever it changes, so the worker needs no clock object.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

from tsyncd.net.sockets import libc
from tsyncd.net.udp import BroadcastRoutes
from tsyncd.net.warmsend import SendWarmer
from tsyncd.servers import mmsg, txstamp
from tsyncd.servers.latetx import BASIC, LATE_KODS, SendLag, restamp, transmit_ntp
from tsyncd.servers.lonesend import LoneSend, SocketLoneSend, lone_send, send_staged
from tsyncd.servers.ntskeys import KeyState
from tsyncd.servers.pipe import Connection  # not multiprocessing's: it costs memory
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate, ServerPolicy
from tsyncd.wire.ntp import HEADER_LEN

if TYPE_CHECKING:
    from tsyncd.nts.server import NtsResponder
    from tsyncd.servers.sealtx import LateTransmit

_CHECK_EVERY: Final = 512  # packets between looks at the pipe under load ...
_CHECK_INTERVAL_S: Final = 0.1  # ... or this long, whichever comes first
_RCV_TIMEOUT: Final = struct.pack("@ll", 0, 200_000)  # struct timeval: 0.2 s
_PUSH_INTERVAL_S: Final = 0.5
# An idle worker waits this long for a request or a message, then pushes (its heartbeat: the
# main process kills a worker silent for ``workers._STUCK_S``).  Few wake-ups when idle, as a
# laptop or a quiet server wants (chronyd sleeps until its next poll).
_IDLE_WAIT_MS: Final = 2500
# Sent by the main process after a "push" request (``WorkerPool.refresh``): it interrupts an
# idle worker's receive, so a scrape or ``tsyncctl serverstats`` need not wait for the receive
# timeout.  Ignored by default, so one that comes before the handler is set harms nothing.
WAKE_SIGNAL: Final = signal.SIGURG
_CLIENT_ROWS: Final = 256  # busiest clients pushed up for `tsyncctl clients`
_MAX_KEYS: Final = 65_536  # client log keys pushed when asked (16 times the default log)
RATE_UNIT: Final = 1_000_000_000_000  # ClockMap.rate_ppt denominator
_PR_SET_PDEATHSIG: Final = 1
# An NTPv4 client request with a Transmit of 1 s, all else zero (``warm_up``).
_WARM_REQUEST: Final = bytes([0x23]) + bytes(39) + (1 << 32).to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class ClockMap:
    """Daemon time of a host CLOCK_REALTIME reading: v0 + d + d * rate_ppt / 1e12, d = u - u0."""

    u0: int  # host ns
    v0: int  # daemon ns at u0
    rate_ppt: int  # how much faster the daemon's clock runs, parts per 10**12

    def __call__(self, u: int) -> int:
        d = u - self.u0
        return self.v0 + d + d * self.rate_ppt // RATE_UNIT


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker starts with (inherited through fork, never pickled)."""

    index: int
    access: AccessList
    policy: ServerPolicy
    template: ResponseTemplate
    clock_map: ClockMap
    keys: KeyState | None = None  # NTS cookie keys, when the daemon serves NTS


def run(sock: socket.socket, conn: Connection, setup: WorkerSetup) -> NoReturn:
    """The forked child's whole life: serve until told to stop, killed, or the parent is gone."""
    code = 0
    try:
        _reset_signals()
        _serve(sock, conn, setup)
    except BaseException:  # the child must never return into the parent's code
        code = 1
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(code)


def _reset_signals() -> None:
    """Undo what the parent's event loop set up: its wakeup fd and its handlers."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent stops us with SIGTERM: just die
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # WAKE_SIGNAL only interrupts the blocking receive (EINTR), so the pipe is read at once.
    signal.signal(WAKE_SIGNAL, _woken)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # Die with the parent even if it is killed outright (no pipe EOF needed).
    with contextlib.suppress(OSError, AttributeError):
        libc().prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _woken(signum: int, frame: object) -> None:
    """``WAKE_SIGNAL``'s handler: the interrupted receive is all it is for."""


def warm_up(sock: socket.socket, setup: WorkerSetup) -> None:
    """Build a worker's parts once in the main process, before the first fork, and drop them.

    What building them first does (ctypes' array types and C function lookups, the first runs
    of the set-up, answer and report code) then lives in the heap every worker shares instead
    of in pages each worker copies: about 0.4 MB less anonymous memory over two workers
    (bench/README.md, "Server memory").  Nothing is sent or received: the socket is only
    asked whether it delivers packet info.
    """
    responder = _parts(sock, setup)[0]
    with contextlib.suppress(AttributeError):
        libc().prctl  # noqa: B018 - looked up here, once (``_reset_signals`` calls it)
    # The rest only warms code up: a throwaway responder answers a plain client request and
    # its report is pickled, as ``_serve`` and ``_push`` will; no failure of it may stop the
    # daemon (the worker meets the same code again, where errors are reported).
    with contextlib.suppress(Exception):
        now = time.time_ns()
        responder.respond(_WARM_REQUEST, "127.0.0.1", now, now, 123)
        pickle.dumps(_stats(responder, None, now, 0, False), pickle.HIGHEST_PROTOCOL)


def _parts(
    sock: socket.socket, setup: WorkerSetup
) -> tuple[
    NtpResponder, mmsg.MessageBatch | mmsg.SingleMessage, LoneSend | SocketLoneSend, SendLag
]:
    """A worker's responder, datagram IO, lone-reply sender and send-lag estimate."""
    responder = NtpResponder(setup.access, setup.policy)
    responder.template = setup.template
    io = mmsg.datagram_io(sock)
    return responder, io, lone_send(io, sock), SendLag()


def _serve(sock: socket.socket, conn: Connection, setup: WorkerSetup) -> None:
    responder, io, lone, lag = _parts(sock, setup)
    responder.broadcast_routes = BroadcastRoutes()  # the process's: it exits with it
    clock_map = setup.clock_map
    nts: NtsResponder | None = None
    sealer: LateTransmit | None = None  # NTS replies' Transmit, read just before the seal
    if setup.keys is not None:
        from tsyncd.nts.server import NtsResponder  # cryptography only when NTS is served

        nts = NtsResponder(setup.keys.keyset())
        responder.extensions = nts
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _RCV_TIMEOUT)
    tx_stamps = True
    warmer = SendWarmer(sock, lone.send_raw)
    if nts is not None:
        from tsyncd.servers.sealtx import LateTransmit

        # The current clock map (rebound below when the main process sends a new one).
        sealer = LateTransmit(lambda host_ns: clock_map(host_ns), warmer.warm)
        responder.late_transmit = sealer

    def on_stamp(payload: bytes, tx_ns: int) -> None:
        responder.handle_tx_timestamp(payload, clock_map(tx_ns))  # the current clock map

    # Locals: attribute lookups are a measurable share of a packet's cost in this loop.
    receive, send = io.receive, io.send
    receive_now = functools.partial(io.receive, mmsg.RECEIVE_NOW)
    respond = responder.respond
    time_ns = time.time_ns
    monotonic = time.monotonic
    # Idle, the worker waits in poll for a request or WAKE_SIGNAL, whose C handler writes a
    # byte to ``bell`` (``signal.set_wakeup_fd``): poll itself is retried after the signal, and
    # a signal just before the wait still ends it.  Messages (the template changes every
    # second) wait in the pipe meanwhile: a request wakes the worker, which reads them first.
    bell, ringer = socket.socketpair()
    bell.setblocking(False)
    ringer.setblocking(False)
    with contextlib.suppress(ValueError):  # not the main thread: some tests serve in one
        signal.set_wakeup_fd(ringer.fileno(), warn_on_full_buffer=False)
    idle_wait = select.poll()
    idle_wait.register(sock.fileno(), select.POLLIN)
    idle_wait.register(bell.fileno(), select.POLLIN)
    quiet = False  # the last idle wait timed out: do not wait in the receive too
    next_push = monotonic()
    pushed = -1  # responder.received at the last push
    acked = 0  # the main process's last "push" request number
    with_keys = False  # that request wants the client log's keys too (``_push``)
    asked = False  # a control client waits: take what is queued, then push without waiting
    while True:
        while conn.poll():
            message = conn.recv()
            kind = message[0]
            if kind == "template":
                responder.template = message[1]
            elif kind == "clock":
                clock_map = message[1]
            elif kind == "access":
                responder.set_access(message[1])  # tsyncctl allow/deny
            elif kind == "keys" and nts is not None:
                nts.keys = message[1].keyset()  # rotated or reloaded by the main process
            elif kind == "push":
                next_push, asked = 0.0, True  # a control client waits for fresh counters
                with contextlib.suppress(BlockingIOError):
                    bell.recv(64)  # its WAKE_SIGNAL's bytes (one per push request)
                # Requests may queue up: one push answers them all, keys if any asked.
                acked, with_keys = message[1], with_keys or message[2]
            elif kind == "stop":
                return
        u0, v0, rate = clock_map.u0, clock_map.v0, clock_map.rate_ppt
        offset = v0 - u0
        idle = False
        check_at = monotonic() + _CHECK_INTERVAL_S
        packets = 0
        while packets < _CHECK_EVERY:
            if monotonic() >= check_at:
                break  # steady light traffic never times out: look at the pipe anyway
            try:
                # Every queued request, up to the batch size.  Asked for counters, the worker
                # takes what came before the question, not waiting for more.
                batch = receive_now() if asked or quiet else receive()
            except BlockingIOError:
                idle = True  # SO_RCVTIMEO (or nothing queued): look at the pipe
                break
            except InterruptedError:
                break  # WAKE_SIGNAL: the main process has written to the pipe
            except OSError:
                continue  # ICMP errors from earlier sends surface here; not fatal
            packets += len(batch)
            if sealer is not None:
                # A lone NTS request (a client's pace, where precision shows) gets its Transmit
                # read just before the seal (sealtx.py).  In a batch (load) its reply waits for
                # the rest of the batch anyway: the read before the NTS work stands, as the
                # per-reply read would cost about 1.4 us of CPU (bench.nts: 120 k -> 107 k/s).
                responder.late_transmit = sealer if len(batch) == 1 else None
            replies: list[tuple[int, bytes, bool]] = []
            late = False  # some reply is basic: its Transmit is written as the batch goes out
            last_rx = 0
            for i, (data, address, rx) in enumerate(batch):
                if rx is None:
                    rx = time_ns()
                if rate:  # ClockMap inlined; a clock at the host's rate needs no product
                    d = rx - u0
                    rx = v0 + d + d * rate // RATE_UNIT
                else:
                    rx += offset
                if len(data) == HEADER_LEN:
                    tx = rx  # a plain header: basic replies get their Transmit late (below)
                else:  # a MAC seals its reply now: its Transmit is read now (NTS: later)
                    tx = time_ns()
                    if rate:
                        d = tx - u0
                        tx = v0 + d + d * rate // RATE_UNIT
                    else:
                        tx += offset
                    if sealer is not None:
                        sealer.read_ns = 0  # set if the NTS seal reads the Transmit itself
                reason, response, want_tx = respond(data, address[0], rx, tx, address[1])
                if response is None:
                    continue
                if tx != rx and sealer is not None and sealer.read_ns:  # NTS sealed (sealtx.py)
                    # Only a lone request's seal reads the Transmit: its reply leaves at once.
                    if tx_stamps and sealer.wants_stamp(want_tx):
                        control = io.reply_control(i)  # the source address (udp.reply_pktinfo)
                        sealer.send_stamped(sock, response, address, on_stamp, control)
                    else:
                        send([(i, response, False)], 0)
                    warmer.sent(sealer.read_ns)  # drain the warm-up (sealtx.LateTransmit.warm)
                    continue
                if want_tx and tx_stamps:
                    read = 0
                    if reason == BASIC:  # an interleaving client's first, basic, reply
                        read = time_ns()
                        response = restamp(response, rx, clock_map(read + lag.lag_ns))
                    if txstamp.send_stamped(sock, response, address, io.reply_control(i)):
                        for payload, tx_ns in txstamp.read_stamps(sock):
                            if read and payload == response:
                                lag.observe(read, tx_ns)
                            responder.handle_tx_timestamp(payload, clock_map(tx_ns))
                    continue
                if reason == BASIC or reason in LATE_KODS:  # Transmit written as it is sent
                    late = True
                    if rx > last_rx:
                        last_rx = rx
                    replies.append((i, response, True))
                else:
                    replies.append((i, response, False))
            if not replies:
                continue
            if late and len(replies) == 1:
                # A lone reply (light load, where precision shows): made ready before the clock
                # read, so only the system call follows it (lonesend.py).
                if len(batch) == 1:  # after a quiet spell the send path is cold (warmsend.py)
                    warmer.warm(batch[0][2] or time_ns())
                i, response, _late = replies[0]
                before = time_ns()
                # A lone request's wait predicts the lag (latetx.py); some replies are sent
                # stamped, to learn how long the send itself takes.
                stamped = tx_stamps and lag.due(before)
                lone.stage(i, response, stamped)
                read = send_staged(
                    lone,
                    lag,
                    sock,
                    response,
                    stamped=stamped,
                    busy_ns=before - (batch[0][2] or before) if len(batch) == 1 else -1,
                    shift_ns=clock_map(before) - before,  # the rate over µs: below 1 ns
                    after_ns=last_rx,
                    on_stamp=on_stamp,
                )
                warmer.sent(read)
                continue
            transmit = 0
            if late:
                # Transmit read right before the batch goes out, plus the learnt send lag
                # (latetx.py): RFC 5905 wants it as late as possible.
                read = time_ns()
                tx = read + lag.lag_ns
                if rate:
                    d = tx - u0
                    tx = v0 + d + d * rate // RATE_UNIT
                else:
                    tx += offset
                # After every Receive of the batch (RFC 9769: never equal to one).
                transmit = transmit_ntp(tx if tx > last_rx else last_rx + 1)
                send(replies, transmit)  # the batch's answers in one system call
                warmer.sent(read)
                continue
            send(replies, transmit)
        now = monotonic()
        # Push on schedule, or as soon as things calm down after new traffic, so control and
        # metrics lag a quiet server by one receive timeout at most.
        if now >= next_push or (idle and responder.received != pushed):
            next_push = now + _PUSH_INTERVAL_S
            pushed = responder.received
            _push(conn, responder, nts, clock_map(time_ns()), acked, with_keys)
            with_keys = asked = False
        quiet = idle and not idle_wait.poll(_IDLE_WAIT_MS)


def _push(
    conn: Connection,
    responder: NtpResponder,
    nts: NtsResponder | None,
    now_ns: int,
    acked: int,
    with_keys: bool,
) -> None:
    """Counters and the busiest clients up the pipe; with ``with_keys`` (asked for when
    clients may meet several client logs) every client log key, up to ``_MAX_KEYS``, so the
    main process can count each client once (``stats.distinct_clients``)."""
    conn.send(_stats(responder, nts, now_ns, acked, with_keys))


def _stats(
    responder: NtpResponder,
    nts: NtsResponder | None,
    now_ns: int,
    acked: int,
    with_keys: bool,
) -> tuple[Any, ...]:
    """``_push``'s message."""
    counters: dict[str, Any] = responder.counters()
    if nts is not None:
        counters["nts_requests"] = nts.requests
        counters["nts_naks"] = nts.naks
        counters["nts_cookies_issued"] = nts.cookies_issued
    records = responder.clients.records
    keys = list(records) if with_keys and len(records) <= _MAX_KEYS else None
    return ("stats", counters, responder.client_rows(now_ns, _CLIENT_ROWS), acked, keys)
