"""TSQ sync-duration benchmark: a 5-sample ``tsyncctl tsq sync`` on loopback, both transports,
beside an NTP query of the same count (``tsyncctl query`` against chronyd -x), in one run.

Run from the repository root (tsyncd installed, chronyd available)::

    python -m bench.tsq                 # 20 runs of each
    python -m bench.tsq --runs 50 --json

What is timed, per run, is what the tools do for one sync (as the reference's benchmark, spec
§12: connect, the queries, combining; no clock adjustment):

* ``tsq stream`` / ``tsq datagram``: ``tsyncctl tsq sync``'s own code path (resolve, QUIC
  handshake with certificate verification against the test CA, 5 queries on one connection,
  delay-weighted combine, close) against tsyncd's TSQ servers (a separate process);
* ``ntp``: ``tsyncctl query``'s code path, 5 requests with no interval, against chronyd -x.

It also times whole commands (``tsyncctl tsq sync --dry-run`` and ``tsyncctl query -c 5 -i 0``,
interpreter start-up included) a few times, since that is what a user waits for.  chronyd runs
with ``-x`` and tsyncd in measure mode: nothing touches the host clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.peers import Peers, free_udp_port
from tests.tsqcerts import make_pki, tsq_servers_toml
from tsyncctl.query import run_query
from tsyncctl.tsq import measure
from tsyncd.sync.tsq import combine

SAMPLES = 5
REFERENCE_MS = {"stream": 3512.5, "datagram": 2060.0, "ntp": 169.0}  # spec §12, not measured here


def _time_ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e3


def _tsq_sync(port: int, transport: Any, ca: Path) -> None:
    results = asyncio.run(
        measure([("127.0.0.1", "127.0.0.1", port)], count=SAMPLES, transport=transport, ca_file=ca)
    )
    samples = [s for r in results for s in r.samples]
    if len(samples) != SAMPLES:
        raise SystemExit(f"TSQ {transport}: {len(samples)} of {SAMPLES} samples: {results}")
    combine(samples)


def _ntp_query(port: int) -> None:
    outcome = run_query(f"127.0.0.1:{port}", count=SAMPLES, timeout=1.0, interval=0.0)
    if len(outcome.replies) != SAMPLES:
        raise SystemExit(f"NTP: {len(outcome.replies)} of {SAMPLES} replies: {outcome.errors}")


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": statistics.median(ordered),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max_ms": ordered[-1],
    }


def _command_ms(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tsq", description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="syncs of each kind (default 20)")
    parser.add_argument("--command-runs", type=int, default=3, help="whole-command runs")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-tsq-") as tmp_text:
        tmp = Path(tmp_text)
        pki = make_pki(tmp / "pki")
        stream, datagram, ntp = free_udp_port(), free_udp_port(), free_udp_port()
        peers = Peers(tmp)
        try:
            peers.chronyd(
                "chronyd", f"port {ntp}\nbindaddress 127.0.0.1\nlocal stratum 5\nallow 127.0.0.1\n"
            )
            peers.tsyncd(
                "tsyncd",
                "[synchronization]\nlocal-stratum = 5\n"
                + tsq_servers_toml(tmp / "pki", stream, datagram)
                + '[log]\nlevel = "warning"\n',
            )
            kinds: dict[str, Callable[[], None]] = {
                "tsq stream": lambda: _tsq_sync(stream, "stream", pki.ca),
                "tsq datagram": lambda: _tsq_sync(datagram, "datagram", pki.ca),
                "ntp (chronyd)": lambda: _ntp_query(ntp),
            }
            for fn in kinds.values():
                fn()  # warm-up: imports, first handshake
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(args.runs):  # interleaved, so drift in load hits all kinds alike
                for kind, fn in kinds.items():
                    times[kind].append(_time_ms(fn))
            ctl = [sys.executable, "-m", "tsyncctl"]
            tsq_sync = ["tsq", "sync", "--ca", str(pki.ca), "--queries", str(SAMPLES), "--dry-run"]
            commands = {
                "tsq stream": [*ctl, *tsq_sync, f"127.0.0.1:{stream}", "--transport", "stream"],
                "tsq datagram": [*ctl, *tsq_sync, f"127.0.0.1:{datagram}"],
                "ntp (chronyd)": [*ctl, "query", f"127.0.0.1:{ntp}", "-c", str(SAMPLES), "-i", "0"],
            }
            command_ms = {k: _command_ms(v, args.command_runs) for k, v in commands.items()}
        finally:
            peers.stop_all()

    results = {k: _stats(v) for k, v in times.items()}
    ntp_median = results["ntp (chronyd)"]["median_ms"]
    if args.json:
        print(json.dumps({"runs": args.runs, "sync": results, "command_ms": command_ms}, indent=2))
        return 0
    print(f"{SAMPLES}-sample sync on loopback, {args.runs} runs each (ms)")
    print(f"{'':15} {'median':>8} {'mean':>8} {'min':>8} {'p95':>8} {'max':>8}  vs NTP  command")
    for kind, st in results.items():
        print(
            f"{kind:15} {st['median_ms']:8.2f} {st['mean_ms']:8.2f} {st['min_ms']:8.2f} "
            f"{st['p95_ms']:8.2f} {st['max_ms']:8.2f}  {st['median_ms'] / ntp_median:5.2f}x "
            f"{command_ms[kind]:7.0f}"
        )
    print(
        "vs NTP: median / the NTP query's median, same run.  command: median wall time of the "
        "whole tsyncctl command (Python start-up included)."
    )
    print(
        "Reference TSQ tools (their repo's figures, 10 samples, not measured here): stream "
        f"{REFERENCE_MS['stream']:.0f} ms, datagram {REFERENCE_MS['datagram']:.0f} ms, "
        f"their NTP {REFERENCE_MS['ntp']:.0f} ms."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
