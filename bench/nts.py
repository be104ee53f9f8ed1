"""NTS server throughput: tsyncd beside chronyd, measured in the same run on loopback.

Run from the repository root (tsyncd installed or importable, chronyd installed)::

    python -m bench.nts                 # 3 s per server, window 16, 2 generator processes
    python -m bench.nts --seconds 5 --window 32 --clients 3 --json
    python -m bench.nts --workers 0     # tsyncd serving NTS from its event loop

What it does: makes a throwaway CA, starts ``chronyd -x`` (NTS server, AEAD 15, never touches
the clock) and tsyncd (measure mode, NTS-KE + NTP server), runs NTS-KE with each through
tsyncd's own client, checks one full authenticated exchange, then pre-builds NTS requests
(fresh Unique Identifier each, one cookie, no placeholders: 1 cookie back) and keeps
``window`` requests outstanding for ``seconds``, sending a new one for every response.  Both
servers are asked for AEAD 15 (all chrony 4.3 offers), so they do the same cryptography.

The load comes from ``--clients`` processes, each from its own source address (127.0.0.2,
.3, ...): tsyncd's workers are chosen by client IP, so one address would meet one worker.
It prints responses/s, requests lost (sent minus answered after a short drain), the server's
CPU time over the run (100 = one core) and its answers per CPU-second, and the ratio
tsyncd / chronyd.  A run with losses says so: its figure is not a zero-loss rate.  The load
generator is Python too, so a figure near the generator's own limit (see "plain echo"
column) measures the generator, not the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from bench.server import cpu_seconds, join_all
from tests.nts_certs import make_pki, nts_server_toml
from tsyncd.nts.client import NtsSession
from tsyncd.sources.ntske import KeResult, run_ke
from tsyncd.wire.ntp import NtpPacket, decode_ntp, encode_ntp

_REQUESTS = 4096  # distinct pre-built requests, reused round-robin


@dataclass(frozen=True, slots=True)
class Result:
    server: str
    seconds: float
    sent: int
    answered: int
    lost: int
    rate: float  # answered per second
    cpu_pct: float = 0.0  # server CPU time (all its processes) over the run's wall time
    per_cpu_s: float = 0.0  # answers per second of server CPU time


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
    for i in range(count):
        session.cookies.clear()
        session.cookies.extend(cookies)  # 8 held: no placeholders, one cookie back
        header = encode_ntp(NtpPacket(transmit_ts=secrets.randbits(64) or 1))
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


def _blast(
    name: str,
    port: int,
    packets: list[bytes],
    window: int,
    seconds: float,
    source: str = "127.0.0.1",
) -> Result:
    expected = len(packets[0])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    n = len(packets)
    sent = answered = 0
    for _ in range(window):
        sock.send(packets[sent % n])
        sent += 1
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:  # the whole window was lost: prime it again (counted as loss)
            for _ in range(window):
                sock.send(packets[sent % n])
                sent += 1
            continue
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            if len(data) == expected:  # an NTS response, not a NAK (84 bytes)
                answered += 1
            if time.perf_counter() < deadline:
                sock.send(packets[sent % n])
                sent += 1
    elapsed = time.perf_counter() - start
    drain = time.perf_counter() + 0.5
    while answered < sent and time.perf_counter() < drain:
        if select.select([sock], [], [], 0.05)[0]:
            try:
                if len(sock.recv(4096)) == expected:
                    answered += 1
            except BlockingIOError:
                pass
    sock.close()
    return Result(name, elapsed, sent, answered, sent - answered, answered / elapsed)


def _blast_child(conn: Connection, *args: object) -> None:
    conn.send(_blast(*args))  # type: ignore[arg-type]
    conn.close()


def _blast_many(
    name: str, pid: int, port: int, packets: list[bytes], window: int, seconds: float, clients: int
) -> Result:
    """``clients`` forked generators from 127.0.0.2, .3, ...; their results summed."""
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for i in range(clients):
        parent, child = ctx.Pipe(duplex=False)
        args = (child, name, port, packets, window, seconds, f"127.0.0.{2 + i}")
        proc = ctx.Process(target=_blast_child, args=args)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
    parts: list[Result] = [p.recv() for p in pipes if p.poll(seconds + 15)]
    cpu = cpu_seconds(pid) - cpu_start
    wall = time.monotonic() - wall_start
    join_all(procs)
    if len(parts) < clients:
        raise SystemExit(f"{clients - len(parts)} generator process(es) against {name} failed")
    elapsed = max(r.seconds for r in parts)
    answered = sum(r.answered for r in parts)
    sent = sum(r.sent for r in parts)
    return Result(
        name,
        elapsed,
        sent,
        answered,
        sent - answered,
        sum(r.rate for r in parts),
        cpu_pct=100.0 * cpu / wall if wall > 0 else 0.0,
        per_cpu_s=answered / cpu if cpu > 0 else 0.0,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nts", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="load per server (max 30)")
    parser.add_argument("--window", type=int, default=16, help="requests kept outstanding")
    parser.add_argument("--clients", type=int, default=2, help="generator processes (max 8)")
    parser.add_argument(
        "--workers", type=int, default=None, help="tsyncd workers (default: its own)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 0.5), 30.0)
    clients = min(max(args.clients, 1), 8)
    workers_line = "" if args.workers is None else f"workers = {args.workers}\n"
    chronyd = shutil.which("chronyd") or shutil.which("chronyd", path="/usr/sbin:/sbin")
    if chronyd is None:
        raise SystemExit("chronyd is not installed (apt-get install chrony)")
    procs: list[subprocess.Popen[bytes]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-nts-") as tmp_name:
        tmp = Path(tmp_name)
        pki = make_pki(tmp)
        c_ntp, c_ke = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
        t_ntp, t_ke = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
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
            + nts_server_toml(pki, t_ntp, t_ke, tdir / "keys.json", stratum=5).replace(
                "[[nts-ke-server]]", workers_line + "[[nts-ke-server]]", 1
            )  # workers = N goes into the [[server]] table
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
            results = []
            for name, ke_port, proc in (("chronyd", c_ke, procs[0]), ("tsyncd", t_ke, procs[1])):
                ke = asyncio.run(
                    run_ke("localhost", ke_port, pki.ca, connect_host="127.0.0.1", aeads=(15,))
                )
                packets = _requests(ke, _REQUESTS)
                results.append(
                    _blast_many(name, proc.pid, ke.ntp_port, packets, args.window, seconds, clients)
                )
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    chrony, ours = results
    ratio = ours.rate / chrony.rate if chrony.rate else float("nan")
    if args.json:
        out = {"results": [asdict(r) for r in results], "ratio": ratio, "load": load_before}
        print(json.dumps(out, indent=2))
        return
    print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"NTS requests (AEAD 15, 1 cookie per response), {clients} generator processes x "
        f"window {args.window}, {seconds:g} s each"
    )
    print(
        f"{'server':<8} {'answered/s':>11} {'sent':>9} {'answered':>9} {'lost':>6} "
        f"{'CPU %':>6} {'per CPU-s':>10}"
    )
    for r in results:
        print(
            f"{r.server:<8} {r.rate:11.0f} {r.sent:9d} {r.answered:9d} {r.lost:6d} "
            f"{r.cpu_pct:6.0f} {r.per_cpu_s:10.0f}"
        )
    print(f"ratio tsyncd / chronyd: {ratio:.3f}")
    if any(r.lost for r in results):
        print("note: requests were lost, so these are not zero-loss rates")


if __name__ == "__main__":
    main()
