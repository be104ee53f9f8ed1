"""NTS server throughput: tsyncd beside chronyd, measured in the same run on loopback.

Run from the repository root (tsyncd installed or importable, chronyd installed)::

    python -m bench.nts                          # 2 generator processes, windows 8 and 32, 2 s
    python -m bench.nts --clients 3 --window 16 --window 64 --seconds 3 --json
    python -m bench.nts --micro                  # µs per request in process (bench/nts_micro.py)

What it does: makes a throwaway CA, starts ``chronyd -x`` (NTS server, never touches the clock)
and tsyncd (measure mode, NTS-KE + NTP server), runs NTS-KE with each through tsyncd's own
client (AEAD 15, all chrony 4.3 offers, so both do the same cryptography), checks one full
authenticated exchange, then pre-builds NTS requests (fresh Unique Identifier each, one cookie,
no placeholders: 1 cookie back).  For each window, each server gets ``--clients`` generator
processes (bench/nts_load.py), each from its own 127.0.0.x address with ``window`` requests in
flight for ``--seconds``; answers are matched by origin, checked for length and mode, and a
sample is authenticated with the S2C key.

It prints, per server and load level, answers/s, requests sent, lost (no answer within 50 ms)
and bad, and the server's CPU use (100 = one core: a server well under 100 per process was
waiting for the generator); then each server's best rate at zero loss and the ratio
tsyncd / chronyd.  The generator shares the machine's CPUs with the servers: read the ratio with
the CPU column and the load average printed first.  All requests come from one NTS-KE session,
so tsyncd's per-session cipher cache always hits (``--micro`` shows the cost when it misses).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench import loadgen, nts_load, nts_micro
from bench.procs import find_binary, free_port
from tests.nts_certs import make_pki, nts_server_toml
from tsyncd.nts.client import NtsSession
from tsyncd.sources.ntske import KeResult, run_ke
from tsyncd.wire.ntp import NtpPacket, decode_ntp, encode_ntp

_REQUESTS = 4096  # distinct pre-built requests, reused round-robin


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not open its NTS-KE port within {timeout:g} s")


def _requests(result: KeResult, count: int) -> list[bytes]:
    cookies = list(result.outcome.cookies)
    session = NtsSession(result.outcome.aead, result.c2s, result.s2c, cookies)
    out = []
    magic = secrets.randbits(31) | 1 << 31  # transmit = magic | index: answers name requests
    for i in range(count):
        session.cookies.clear()
        session.cookies.extend(cookies)  # 8 held: no placeholders, one cookie back
        header = encode_ntp(NtpPacket(transmit_ts=magic << 32 | i))
        data = session.protect(header)
        assert data is not None
        out.append(data)
        if i == 0:
            _check_once(session, data, result.ntp_port)
    return out


def _check_once(session: NtsSession, request: bytes, port: int) -> None:
    """One real exchange must authenticate, or the figures would count NAKs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.sendto(request, ("127.0.0.1", port))
        data = s.recv(4096)
    reason = session.verify(data, decode_ntp(data))
    if reason is not None:
        raise SystemExit(f"server on port {port} did not authenticate: {reason}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nts", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per load level (max 30)")
    parser.add_argument("--clients", type=int, default=2, help="generator processes (max 16)")
    parser.add_argument(
        "--window", type=int, action="append", help="requests in flight per process (repeat)"
    )
    loadgen.add_generator_option(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--micro", action="store_true", help="µs per request in process (bench/nts_micro.py)"
    )
    parser.add_argument("--profile", action="store_true", help="with --micro: cProfile each case")
    parser.add_argument("--count", type=int, default=20000, help="with --micro: requests per round")
    parser.add_argument("--repeat", type=int, default=5, help="with --micro: rounds (best is kept)")
    args = parser.parse_args(argv)
    if args.micro:
        nts_micro.main(
            min(max(args.count, 100), 200_000), min(max(args.repeat, 1), 20), args.profile
        )
        return
    seconds = min(max(args.seconds, 0.2), 30.0)
    clients = min(max(args.clients, 1), 16)
    windows = [min(max(w, 1), 256) for w in args.window or [8, 32]]
    load_before = os.getloadavg()
    chronyd = find_binary("chronyd")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-nts-") as tmp_name:
        tmp = Path(tmp_name)
        pki = make_pki(tmp)
        c_ntp, c_ke = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        t_ntp, t_ke = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        cdir = tmp / "chronyd"
        cdir.mkdir(mode=0o700)
        (cdir / "chrony.conf").write_text(
            f"port {c_ntp}\nntsport {c_ke}\nbindaddress 127.0.0.1\nlocal stratum 5\n"
            f"allow 127.0.0.0/8\nntsserverkey {pki.key}\nntsservercert {pki.chain}\n"
            f"pidfile {cdir}/pid\nbindcmdaddress {cdir}/sock\ncmdport 0\nuser root\n"
        )
        tdir = tmp / "tsyncd"
        tdir.mkdir()
        (tdir / "tsyncd.toml").write_text(
            f'[clock]\nmode = "measure"\n[control]\nsocket = "{tdir}/sock"\n'
            + nts_server_toml(pki, t_ntp, t_ke, tdir / "keys.json", stratum=5)
            + '[log]\nlevel = "warning"\n'
        )
        try:
            log = (tmp / "servers.log").open("wb")
            argv_c = [chronyd, "-x", "-d", "-f", str(cdir / "chrony.conf")]
            procs.append(subprocess.Popen(argv_c, stdout=log, stderr=log))
            argv_t = [sys.executable, "-m", "tsyncd", "-c", str(tdir / "tsyncd.toml")]
            procs.append(subprocess.Popen(argv_t, stdout=log, stderr=log, env={**os.environ}))
            _wait_tcp(c_ke, procs[0], "chronyd")
            _wait_tcp(t_ke, procs[1], "tsyncd")
            loads = {}
            for name, ke_port in (("chronyd", c_ke), ("tsyncd", t_ke)):
                ke = asyncio.run(
                    run_ke("localhost", ke_port, pki.ca, connect_host="127.0.0.1", aeads=(15,))
                )
                packets = _requests(ke, _REQUESTS)
                loads[name] = nts_load.Load(port=ke.ntp_port, packets=packets, aead=15, s2c=ke.s2c)
            gen = loadgen.compile_generator(tmp) if args.generator == "c" else None
            runs = [
                nts_load.measure(name, procs[i].pid, loads[name], clients, window, seconds, gen)
                for window in windows
                for i, name in enumerate(("chronyd", "tsyncd"))
            ]
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    best = {name: nts_load.best_at_zero_loss(runs, name) for name in ("tsyncd", "chronyd")}
    ratio = best["tsyncd"] / best["chronyd"] if best["chronyd"] else None
    per_cpu = {name: nts_load.answers_per_cpu_s(runs, name) for name in best}
    cpu_ratio = per_cpu["tsyncd"] / per_cpu["chronyd"] if per_cpu["chronyd"] else None
    if args.json:
        report = {
            "load_average_before": load_before,
            "cpus": os.cpu_count(),
            "generator": "c" if gen is not None else "python",
            "runs": [asdict(r) for r in runs],
            "best_at_zero_loss": best,
            "ratio": ratio,
            "answers_per_cpu_second": per_cpu,
            "ratio_per_cpu_second": cpu_ratio,
        }
        print(json.dumps(report, indent=2))
        return
    print(
        f"NTS requests (AEAD 15, 1 cookie per response, {len(loads['tsyncd'].packets[0])} bytes), "
        f"{clients} {'C' if gen is not None else 'Python'} generator processes, "
        f"{seconds:g} s per level; load average before "
        f"{load_before[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'server':<8} {'in flight':>9} {'answered/s':>11} {'sent':>9} {'lost':>6} {'late':>5} "
        f"{'bad':>4} "
        f"{'verified':>8} {'CPU %':>6} {'gen CPU %':>9}"
    )
    for r in runs:
        print(
            f"{r.server:<8} {r.window * r.clients:>9} {r.answers_per_s:11.0f} {r.sent:9d} "
            f"{r.lost:6d} {r.late:5d} {r.bad:4d} {r.verified:8d} {r.cpu_pct:6.0f} "
            f"{r.generator_cpu_pct:9.0f}"
        )
    for name in ("tsyncd", "chronyd"):
        print(
            f"{name}: {best[name]:,.0f} NTS answers/s at zero loss, "
            f"{per_cpu[name]:,.0f} answers per CPU-second"
        )
    shown = "-" if ratio is None else f"{ratio:.3f}"
    shown_cpu = "-" if cpu_ratio is None else f"{cpu_ratio:.3f}"
    print(f"ratio tsyncd / chronyd: {shown} at zero loss, {shown_cpu} per CPU-second")


if __name__ == "__main__":
    main()
