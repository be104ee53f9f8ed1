"""Time to first sync on loopback: tsyncd and chronyd, both started cold, in the same run.

Run from the repository root (tsyncd installed, chronyd on the machine)::

    python -m bench.first_sync               # 5 rounds each
    python -m bench.first_sync --rounds 10 --json

One chronyd (``-x``, ``local stratum 10``) serves NTP on an ephemeral loopback port.  Each round
then starts, from nothing, one client and times it from just before ``exec`` to the moment it
first reports itself synchronized:

* tsyncd: ``python -m tsyncd`` in measure mode, one ``iburst`` source at default polling
  (6..10), asked ``status`` over its control socket every 5 ms.  Interpreter start-up, imports,
  config parsing and socket setup are all inside the figure.
* chronyd: ``chronyd -x`` with ``server ... iburst`` at default polling, asked ``chronyc -c
  tracking`` every 20 ms until its leap status is no longer "Not synchronised".

Neither client touches the host clock (measure mode, ``-x``); all traffic stays on 127.0.0.1.
Every wait is bounded (``--timeout``).  Each round's figures and the medians are printed, with
the ratio tsyncd / chronyd (below 1 means tsyncd is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procs import find_binary, free_port, running
from tsyncctl.client import ControlClient, ControlError


@dataclass(frozen=True, slots=True, kw_only=True)
class Round:
    """One cold start of one client."""

    daemon: str  # "tsyncd" | "chronyd"
    ready_s: float | None  # exec to control socket answering
    synchronized_s: float | None  # exec to first "synchronized"; None: timed out


def _chrony_conf(directory: Path, body: str) -> Path:
    """A chrony.conf with private pid/command-socket/drift paths in ``directory``."""
    directory.mkdir(mode=0o700)
    conf = directory / "chrony.conf"
    conf.write_text(
        f"{body}\npidfile {directory}/chronyd.pid\nbindcmdaddress {directory}/chronyd.sock\n"
        f"cmdport 0\ndriftfile {directory}/drift\nuser root\n"
    )
    return conf


def _poll(
    probe: Callable[[], bool], start: float, timeout_s: float, every_s: float
) -> float | None:
    """Seconds from ``start`` to the first true ``probe()``, or None after ``timeout_s``."""
    while (now := time.monotonic()) - start < timeout_s:
        if probe():
            return time.monotonic() - start
        time.sleep(max(0.0, every_s - (time.monotonic() - now)))
    return None


def _tsyncd_round(work: Path, server_port: int, timeout_s: float) -> Round:
    work.mkdir()
    sock = work / "tsyncd.sock"
    conf = work / "tsyncd.toml"
    conf.write_text(
        '[clock]\nmode = "measure"\n'
        f'[control]\nsocket = "{sock}"\n'
        f'[[source]]\nmode = "server"\naddress = "127.0.0.1:{server_port}"\niburst = true\n'
    )
    ready: list[float] = []

    def synchronized() -> bool:
        if not sock.exists():
            return False
        try:
            with ControlClient(sock, timeout=1.0) as client:
                status = client.call("status")
        except ControlError:
            return False
        if not ready:
            ready.append(time.monotonic() - start)
        return bool(status.get("synchronized"))

    start = time.monotonic()
    with running([sys.executable, "-m", "tsyncd", "-c", str(conf)], work / "tsyncd.log"):
        took = _poll(synchronized, start, timeout_s, 0.005)
    return Round(daemon="tsyncd", ready_s=ready[0] if ready else None, synchronized_s=took)


def _chronyd_round(work: Path, server_port: int, timeout_s: float) -> Round:
    conf = _chrony_conf(work, f"server 127.0.0.1 port {server_port} iburst\nport 0\n")
    chronyc = find_binary("chronyc")
    sock = work / "chronyd.sock"
    ready: list[float] = []

    def synchronized() -> bool:
        if not sock.exists():
            return False
        done = subprocess.run(
            [chronyc, "-h", str(sock), "-n", "-c", "tracking"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        fields = done.stdout.strip().split(",")
        if len(fields) < 14:
            return False
        if not ready:
            ready.append(time.monotonic() - start)
        return fields[13] != "Not synchronised"

    start = time.monotonic()
    with running([find_binary("chronyd"), "-x", "-d", "-f", str(conf)], work / "chronyd.log"):
        took = _poll(synchronized, start, timeout_s, 0.02)
    return Round(daemon="chronyd", ready_s=ready[0] if ready else None, synchronized_s=took)


def _median(rounds: list[Round]) -> float | None:
    times = [r.synchronized_s for r in rounds if r.synchronized_s is not None]
    return statistics.median(times) if times else None


def _fmt(value: float | None) -> str:
    return "timeout" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="cold starts of each client")
    parser.add_argument("--timeout", type=float, default=30.0, help="s to wait for each sync")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tsyncd-first-sync-") as tmp:
        root = Path(tmp)
        port = free_port()
        server_conf = _chrony_conf(
            root / "server",
            f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n",
        )
        rounds: list[Round] = []
        with running([find_binary("chronyd"), "-x", "-d", "-f", str(server_conf)], root / "s.log"):
            # The server must answer before the clients start, or we time our own set-up.
            _poll(lambda: (root / "server" / "chronyd.sock").exists(), time.monotonic(), 10, 0.01)
            for i in range(args.rounds):
                rounds.append(_tsyncd_round(root / f"tsyncd-{i}", port, args.timeout))
                rounds.append(_chronyd_round(root / f"chronyd-{i}", port, args.timeout))

    ours = [r for r in rounds if r.daemon == "tsyncd"]
    theirs = [r for r in rounds if r.daemon == "chronyd"]
    m_ours, m_theirs = _median(ours), _median(theirs)
    ratio = m_ours / m_theirs if m_ours is not None and m_theirs else None
    if args.json:
        summary = {"tsyncd_median_s": m_ours, "chronyd_median_s": m_theirs, "ratio": ratio}
        print(json.dumps({"rounds": [asdict(r) for r in rounds], **summary}, indent=2))
        return 0 if ratio is not None else 1

    print("== first sync on loopback: iburst, default polling, cold start (exec -> synchronized)")
    print(f"  {'round':>5}  {'tsyncd ready s':>14}  {'tsyncd sync s':>13}  {'chronyd sync s':>14}")
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True), 1):
        print(
            f"  {i:>5}  {_fmt(a.ready_s):>14}  {_fmt(a.synchronized_s):>13}  "
            f"{_fmt(b.synchronized_s):>14}"
        )
    print(
        f"  median tsyncd {_fmt(m_ours)} s, chronyd {_fmt(m_theirs)} s, "
        f"ratio tsyncd/chronyd {'n/a' if ratio is None else f'{ratio:.2f}'} (target: < 1 s)"
    )
    return 0 if ratio is not None else 1


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
