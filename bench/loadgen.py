"""The C load generator (``bench/loadgen.c``) shared by ``bench.server`` and ``bench.nts``.

Why one generator for both: each benchmark compares tsyncd with chronyd under the same load,
and a generator in Python spent more CPU per request than chronyd spends answering it, so on
this 2-CPU machine it held chronyd (and the ratio) down to what the generator could send.  The
C one sends pre-built requests by batches and only matches answers, so the servers get the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import tempfile
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = [
    "GeneratorResult",
    "add_generator_option",
    "compile_generator",
    "fork_python_generators",
    "run_generator",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneratorResult:
    """What the generator processes of one load level saw, summed."""

    sent: int
    ok: int
    lost: int
    bad: int
    late: int
    samples: list[bytes]  # the first good answer of each process
    latencies_ns: list[int]  # round trips of every 8th good answer


def compile_generator(directory: Path) -> Path | None:
    """bench/loadgen.c built with the system's C compiler into ``directory``, or None."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = directory / "loadgen"
    source = Path(__file__).with_name("loadgen.c")
    done = subprocess.run([cc, "-O2", "-o", str(out), str(source)], capture_output=True)
    return out if done.returncode == 0 else None


def run_generator(
    gen: Path,
    port: int,
    packets: list[bytes],
    clients: int,
    window: int,
    seconds: float,
    start_at: float,
) -> GeneratorResult:
    """Run ``clients`` generator processes (source 127.0.0.2, .3, ...) against 127.0.0.1:``port``
    with ``window`` of ``packets`` in flight each for ``seconds``, starting at ``start_at``
    (``time.time()``); bounded by ``seconds`` + 10 s."""
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "packets").write_bytes(b"".join(packets))
        procs = []
        for i in range(clients):
            argv = [str(gen), f"127.0.0.{2 + i}", str(port), str(window), str(seconds)]
            argv += [repr(start_at), str(tmp / "packets"), str(len(packets[0]))]
            argv += [str(tmp / f"sample{i}"), str(tmp / f"latency{i}")]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
        sent = ok = lost = bad = late = 0
        samples: list[bytes] = []
        latencies = array("Q")
        for i, proc in enumerate(procs):
            try:
                out, _ = proc.communicate(timeout=seconds + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"the C load generator failed (status {proc.returncode})")
            s, o, lo, b, la = (int(x) for x in out.split())
            sent, ok, lost, bad, late = sent + s, ok + o, lost + lo, bad + b, late + la
            sample = tmp / f"sample{i}"
            if sample.exists():
                samples.append(sample.read_bytes())
            latency = tmp / f"latency{i}"
            if latency.exists():
                latencies.frombytes(latency.read_bytes())
    return GeneratorResult(
        sent=sent,
        ok=ok,
        lost=lost,
        bad=bad,
        late=late,
        samples=samples,
        latencies_ns=latencies.tolist(),
    )


def add_generator_option(parser: argparse.ArgumentParser) -> None:
    """``--generator c|python`` (default c) for a benchmark's command line."""
    parser.add_argument(
        "--generator",
        choices=("c", "python"),
        default="c",
        help="load generator: bench/loadgen.c (built with cc; Python if none) or Python",
    )


def fork_python_generators(
    target: Callable[..., None], clients: int, args_of: Callable[[int, Connection], tuple[Any, ...]]
) -> tuple[list[multiprocessing.process.BaseProcess], list[Connection]]:
    """Fork ``clients`` Python generator processes running ``target(*args_of(i, conn))``, each
    reporting on ``conn``; (processes, the parent ends of their pipes)."""
    ctx = multiprocessing.get_context("fork")
    procs: list[multiprocessing.process.BaseProcess] = []
    conns: list[Connection] = []
    for i in range(clients):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=target, args=args_of(i, child))
        p.start()
        child.close()
        procs.append(p)
        conns.append(parent)
    return procs, conns


def join_all(procs: list[multiprocessing.process.BaseProcess]) -> None:
    """Reap generator processes, killing any that hang (bounded: 5 s each)."""
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
