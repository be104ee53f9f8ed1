"""A symmetric peer's packet that makes our answer due is answered from the receive path,
before the sample goes through selection (QA s19 hunt-new #1: waking the poll timer and
selecting first made chronyd's response time of us 1-3 ms, chronyd's own 33-82 µs)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from symmetric_peers import T0, S, announce, symmetric_peer

from tsyncd.daemon_sources import SourceMobilizer
from tsyncd.kiss_log import KissLog
from tsyncd.sync.core import SyncCore
from tsyncd.sync.sample import Sample
from tsyncd.wire.ntp import Mode, decode_ntp

MS = 1_000_000
ONE_WAY = 30_000


class FakeClock:
    now = T0

    def now_ns(self) -> int:
        return self.now

    def from_kernel_ns(self, kernel_ns: int) -> int:
        return kernel_ns


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True


class Mobilizer(SourceMobilizer):
    def _apply(self, actions: list[Any]) -> None:
        pass

    def _after_update(self) -> None:
        pass


def test_a_peers_packet_making_our_answer_due_is_answered_before_the_selection() -> None:
    core = SyncCore(
        local_stratum=None, min_sources=1, precision_log2=-20, discipline=None, now_ns=T0
    )
    ours = core.add_source(
        "peer",
        reference_id=0x7F000002,
        min_poll=0,
        max_poll=0,
        iburst=False,
        rng=random.Random(1),
        now_ns=T0,
        symmetric=True,
    ).association
    announce(ours, 3)  # type: ignore[arg-type]  # a SymmetricAssociation (symmetric=True)
    other = symmetric_peer(2, 4, xleave=False)  # the higher stratum: we answer it
    m = Mobilizer()
    m.core, m.clock, m.nts_sources = core, FakeClock(), {}  # type: ignore[assignment]
    sock = FakeSocket()
    m.sockets = {"peer": sock}  # type: ignore[dict-item]
    m._kiss_log, m._wake = KissLog(), asyncio.Event()

    requests, _ = core.handle_timer(T0 + S)  # our first packet
    assert [name for name, _ in requests] == ["peer"]
    core.handle_sent("peer", T0 + S)
    assert other.handle_reply(requests[0][1], T0 + S + ONE_WAY) is None  # kept to answer
    # The other peer's packet a poll later answers ours, so ours to it is due at once.
    data = other.handle_timer(T0 + 2 * S)
    assert data is not None
    selected: list[int] = []
    use_sample = core.use_sample

    def spy(name: str, sample: Sample | None, rx_ns: int) -> list[Any]:
        selected.append(len(sock.sent))
        return use_sample(name, sample, rx_ns)

    core.use_sample = spy  # type: ignore[method-assign]
    m.clock.now = T0 + 2 * S + ONE_WAY + 20_000  # type: ignore[attr-defined]
    m._on_reply("peer", data, T0 + 2 * S + ONE_WAY)
    assert len(sock.sent) == 1 and selected == [1]  # sent, then selected
    answer = decode_ntp(sock.sent[0])
    assert answer.mode == Mode.SYMMETRIC_ACTIVE
    assert answer.origin_ts == decode_ntp(data).transmit_ts
    deadline = core.next_deadline_ns()
    assert deadline is not None and deadline > T0 + 3 * S  # the timer has nothing to send
