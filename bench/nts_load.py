"""NTS load generator for ``bench.nts``: several processes, each from its own source address.

Why processes: one Python process sending and matching NTS requests tops out well below
chronyd's NTS rate, so a single generator measured itself, not the servers.  Each process here
binds 127.0.0.(2 + i) (so a server spreading clients over sockets or workers by address sees
several clients), keeps ``window`` pre-built requests in flight on a blocking socket, and for
every answer sends the next one.  An answer counts when it is as long as the request (an
authenticated response; a NAK is 84 bytes), in server mode with a non-zero stratum, and its
origin names one of our outstanding requests; every ``_VERIFY_EVERY``-th such answer is also
authenticated with the S2C key (a server answering garbage of the right length would show up
as ``bad``).  A request unanswered for 50 ms is lost, unless its answer still comes later
(then it is ``late``: the machine or the server stalled).  Each run is bounded by ``seconds`` plus
that timeout.
"""

from __future__ import annotations

import resource
import socket
import struct
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from bench.loadgen import fork_python_generators, join_all, run_generator
from bench.server import cpu_seconds
from tsyncd.nts.aead import AEADS
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import decode_ntp
from tsyncd.wire.nts import split_nts

__all__ = [
    "Load",
    "Run",
    "answers_per_cpu_s",
    "best_at_zero_loss",
    "measure",
]

_RCVTIMEO = struct.pack("@ll", 0, 50_000)  # 50 ms: an answer later than that is lost
_TS = struct.Struct("!Q")
_ORIGIN_AT = 24
_TRANSMIT_AT = 40
_VERIFY_EVERY = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """What one server gets: its port, the requests and the S2C key to check answers with."""

    port: int
    packets: list[bytes]  # pre-built NTS requests, distinct transmit timestamps
    aead: int
    s2c: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One load level against one server."""

    server: str
    clients: int  # generator processes
    window: int  # requests in flight per process
    answers_per_s: float
    sent: int
    lost: int
    bad: int  # wrong length or mode, unknown origin, or failed the sampled authentication
    late: int  # answered after 50 ms (a stall, not a loss): neither lost nor counted in the rate
    verified: int  # answers fully authenticated (sampled)
    cpu_pct: float  # server CPU time / wall time (100 = one core)
    generator_cpu_pct: float  # the generator processes' CPU time / wall time


def _authentic(data: bytes, aead_id: int, s2c: bytes) -> bool:
    try:
        fields = split_nts(data, decode_ntp(data))
        if fields.nonce is None:
            return False
        AEADS[aead_id].open(s2c, fields.nonce, fields.ciphertext, fields.associated_data)
    except WireError:
        return False
    return True


def _generate(
    index: int, load: Load, window: int, seconds: float, conn: Connection, start_at: float
) -> None:
    """One generator process: keep ``window`` requests in flight until the time is up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((f"127.0.0.{2 + index}", 0))
    sock.connect(("127.0.0.1", load.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _RCVTIMEO)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    packets = load.packets
    count = len(packets)
    expected = len(packets[0])
    origins = [_TS.unpack_from(p, _TRANSMIT_AT)[0] for p in packets]
    buf = bytearray(4096)
    pending: set[int] = set()
    timed_out: set[int] = set()
    nxt = index * 997 % count  # processes start at different requests
    sent = ok = lost = bad = late = verified = 0
    send, recv_into, unpack_from = sock.send, sock.recv_into, _TS.unpack_from
    clock = time.perf_counter

    def send_next() -> None:
        nonlocal nxt, sent
        pending.add(origins[nxt])
        try:  # noqa: SIM105 - no context manager per packet in the generator's loop
            send(packets[nxt])
        except OSError:
            pass  # a full send buffer: counted as lost when it never comes back
        sent += 1
        nxt = nxt + 1 if nxt + 1 < count else 0

    while time.time() < start_at:
        time.sleep(0.001)
    end = clock() + seconds
    for _ in range(window):
        send_next()
    while True:
        try:
            n = recv_into(buf)
        except BlockingIOError:  # 50 ms without an answer: everything outstanding is lost
            lost += len(pending)
            timed_out |= pending
            pending.clear()
            if clock() >= end:
                break
            for _ in range(window):
                send_next()
            continue
        except OSError:
            continue
        (origin,) = unpack_from(buf, _ORIGIN_AT)
        if origin not in pending:
            if origin in timed_out:  # answered after its window timed out: late, not lost
                timed_out.discard(origin)
                lost -= 1
                late += 1
            else:
                bad += 1  # a duplicate or a stranger: no request of ours is freed by it
            continue
        pending.discard(origin)
        if n != expected or buf[0] & 7 != 4 or buf[1] == 0:
            bad += 1  # e.g. a NAK (84 bytes, stratum 0)
        else:
            check = not ok % _VERIFY_EVERY  # the first answer and every 512th after it
            if check and not _authentic(bytes(buf[:n]), load.aead, load.s2c):
                bad += 1
            else:
                ok += 1
                verified += check
        if clock() >= end:
            break
        send_next()
    # Answers still on their way count if they come within the timeout.
    while pending:
        try:
            n = recv_into(buf)
        except OSError:
            break
        (origin,) = unpack_from(buf, _ORIGIN_AT)
        if origin in pending and n == expected:
            pending.discard(origin)
            ok += 1
    lost += len(pending)
    conn.send((sent, ok, lost, bad, late, verified))
    conn.close()


def _run_c(
    gen: Path, load: Load, clients: int, window: int, seconds: float, start_at: float
) -> tuple[int, int, int, int, int, int]:
    """(sent, ok, lost, bad, late, verified) from ``clients`` C generator processes."""
    got = run_generator(gen, load.port, load.packets, clients, window, seconds, start_at)
    verified = sum(_authentic(sample, load.aead, load.s2c) for sample in got.samples)
    bad = got.bad + len(got.samples) - verified
    return got.sent, got.ok, got.lost, bad, got.late, verified


def _run_python(
    load: Load, clients: int, window: int, seconds: float, start_at: float
) -> tuple[int, int, int, int, int, int]:
    """(sent, ok, lost, bad, late, verified) from ``clients`` forked Python generator processes."""
    procs, conns = fork_python_generators(
        _generate, clients, lambda i, conn: (i, load, window, seconds, conn, start_at)
    )
    totals = [0] * 6
    for conn in conns:
        got = conn.recv() if conn.poll(seconds + 10) else (0,) * 6
        totals = [t + g for t, g in zip(totals, got, strict=True)]
    sent, ok, lost, bad, late, verified = totals
    join_all(procs)
    return sent, ok, lost, bad, late, verified


def measure(
    server: str,
    pid: int,
    load: Load,
    clients: int,
    window: int,
    seconds: float,
    gen: Path | None = None,
) -> Run:
    """Flood ``load.port`` from ``clients`` processes with ``window`` requests in flight each:
    the C generator ``gen`` if given, else Python ones."""
    start_at = time.time() + 0.3
    cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
    gen_start = _children_cpu_s()
    if gen is not None:
        counts = _run_c(gen, load, clients, window, seconds, start_at)
    else:
        counts = _run_python(load, clients, window, seconds, start_at)
    sent, ok, lost, bad, late, verified = counts
    cpu = cpu_seconds(pid) - cpu_start
    wall = time.monotonic() - wall_start - 0.3  # without the common start delay
    return Run(
        server=server,
        clients=clients,
        window=window,
        answers_per_s=ok / seconds,
        sent=sent,
        lost=lost,
        bad=bad,
        late=late,
        verified=verified,
        cpu_pct=100.0 * cpu / wall if wall > 0 else 0.0,
        generator_cpu_pct=100.0 * (_children_cpu_s() - gen_start) / wall if wall > 0 else 0.0,
    )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_at_zero_loss(runs: list[Run], server: str) -> float:
    """The highest answer rate among the server's runs that lost nothing and got no bad
    answer (0 if none)."""
    return max(
        (r.answers_per_s for r in runs if r.server == server and not r.lost and not r.bad),
        default=0.0,
    )


def answers_per_cpu_s(runs: list[Run], server: str) -> float:
    """Answers per second of the server's own CPU time over all its runs: what an answer
    costs the server, whatever held the generator back."""
    mine = [r for r in runs if r.server == server]
    cpu = sum(r.cpu_pct for r in mine)
    return 100.0 * sum(r.answers_per_s for r in mine) / cpu if cpu else 0.0
