"""Server memory benchmark: tsyncd's and chronyd's footprint per process, idle and after load.

Run from the repository root (tsyncd installed or importable, chronyd installed)::

    python -m bench.memory                    # idle, then after one 2 s load at window 32
    python -m bench.memory --load 0           # idle only
    python -m bench.memory --workers 4 --json

Both servers are started as ``bench.server`` starts them (tsyncd in measure mode with
``local-stratum = 10`` and one ``[[server]]`` on 127.0.0.1 with its default workers; chronyd
``-x``), left idle for ``--settle`` seconds, and measured from ``/proc/PID/smaps_rollup`` per
process: RSS, PSS (shared pages split between the processes that map them, so the sum over a
server's processes is its real cost) and its two parts, anonymous (heap: shared only between
tsyncd's own processes, so it does not depend on the rest of the machine) and file-backed
(libraries: their share varies with how many other processes map them), Private_Dirty
(pages that process alone holds: what a forked worker and its parent no longer share) and
anonymous memory.  Then each
server gets ``--load`` seconds of ``bench.server``'s flood and is measured again: a worker that
writes to pages it inherited un-shares them, which shows as Private_Dirty growing.
Last, ``--addresses`` requests come each from its own loopback address (127.1.0.0 up), one
round trip each, as a public server meets many clients: the "clients" phase shows what the
server's per-client state (tsyncd's client log, bounded by ``max-clients`` per worker) costs.
The issue's target is the tsyncd PSS sum (idle, default workers) at most 25 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procs import free_port
from bench.server import _tree, chronyd, measure, tsyncd

_FIELDS = {
    "Rss": "rss_mb",
    "Pss": "pss_mb",
    "Pss_Anon": "pss_anon_mb",
    "Pss_File": "pss_file_mb",
    "Private_Dirty": "private_dirty_mb",
    "Anonymous": "anonymous_mb",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessMemory:
    """One process's memory (MB) from /proc/PID/smaps_rollup."""

    pid: int
    role: str  # "main" or "worker N" (tsyncd), "main" (chronyd)
    rss_mb: float
    pss_mb: float
    pss_anon_mb: float  # PSS of anonymous pages: shared only within the server's own tree
    pss_file_mb: float  # PSS of library pages: depends on what else runs on the machine
    private_dirty_mb: float
    anonymous_mb: float


def process_memory(pid: int, role: str) -> ProcessMemory:
    """Read ``pid``'s smaps_rollup (zeros if it is gone)."""
    values = dict.fromkeys(_FIELDS.values(), 0.0)
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in _FIELDS:
                values[_FIELDS[key]] = int(rest.split()[0]) / 1024
    return ProcessMemory(pid=pid, role=role, **values)


def tree_memory(pid: int) -> list[ProcessMemory]:
    """Every process of a server: its main process first, then its descendants."""
    pids = _tree(pid)
    return [process_memory(p, "main" if p == pid else f"worker {i}") for i, p in enumerate(pids)]


def total(rows: Sequence[ProcessMemory]) -> ProcessMemory:
    """The sum over ``rows`` (RSS summed counts shared pages once per process)."""
    sums = {name: sum(getattr(r, name) for r in rows) for name in _FIELDS.values()}
    return ProcessMemory(pid=0, role="sum", **sums)


def many_clients(port: int, addresses: int, window: int = 256, timeout_s: float = 60.0) -> int:
    """One client request from each of ``addresses`` loopback addresses (127.1.0.0 up) to
    127.0.0.1:port, ``window`` at a time; how many were answered (bounded by ``timeout_s``)."""
    request = struct.pack("!B47x", 0x23)  # NTPv4 client mode, all else zero
    answered = 0
    deadline = time.monotonic() + timeout_s
    for first in range(0, addresses, window):
        if time.monotonic() > deadline:
            break
        socks = []
        try:
            for i in range(first, min(first + window, addresses)):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 0))
                s.sendto(request, ("127.0.0.1", port))
            for s in socks:
                s.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
                with contextlib.suppress(OSError):
                    answered += len(s.recv(512)) >= 48
        finally:
            for s in socks:
                s.close()
    return answered


def _print(server: str, phase: str, rows: Sequence[ProcessMemory]) -> None:
    for r in [*rows, total(rows)]:
        print(
            f"{server:8} {phase:6} {r.role:9} {r.rss_mb:>7.1f} {r.pss_mb:>7.1f} "
            f"{r.pss_anon_mb:>8.1f} {r.pss_file_mb:>8.1f} "
            f"{r.private_dirty_mb:>13.1f} {r.anonymous_mb:>9.1f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, default=None, help="tsyncd workers (default: its own)"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before measuring")
    parser.add_argument("--load", type=float, default=2.0, help="load seconds per server (0: none)")
    parser.add_argument("--window", type=int, default=32, help="requests in flight per generator")
    parser.add_argument("--clients", type=int, default=2, help="generator processes")
    parser.add_argument(
        "--addresses",
        type=int,
        default=16384,
        help="distinct client addresses for the last phase (0: none)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, dict[str, list[ProcessMemory]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmpdir:
        tmp = Path(tmpdir)
        t_port, c_port = free_port(), free_port()
        with tsyncd(tmp, t_port, args.workers) as t_proc, chronyd(tmp, c_port) as c_proc:
            servers = [("tsyncd", t_proc.pid, t_port), ("chronyd", c_proc.pid, c_port)]
            time.sleep(max(0.0, args.settle))  # let start-up garbage settle (bounded)
            for name, pid, _ in servers:
                result[name] = {"idle": tree_memory(pid)}
            if args.load > 0:
                for name, pid, port in servers:
                    measure(name, pid, port, args.clients, args.window, args.load)
                    result[name]["loaded"] = tree_memory(pid)
            if args.addresses > 0:
                for name, pid, port in servers:
                    answered = many_clients(port, args.addresses)
                    print(
                        f"{name}: {answered} of {args.addresses} addresses answered",
                        file=sys.stderr,
                    )
                    result[name]["clients"] = tree_memory(pid)
    if args.json:
        out = {
            name: {
                phase: {"processes": [asdict(r) for r in rows], "sum": asdict(total(rows))}
                for phase, rows in phases.items()
            }
            for name, phases in result.items()
        }
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{'server':8} {'phase':6} {'process':9} {'RSS MB':>7} {'PSS MB':>7} "
        f"{'anon PSS':>8} {'file PSS':>8} "
        f"{'Priv.dirty MB':>13} {'Anon MB':>9}"
    )
    for name, phases in result.items():
        for phase, rows in phases.items():
            _print(name, phase, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
