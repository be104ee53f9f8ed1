"""Precision benchmark on loopback, where the true offset is 0: tsyncd and chronyd measuring
each other and chronyd measuring chronyd, in basic and interleaved (xleave) mode, in one run.

Run from the repository root (tsyncd installed or importable, chronyd on the PATH)::

    python -m bench.precision                 # 15 s per measurement, poll -4 (16 per second)
    python -m bench.precision --seconds 30 --json
    python -m bench.precision --seconds 10 --rounds 3   # pooled over 3 alternating rounds

Measurements, one after the other so they do not compete for the CPU:

* ``chronyd -> chronyd``: a chronyd client (``-x``) of a chronyd server (``-x``, local stratum
  10), offsets from the client's ``measurements.log``;
* ``tsyncd -> chronyd``: tsyncd's client path (``NtpSourceSocket`` with kernel RX/TX stamps
  and ``NtpAssociation``, the code the daemon runs per source) polling the same kind of chronyd
  server, every raw sample's offset;
* ``chronyd -> tsyncd``: a chronyd client of a tsyncd daemon (measure mode, local stratum 10),
  with its default worker processes, and again with ``workers = 0`` (the server answering
  from the event loop).  In xleave mode only interleaved samples count; should tsyncd's server
  answer in basic mode only, the row says so instead of giving figures;
* mode ``nts``: a chronyd NTS client (basic mode, AEAD 15) of chronyd's NTS server and of
  tsyncd's (default workers), with a throwaway CA: NTS replies are sealed after their
  Transmit is written, so the server's NTS work shows in the offsets unless it is done first.

For each: the number of samples used (the first ``_WARMUP`` are dropped; in xleave mode only
interleaved samples count), the median offset and the 95th percentile of |offset|, in µs, and
the ratio of the 95th percentile to chronyd -> chronyd's in the same mode.  Issue 4's reference
figures for chronyd -> chronyd: 95 % within 0.73 µs (median +0.3 µs) with xleave, 1.5 µs basic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, TypeVar

from bench.procs import find_binary, free_port, running
from tests.pki import Pki, make_pki
from tsyncd.daemon import measure_precision_log2
from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.sync.association import NtpAssociation

POLL: Final = -4
_A = TypeVar("_A", bound=NtpAssociation)
_WARMUP: Final = 4  # samples dropped at the start of each measurement


@dataclass(frozen=True, slots=True)
class Result:
    """One measurement's offsets, summarised."""

    who: str  # "chronyd -> chronyd", ...
    mode: str  # "basic" | "xleave"
    samples: int
    median_us: float | None
    p95_abs_us: float | None
    note: str = ""


def _summary(
    who: str, mode: str, offsets_s: list[float], note: str = "", warmup: int = _WARMUP
) -> Result:
    used = offsets_s[warmup:]
    if len(used) < 5:
        return Result(who, mode, len(used), None, None, note or "too few samples")
    absolute = sorted(abs(x) for x in used)
    p95 = absolute[min(len(absolute) - 1, round(0.95 * (len(absolute) - 1)))]
    return Result(who, mode, len(used), statistics.median(used) * 1e6, p95 * 1e6, note)


class Pool:
    """Each row's offsets over several rounds, every measurement's warm-up dropped, summarised
    together: one p95 from rounds that alternate which side goes first is steadier than one
    15 s window, whose tail is a dozen samples (``--rounds``)."""

    def __init__(self) -> None:
        self._offsets: dict[tuple[str, str], list[float]] = {}
        self._notes: dict[tuple[str, str], str] = {}

    def add(self, who: str, mode: str, offsets_s: list[float], note: str = "") -> None:
        """One measurement's offsets (s), in the order measured; ``note`` if it had none."""
        self._offsets.setdefault((who, mode), []).extend(offsets_s[_WARMUP:])
        if note:
            self._notes[(who, mode)] = note

    def results(self) -> list[Result]:
        """One row per (who, mode), in the order first measured."""
        return [
            _summary(who, mode, offsets, self._notes.get((who, mode), "") if not offsets else "", 0)
            for (who, mode), offsets in self._offsets.items()
        ]


def _chronyd(tmp: Path, name: str, conf: str) -> list[str]:
    """argv of a chronyd -x (never touches the clock) with private paths under ``tmp``."""
    binary = find_binary("chronyd")
    d = tmp / name
    d.mkdir(mode=0o700)
    (d / "chrony.conf").write_text(
        f"{conf}\npidfile {d}/pid\nbindcmdaddress {d}/sock\ncmdport 0\nuser root\nlogdir {d}\n"
    )
    return [binary, "-x", "-d", "-f", str(d / "chrony.conf")]


def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Until something answers NTP on 127.0.0.1:port (a started server is ready)."""
    request = b"\x23" + bytes(39) + os.urandom(8)
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            s.sendto(request, ("127.0.0.1", port))
            try:
                if s.recv(512):
                    return
            except OSError:
                time.sleep(0.05)
    sys.exit(f"no NTP server came up on port {port}")


def _chrony_server(tmp: Path, name: str, port: int, nts: _Nts | None = None) -> list[str]:
    more = ""
    if nts is not None:  # NTS-KE on nts.ke_port with the throwaway CA's certificate
        more = f"ntsport {nts.ke_port}\nntsserverkey {nts.pki.key}\nntsservercert {nts.pki.chain}\n"
    return _chronyd(
        tmp,
        name,
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n{more}",
    )


@dataclass(frozen=True, slots=True)
class _Nts:
    """An NTS server's KE port and the throwaway CA its certificate comes from."""

    pki: Pki
    ke_port: int


def _chrony_client_offsets(
    tmp: Path, name: str, port: int, xleave: bool, seconds: float, nts: _Nts | None = None
) -> tuple[list[float], int]:
    """Run a chronyd client for ``seconds``; (offsets of the wanted kind, interleaved count).
    With ``nts``: an NTS client of the server's NTS-KE port (the first samples wait for it)."""
    auth = f" nts ntsport {nts.ke_port}" if nts is not None else ""
    trust = f"ntstrustedcerts {nts.pki.ca}\n" if nts is not None else ""
    argv = _chronyd(
        tmp,
        name,
        f"server 127.0.0.1 port {port} minpoll {POLL} maxpoll {POLL}{auth}"
        f"{' xleave' if xleave else ''} noselect\nport 0\nlog measurements\n{trust}",
    )
    with running(argv, tmp / f"{name}.log"):
        time.sleep(seconds)
    return chrony_log_offsets(tmp / name / "measurements.log", xleave)


def chrony_log_offsets(log: Path, xleave: bool) -> tuple[list[float], int]:
    """Offsets of the wanted kind (interleaved or basic) in a chronyd ``measurements.log``, s,
    and how many measurements were interleaved."""
    offsets: list[float] = []
    interleaved = 0
    for line in log.read_text().splitlines() if log.exists() else []:
        f = line.split()
        # date time ip L St 123 567 ABCD LP RP Score Offset ... Refid MTxRx (e.g. "4I K K").
        # Every measurement that passed the packet tests (1-3, 5-7), like tsyncd's samples:
        # chronyd's delay tests (ABCD) filter later, as tsyncd's clock filter does.
        if len(f) < 18 or f[5] != "111" or f[6] != "111":
            continue
        kind = f[17][1:2]
        interleaved += kind == "I"
        if (kind == "I") == xleave:
            offsets.append(float(f[11]))
    return offsets, interleaved


async def _tsyncd_offsets(port: int, xleave: bool, seconds: float) -> list[float]:
    """tsyncd's per-source client path against 127.0.0.1:port, as the daemon drives it."""
    sock = NtpSourceSocket(name="bench", mode="server", ip="127.0.0.1", port=port, xleave=xleave)
    return await drive_association(new_association(NtpAssociation, xleave), sock, xleave, seconds)


def new_association(cls: type[_A], xleave: bool) -> _A:
    """An association of ``cls`` polling at ``POLL``, starting now."""
    return cls(
        min_poll=POLL,
        max_poll=POLL,
        iburst=False,
        precision_log2=measure_precision_log2(),
        rng=random.Random(),
        now_ns=time.time_ns(),
        xleave=xleave,
    )


async def drive_association(
    assoc: NtpAssociation, sock: NtpSourceSocket, xleave: bool, seconds: float
) -> list[float]:
    """Poll through ``sock`` for ``seconds`` as the daemon does (Transmit re-read just before
    sending, kernel TX stamps fed back); the offsets of samples of the wanted kind, s."""
    offsets: list[float] = []

    def on_reply(_name: str, data: bytes, rx_ns: int) -> None:
        sample = assoc.handle_reply(data, rx_ns)
        if sample is not None and sample.interleaved == xleave:
            offsets.append(sample.offset_ns * 1e-9)

    sock.open(on_reply, lambda _name, tx_ns: assoc.handle_tx_timestamp(tx_ns))
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            deadline = assoc.next_deadline_ns() or 0
            await asyncio.sleep(max(0.0, (deadline - time.time_ns()) * 1e-9))
            data = assoc.handle_timer(time.time_ns())
            if data is None:
                continue
            t1 = time.time_ns()
            if sock.send(assoc.stamp_transmit(data, t1)):
                assoc.handle_sent(t1)
    finally:
        sock.close()
    return offsets


def _tsyncd_server(
    tmp: Path, port: int, workers: int | None = None, tag: int | str = 0, nts: _Nts | None = None
) -> list[str]:
    d = tmp / f"tsyncd-server-{workers}-{tag}"
    d.mkdir()
    conf = d / "tsyncd.toml"
    ke = ""
    if nts is not None:
        ke = (
            f'[[nts-ke-server]]\nlisten = "127.0.0.1:{nts.ke_port}"\n'
            f'certificate-chain-path = "{nts.pki.chain}"\nprivate-key-path = "{nts.pki.key}"\n'
        )
    conf.write_text(
        f'[clock]\nmode = "measure"\n[control]\nsocket = "{d}/tsyncd.sock"\n'
        f'[synchronization]\nlocal-stratum = 10\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
        + (f"workers = {workers}\n" if workers is not None else "")
        + ke
    )
    return [sys.executable, "-m", "tsyncd", "-c", str(conf)]


def run(seconds: float, rounds: int = 1) -> list[Result]:
    """Every measurement, ``rounds`` times (odd rounds with chronyd's and tsyncd's client in
    the other order), pooled per row; about 8 x ``seconds`` per round plus start-up."""
    pool = Pool()
    with tempfile.TemporaryDirectory(prefix="tsyncd-precision-") as tmp_text:
        tmp = Path(tmp_text)
        for r in range(rounds):
            port = free_port()
            with running(_chrony_server(tmp, f"chronyd-server-{r}", port), tmp / f"s{r}.log"):
                _wait_port(port)
                for mode in ("basic", "xleave"):
                    xleave = mode == "xleave"
                    clients = ("chronyd", "tsyncd") if r % 2 == 0 else ("tsyncd", "chronyd")
                    for client in clients:
                        if client == "chronyd":
                            name = f"chronyd-client-{mode}-{r}"
                            offsets, _ = _chrony_client_offsets(tmp, name, port, xleave, seconds)
                        else:
                            offsets = asyncio.run(_tsyncd_offsets(port, xleave, seconds))
                        pool.add(f"{client} -> chronyd", mode, offsets)
            for workers, who in ((None, "chronyd -> tsyncd"), (0, "chronyd -> tsyncd w0")):
                port = free_port()
                argv = _tsyncd_server(tmp, port, workers, r)
                with running(argv, tmp / f"tsyncd-{workers}-{r}.log"):
                    _wait_port(port)
                    for mode in ("basic", "xleave"):
                        offsets, interleaved = _chrony_client_offsets(
                            tmp,
                            f"chronyd-of-tsyncd-{workers}-{mode}-{r}",
                            port,
                            mode == "xleave",
                            seconds,
                        )
                        note = ""
                        if mode == "xleave" and not interleaved:
                            note = "tsyncd's server answered in basic mode only"
                        pool.add(who, mode, offsets, note)
            _nts_round(tmp, pool, r, seconds)
    return pool.results()


def _nts_round(tmp: Path, pool: Pool, r: int, seconds: float) -> None:
    """chronyd as an NTS client (basic mode) of chronyd's NTS server and of tsyncd's: the
    server's Transmit must be read as late as its NTS work allows (servers/sealtx.py)."""
    pki = make_pki(tmp / f"pki-{r}")
    for server in ("chronyd", "tsyncd"):
        port, nts = free_port(), _Nts(pki, free_port(socket.SOCK_STREAM))
        if server == "chronyd":
            argv = _chrony_server(tmp, f"chronyd-nts-server-{r}", port, nts)
        else:
            argv = _tsyncd_server(tmp, port, None, f"nts-{r}", nts)
        with running(argv, tmp / f"nts-server-{server}-{r}.log"):
            _wait_port(port)
            name = f"chronyd-nts-client-of-{server}-{r}"
            offsets, _ = _chrony_client_offsets(tmp, name, port, False, seconds, nts)
        pool.add(f"chronyd -> {server}", "nts", offsets)


def _ratio(result: Result, results: list[Result]) -> str:
    base = next(
        (r for r in results if r.who == "chronyd -> chronyd" and r.mode == result.mode), None
    )
    if base is None or base.p95_abs_us is None or result.p95_abs_us is None:
        return "-"
    return f"{result.p95_abs_us / base.p95_abs_us:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        argv,
        prog="python -m bench.precision",
        description=__doc__,
        default_seconds=15.0,
        run=run,
        title="loopback",
    )


def run_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None,
    default_seconds: float,
    run: Callable[[float, int], list[Result]],
    title: str,
) -> int:
    """A precision benchmark's command line: ``--seconds``, ``--json``, the table."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--seconds", type=float, default=default_seconds, help="per measurement (5..60)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every measurement, alternating who goes first, and pool them (1..10)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    seconds = min(60.0, max(5.0, args.seconds))
    rounds = min(10, max(1, args.rounds))
    load_before = os.getloadavg()[0]  # other work on the machine shows in every figure
    results = run(seconds, rounds)
    load_after = os.getloadavg()[0]
    if args.json:
        print(json.dumps([{**asdict(r), "ratio_p95": _ratio(r, results)} for r in results]))
        return 0
    print(
        f"{title}, poll {POLL}, {seconds:g} s per measurement x {rounds} round(s); true offset 0; "
        f"load average {load_before:.2f} before, {load_after:.2f} after"
    )
    print(
        f"{'measurement':<20} {'mode':<7} {'n':>5} {'median µs':>10} {'p95 |off| µs':>13} "
        f"{'p95 ratio vs chronyd->chronyd':>30}"
    )
    for r in results:
        median = f"{r.median_us:+10.3f}" if r.median_us is not None else f"{'-':>10}"
        p95 = f"{r.p95_abs_us:13.3f}" if r.p95_abs_us is not None else f"{'-':>13}"
        line = f"{r.who:<20} {r.mode:<7} {r.samples:>5} {median} {p95} {_ratio(r, results):>30}"
        print(line + (f"  ({r.note})" if r.note else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
