"""Server throughput benchmark: tsyncd and chronyd answering a loopback flood, same run.

Run from the repository root (tsyncd installed or importable, chronyd installed)::

    python -m bench.server                    # 2 s per load level, 2 rounds, default workers
    python -m bench.server --seconds 3 --clients 3 --window 8 --window 32
    python -m bench.server --workers 0        # tsyncd serving from its event loop
    python -m bench.server --json

Both servers listen on 127.0.0.1 (the same socket kind), tsyncd in measure mode with
``local-stratum = 10`` and chronyd with ``-x`` and ``local stratum 10``, so neither touches the
clock.  The load generator is ``--clients`` processes, each with its own source address
(127.0.0.2, .3, ...) and a blocking socket that keeps ``window`` requests in flight: every
valid answer (server mode, non-zero stratum, origin equal to one of our outstanding transmit
timestamps) is counted and replaced by a new request; a request unanswered for 50 ms is lost.
For each window and server it prints answers/s, loss and round-trip p50/p99; then per server
the best rate with zero loss, its memory (RSS of every process; PSS, which counts pages
shared by tsyncd's forked workers once), and the ratio tsyncd / chronyd.  The CPU column is
the server's CPU time over the run's wall time (100 = one core): a server well under 100 per
process was waiting for the generator, not saturated; answers per CPU-second compares the
servers' cost per answer independently of that.  The machine's load
average before the run is printed too: the generator shares the CPUs with the servers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.loadgen import (
    add_generator_option,
    compile_generator,
    fork_python_generators,
    join_all,
    run_generator,
)
from bench.procs import find_binary, free_port

_REQUEST = bytes([0x23]) + bytes(47)  # LI 0, VN 4, mode 3
_RCVTIMEO = struct.pack("@ll", 0, 50_000)  # 50 ms: an answer later than that is lost
_ORIGIN = struct.Struct("!Q")
_LATENCY_SAMPLE = 8  # keep every 8th round trip


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One load level against one server."""

    server: str
    window: int  # requests in flight per generator process
    answers_per_s: float
    loss_pct: float
    bad: int  # answers that matched no outstanding request, or were not a server's reply
    p50_us: float | None
    p99_us: float | None
    cpu_pct: float  # server CPU time (user + system, all its processes) / wall time


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """A server's memory after the runs, over all its processes."""

    processes: int
    rss_mb: float  # sum of VmRSS (shared pages counted in every process)
    pss_mb: float  # sum of Pss (shared pages split between the processes)


# --------------------------------------------------------------------------- load generator


def _generate(
    index: int, port: int, window: int, seconds: float, conn: Connection, start_at: float
) -> None:
    """One generator process: keep ``window`` requests in flight until the time is up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((f"127.0.0.{2 + index}", 0))
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _RCVTIMEO)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    request = bytearray(_REQUEST)
    buf = bytearray(512)
    pending: dict[int, int] = {}
    seq = (index + 1) << 40
    latencies: list[int] = []
    ok = lost = bad = 0
    send, recv_into, clock = sock.send, sock.recv_into, time.perf_counter_ns
    pack_into, unpack_from = _ORIGIN.pack_into, _ORIGIN.unpack_from

    def refill() -> None:
        nonlocal seq
        while len(pending) < window:
            seq += 1
            pack_into(request, 40, seq)
            pending[seq] = clock()
            try:  # noqa: SIM105 - no context manager per packet in the generator's loop
                send(request)
            except OSError:
                pass  # a full send buffer: counted as lost when it never comes back

    while time.time() < start_at:
        time.sleep(0.001)
    end = clock() + int(seconds * 1e9)
    refill()
    while True:
        try:
            n = recv_into(buf)
        except BlockingIOError:  # 50 ms without an answer: everything outstanding is lost
            lost += len(pending)
            pending.clear()
            if clock() >= end:
                break
            refill()
            continue
        except OSError:
            continue
        now = clock()
        (origin,) = unpack_from(buf, 24)
        sent = pending.pop(origin, None)
        if sent is None or n < 48 or buf[0] & 7 != 4 or buf[1] == 0:
            bad += 1
        else:
            ok += 1
            if not ok % _LATENCY_SAMPLE:
                latencies.append(now - sent)
        if now >= end:
            break
        seq += 1
        pack_into(request, 40, seq)
        pending[seq] = clock()
        try:  # noqa: SIM105 - as above
            send(request)
        except OSError:
            pass
    # Answers still on their way count as answered if they come within the timeout.
    while pending:
        try:
            recv_into(buf)
        except (BlockingIOError, OSError):
            break
        (origin,) = unpack_from(buf, 24)
        if pending.pop(origin, None) is not None:
            ok += 1
    lost += len(pending)
    conn.send((ok, lost, bad, latencies))
    conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants."""
    ticks = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def _plain_requests(count: int) -> list[bytes]:
    """``count`` client requests whose transmit timestamps name them (magic << 32 | index)."""
    magic = random.getrandbits(31) | 1 << 31
    return [_REQUEST[:40] + _ORIGIN.pack(magic << 32 | i) for i in range(count)]


def measure_c(
    gen: Path, server: str, pid: int, port: int, clients: int, window: int, seconds: float
) -> Run:
    """``measure`` with the C generator ``gen`` (bench/loadgen.c)."""
    start_at = time.time() + 0.3
    while time.time() < start_at - 0.05:
        time.sleep(0.001)
    cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
    got = run_generator(gen, port, _plain_requests(4096), clients, window, seconds, start_at)
    cpu = cpu_seconds(pid) - cpu_start
    wall = time.monotonic() - wall_start - 0.05
    return _run(server, window, seconds, got.ok, got.lost, got.bad, got.latencies_ns, cpu, wall)


def _run(
    server: str,
    window: int,
    seconds: float,
    ok: int,
    lost: int,
    bad: int,
    latencies: list[int],
    cpu: float,
    wall: float,
) -> Run:
    latencies.sort()

    def pct(q: float) -> float | None:
        return latencies[int(q * (len(latencies) - 1))] / 1000 if latencies else None

    total = ok + lost
    return Run(
        server=server,
        window=window,
        answers_per_s=ok / seconds,
        loss_pct=100.0 * lost / total if total else 100.0,
        bad=bad,
        p50_us=pct(0.5),
        p99_us=pct(0.99),
        cpu_pct=100.0 * cpu / wall if wall > 0 else 0.0,
    )


def measure(server: str, pid: int, port: int, clients: int, window: int, seconds: float) -> Run:
    """Flood ``port`` with ``clients`` Python processes x ``window`` requests in flight."""
    start_at = time.time() + 0.3
    procs, conns = fork_python_generators(
        _generate, clients, lambda i, conn: (i, port, window, seconds, conn, start_at)
    )
    ok = lost = bad = 0
    latencies: list[int] = []
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
    for conn in conns:
        o, lo, b, lat = conn.recv() if conn.poll(seconds + 10) else (0, 0, 0, [])
        ok, lost, bad = ok + o, lost + lo, bad + b
        latencies.extend(lat)
    cpu = cpu_seconds(pid) - cpu_start
    wall = time.monotonic() - wall_start
    join_all(procs)
    return _run(server, window, seconds, ok, lost, bad, latencies, cpu, wall)


# --------------------------------------------------------------------------- servers


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(_REQUEST[:40] + b"\x00" * 7 + b"\x01", ("127.0.0.1", port))
        try:
            data = s.recv(512)
        except OSError:
            return False
    return len(data) >= 48 and data[1] != 0


@contextlib.contextmanager
def _process(argv: Sequence[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tsyncd(tmp: Path, port: int, workers: int | None) -> contextlib.AbstractContextManager[Any]:
    """tsyncd in measure mode serving its local clock at stratum 10 on 127.0.0.1:port."""
    conf = tmp / "tsyncd.toml"
    workers_line = "" if workers is None else f"workers = {workers}\n"
    conf.write_text(
        '[clock]\nmode = "measure"\n[synchronization]\nlocal-stratum = 10\n'
        f'[control]\nsocket = "{tmp}/tsyncd.sock"\n[log]\nlevel = "warning"\n'
        f'[[server]]\nlisten = "127.0.0.1:{port}"\n{workers_line}'
    )
    argv = [sys.executable, "-m", "tsyncd", "-c", str(conf)]
    return _process(argv, port, tmp / "tsyncd.log")


def chronyd(tmp: Path, port: int) -> contextlib.AbstractContextManager[Any]:
    """chronyd -x (never touches the clock) serving local stratum 10 on 127.0.0.1:port."""
    binary = find_binary("chronyd")
    d = tmp / "chronyd"
    d.mkdir(mode=0o700)
    user = "user root\n" if os.geteuid() == 0 else ""
    (d / "chrony.conf").write_text(
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.0/8\n"
        f"cmdport 0\nbindcmdaddress {d}/chronyd.sock\npidfile {d}/chronyd.pid\n"
        f"driftfile {d}/drift\n{user}"
    )
    argv = [binary, "-x", "-d", "-f", str(d / "chrony.conf")]
    return _process(argv, port, tmp / "chronyd.log")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _tree(pid: int) -> list[int]:
    return [pid] + [p for child in _children(pid) for p in _tree(child)]


def memory(pid: int) -> Memory:
    """RSS and PSS summed over ``pid`` and its descendants (kB fields of /proc)."""
    rss = pss = 0
    pids = _tree(pid)
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return Memory(processes=len(pids), rss_mb=rss / 1024, pss_mb=pss / 1024)


# --------------------------------------------------------------------------- report


def best_at_zero_loss(runs: Sequence[Run], server: str) -> float:
    """The highest answer rate among the server's runs that lost nothing (0 if none)."""
    return max(
        (r.answers_per_s for r in runs if r.server == server and r.loss_pct == 0.0 and not r.bad),
        default=0.0,
    )


def answers_per_cpu_s(runs: Sequence[Run], server: str) -> float:
    """Answers per second of the server's CPU time, over all its runs (efficiency)."""
    mine = [r for r in runs if r.server == server]
    cpu = sum(r.cpu_pct for r in mine)
    return 100.0 * sum(r.answers_per_s for r in mine) / cpu if cpu else 0.0


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per load level and server")
    parser.add_argument("--clients", type=int, default=2, help="generator processes")
    parser.add_argument(
        "--window", type=int, action="append", help="requests in flight per process (repeat)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="tsyncd workers (default: its own)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="passes over the windows, servers alternating"
    )
    add_generator_option(parser)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    windows = args.window or [4, 16, 64]
    rounds = min(max(args.rounds, 1), 5)
    load_before = os.getloadavg()
    runs: list[Run] = []
    mem: dict[str, Memory] = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmpdir:
        tmp = Path(tmpdir)
        t_port, c_port = free_port(), free_port()
        gen = compile_generator(tmp) if args.generator == "c" else None
        with tsyncd(tmp, t_port, args.workers) as t_proc, chronyd(tmp, c_port) as c_proc:
            servers = [("tsyncd", t_proc, t_port), ("chronyd", c_proc, c_port)]
            # Rounds alternate which server goes first, so a burst of other work on the
            # machine (or a warming cache) does not always fall on the same one.
            for round_ in range(rounds):
                for window in windows:
                    for name, proc, port in servers[:: -1 if round_ % 2 else 1]:
                        level = (name, proc.pid, port, args.clients, window, args.seconds)
                        if gen is not None:
                            runs.append(measure_c(gen, *level))
                        else:
                            runs.append(measure(*level))
            mem["tsyncd"] = memory(t_proc.pid)
            mem["chronyd"] = memory(c_proc.pid)
    best = {name: best_at_zero_loss(runs, name) for name in ("tsyncd", "chronyd")}
    peak = {name: max(r.answers_per_s for r in runs if r.server == name) for name in best}
    efficiency = {name: answers_per_cpu_s(runs, name) for name in best}
    ratio = best["tsyncd"] / best["chronyd"] if best["chronyd"] else None
    peak_ratio = peak["tsyncd"] / peak["chronyd"] if peak["chronyd"] else None
    if args.json:
        print(
            json.dumps(
                {
                    "load_average_before": load_before,
                    "cpus": os.cpu_count(),
                    "clients": args.clients,
                    "generator": "c" if gen is not None else "python",
                    "seconds": args.seconds,
                    "rounds": rounds,
                    "runs": [asdict(r) for r in runs],
                    "best_at_zero_loss": best,
                    "peak": peak,
                    "memory": {k: asdict(v) for k, v in mem.items()},
                    "answers_per_cpu_second": efficiency,
                    "ratio_at_zero_loss": ratio,
                    "ratio_peak": peak_ratio,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
        f"on {os.cpu_count()} CPUs; {args.clients} {'C' if gen is not None else 'Python'} "
        f"generator processes, {args.seconds:g} s each, "
        f"{rounds} round(s)"
    )
    print(
        f"{'server':8} {'in flight':>9} {'answers/s':>11} {'loss %':>7} {'bad':>5} "
        f"{'p50 µs':>8} {'p99 µs':>8} {'CPU %':>6}"
    )
    for r in runs:
        print(
            f"{r.server:8} {r.window * args.clients:>9} {r.answers_per_s:>11,.0f} "
            f"{r.loss_pct:>7.3f} {r.bad:>5} {_fmt(r.p50_us):>8} {_fmt(r.p99_us):>8} "
            f"{r.cpu_pct:>6.0f}"
        )
    for name in ("tsyncd", "chronyd"):
        m = mem[name]
        print(
            f"{name}: {best[name]:,.0f} answers/s at zero loss (peak {peak[name]:,.0f}), "
            f"{efficiency[name]:,.0f} answers per CPU-second "
            f"({1e6 / efficiency[name] if efficiency[name] else 0:.1f} µs CPU each); "
            f"{m.processes} process(es), RSS {m.rss_mb:.1f} MB, PSS {m.pss_mb:.1f} MB"
        )
    shown = "-" if ratio is None else f"{ratio:.2f}"
    shown_peak = "-" if peak_ratio is None else f"{peak_ratio:.2f}"
    print(f"ratio tsyncd/chronyd: {shown} at zero loss, {shown_peak} at peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
