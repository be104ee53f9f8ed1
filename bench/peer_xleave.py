"""Symmetric (peer) precision on loopback, where the true offset is 0: chronyd and tsyncd peers
measuring each other in basic and interleaved symmetric mode (RFC 9769, chronyd's ``peer ...
xleave``), chronyd <-> chronyd as the reference, in one run.

Run from the repository root (tsyncd installed or importable, chronyd on the PATH)::

    python -m bench.peer_xleave                 # 10 s per measurement, poll -4 (16 per second)
    python -m bench.peer_xleave --seconds 20 --json

Measurements, one pair after the other so they do not compete for the CPU, per mode:

* ``chronyd -> chronyd``: two chronyd ``peer``s (``-x``, ``noselect``), the offsets of one in
  the other's ``measurements.log``;
* ``tsyncd -> chronyd``: tsyncd's peer path (``NtpSourceSocket`` with kernel RX/TX stamps and
  the symmetric association, interleaved with ``xleave``: the code the daemon runs for a
  ``mode = "peer"`` source) and a chronyd ``peer`` of it, every raw sample's offset;
* ``chronyd -> tsyncd``: the same chronyd's offsets of that tsyncd peer.

In xleave mode only interleaved samples count.  For each: samples used (the first ``_WARMUP``
dropped), median offset and 95th percentile of |offset| in µs, and the ratio of that 95th
percentile to chronyd -> chronyd's in the same mode.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bench.precision import (
    POLL,
    Pool,
    Result,
    _chronyd,
    chrony_log_offsets,
    drive_association,
    new_association,
    run_main,
)
from bench.procs import free_port, running
from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.sync.symmetric import SymmetricAssociation
from tsyncd.sync.symmetric_xleave import InterleavedSymmetricAssociation
from tsyncd.wire.ntp import Leap
from tsyncd.wire.timestamps import ntp64_from_unix_ns

_LOCL: Final = 0x7F7F0101  # the reference ID we announce (a local clock, "127.127.1.1")


def _chrony_peer(tmp: Path, name: str, port: int, peer_port: int, xleave: bool) -> list[str]:
    """argv of a chronyd peer on ``port`` of 127.0.0.1:``peer_port``, logging measurements."""
    return _chronyd(
        tmp,
        name,
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n"
        f"peer 127.0.0.1 port {peer_port} minpoll {POLL} maxpoll {POLL} noselect"
        f"{' xleave' if xleave else ''}\nlog measurements\n",
    )


async def _tsyncd_peer_offsets(
    port: int, peer_port: int, xleave: bool, seconds: float
) -> list[float]:
    """tsyncd's peer path on ``port`` against 127.0.0.1:``peer_port``, as the daemon drives
    it; the offsets of its samples of the wanted kind, s."""
    cls = InterleavedSymmetricAssociation if xleave else SymmetricAssociation
    assoc = new_association(cls, xleave)
    assoc.set_announced(
        leap=Leap.NONE,
        stratum=9,
        root_delay=0,
        root_dispersion=0,
        reference_id=_LOCL,
        reference_ts=ntp64_from_unix_ns(time.time_ns()),
    )
    sock = NtpSourceSocket(
        name="bench", mode="peer", ip="127.0.0.1", port=peer_port, local_port=port, xleave=xleave
    )
    return await drive_association(assoc, sock, xleave, seconds)


def run(seconds: float, rounds: int = 1) -> list[Result]:
    """Every measurement, ``rounds`` times, pooled per row; about 4 x ``seconds`` per round
    plus start-up."""
    pool = Pool()
    with tempfile.TemporaryDirectory(prefix="tsyncd-peer-") as tmp_text:
        tmp = Path(tmp_text)
        for r in range(rounds):
            for mode in ("basic", "xleave"):
                xleave = mode == "xleave"
                a, b = free_port(), free_port()
                pair_a, pair_b = f"a-{mode}-{r}", f"b-{mode}-{r}"
                with (
                    running(_chrony_peer(tmp, pair_a, a, b, xleave), tmp / f"{pair_a}.log"),
                    running(_chrony_peer(tmp, pair_b, b, a, xleave), tmp / f"{pair_b}.log"),
                ):
                    time.sleep(seconds)
                offsets, _ = chrony_log_offsets(tmp / pair_a / "measurements.log", xleave)
                pool.add("chronyd -> chronyd", mode, offsets)
                ours, theirs = free_port(), free_port()
                name = f"c-{mode}-{r}"
                with running(_chrony_peer(tmp, name, theirs, ours, xleave), tmp / f"{name}.log"):
                    offsets = asyncio.run(_tsyncd_peer_offsets(ours, theirs, xleave, seconds))
                pool.add("tsyncd -> chronyd", mode, offsets)
                offsets, _ = chrony_log_offsets(tmp / name / "measurements.log", xleave)
                pool.add("chronyd -> tsyncd", mode, offsets)
    return pool.results()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        argv,
        prog="python -m bench.peer_xleave",
        description=__doc__,
        default_seconds=10.0,
        run=run,
        title="loopback peers",
    )


if __name__ == "__main__":
    sys.exit(main())
