"""The sync core across its own clock corrections and the operator's connectivity changes
(QA s17 hunt-sync F1, F3, F5 and hunt-cli F1, F2): a step moves every deadline and send time
with the clock, stored offsets follow our slews, the leap indicator is the latest reply's, an
offline source is out of the selection at once, and a source gone silent says so."""

from __future__ import annotations

import dataclasses
import random

from tests.unit.sync.test_core_panic import T0, S, poll, server
from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.sync.core import SyncCore
from tsyncd.sync.discipline import Discipline, DisciplineConfig, Step
from tsyncd.wire.ntp import Leap
from tsyncd.wire.timestamps import ntp64_from_unix_ns

MS = 1_000_000


def core_with(*names: str, min_poll: int = 0) -> tuple[SyncCore, Discipline]:
    disc = Discipline(DisciplineConfig(), initial_frequency_ppm=None, now_ns=T0)
    core = SyncCore(
        local_stratum=None, min_sources=1, precision_log2=-20, discipline=disc, now_ns=T0
    )
    for i, name in enumerate(names):
        core.add_source(
            name,
            reference_id=i + 1,
            min_poll=min_poll,
            max_poll=min_poll,
            iburst=False,
            rng=random.Random(i),
            now_ns=T0,
        )
    return core, disc


def test_a_step_back_moves_the_poll_deadlines_with_the_clock() -> None:
    """A first reply 2000 s behind steps the clock back 2000 s; polling goes on every second
    (it used to wait for the old deadline, 2000 s away, with the clock running free)."""
    core, _ = core_with("a")
    r, now = server(), T0 + S
    r.template = dataclasses.replace(r.template, reference_ts=ntp64_from_unix_ns(T0 - 3000 * S))
    actions = poll(core, r, now, -2000 * S)
    steps = [a for a in actions if isinstance(a, Step)]
    assert len(steps) == 1 and steps[0].offset_ns < -1999 * S
    now += steps[0].offset_ns  # the clock reads 2000 s earlier from here on
    deadline = core.next_deadline_ns()
    assert deadline is not None and deadline - now <= 2 * S
    est = core.sources["a"].filter.output(now)
    assert est is not None and abs(now - est.sample.local_rx_ns) < S  # not 2000 s ahead
    assert core.sources["a"].association.stats.last_rx_ns is not None
    assert core.sources["a"].association.stats.last_rx_ns < now + S
    sent = core.sources["a"].association.stats.packets_sent
    for _ in range(5):
        now += 2 * S
        poll(core, r, now, 0)
    assert core.sources["a"].association.stats.packets_sent == sent + 5


def test_stored_offsets_follow_our_slews() -> None:
    """The first reply, 100 ms off, is slewed out; once it is, the filter and the selection
    say the clock is near 0, not still 100 ms off (for up to eight polls, while that sample
    stayed the lowest-delay one: two agreeing servers then looked like falsetickers)."""
    core, disc = core_with("a")
    r, now = server(), T0 + S
    poll(core, r, now, 100 * MS)  # the first update: 100 ms is slewed out, not stepped
    assert disc.snapshot().residual_offset_ns > 50 * MS
    end = disc.next_deadline_ns()
    assert end is not None and end - now < 2 * S
    core.handle_timer(end)  # the slew ends when due, as the daemon's timer runs it
    assert disc.snapshot().residual_offset_ns == 0
    est = core.sources["a"].filter.output(end)
    assert est is not None and abs(est.sample.offset_ns) < MS
    assert core.selection.synchronized and abs(core.selection.offset_ns) < MS
    assert core.selection.root_dispersion_ns < 10 * MS


def test_the_leap_indicator_is_the_latest_replys() -> None:
    """The low-delay sample the filter chooses may be hours old; the leap announcement ends
    with the first reply after midnight, not when that sample ages out."""
    core, _ = core_with("a")
    r, now = server(), T0 + S
    r.template = dataclasses.replace(r.template, leap=Leap.INSERT)
    for _ in range(3):
        poll(core, r, now, 0)
        now += 2 * S
    assert core.decision.leap == Leap.INSERT
    r.template = dataclasses.replace(r.template, leap=Leap.NONE)
    poll(core, r, now, 0, one_way_ns=90_000)  # slower: the filter keeps an announcing sample
    est = core.sources["a"].filter.output(now)
    assert est is not None and est.sample.leap == Leap.INSERT
    assert core.decision.leap == Leap.NONE


def test_an_offline_system_peer_is_out_of_the_selection_at_once() -> None:
    """chronyd clears an offline source's reach: the selection moves to a source still online
    at once (it used to keep the offline one, and with it no clock updates, for hours)."""
    core, _ = core_with("a", "b")
    r, now = server(), T0 + S
    for _ in range(8):
        poll(core, r, now, 0)
        now += 2 * S
    peer = core.decision.selected
    assert peer in ("a", "b")
    other = "b" if peer == "a" else "a"
    assert core.set_online(peer, False, now)
    assert core.sources[peer].association.reach == 0
    updates = core.clock_updates
    for _ in range(3):
        poll(core, r, now, 0)
        now += 2 * S
    assert core.decision.selected == other
    assert core.clock_updates > updates
    assert core.decision.selection[peer].code == "S"
    assert core.decision.reasons[peer] == "offline"


def test_a_source_gone_silent_is_not_one_that_never_answered() -> None:
    core, _ = core_with("a")
    r, now = server(), T0 + S
    for _ in range(4):
        poll(core, r, now, 0)
        now += 2 * S
    for _ in range(20):  # the server stops answering: dummies push every sample out
        core.handle_timer(now)
        now += 2 * S
    assert core.sources["a"].filter.output(now) is None
    assert core.decision.selection["a"].code == "S"
    assert core.decision.reasons["a"] == "no valid reply to the last 8 polls"
    # tsyncctl peers keeps its last sample, as chronyc's sources does (QA s17 verify).
    row = NtpSourceSocket(name="a", mode="server", ip="127.0.0.1", port=123).snapshot(
        core.sources["a"], "unreachable", None, now
    )
    assert row.stratum == 1 and row.offset is not None and abs(row.offset) < 1e-3
    assert row.reach == 0 and row.jitter is None
