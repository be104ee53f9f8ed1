"""When symmetric peers send (``tsyncd/sync/peer_timing.py``, chronyd's timing): the rules, and
two associations on virtual time, each sending when its own deadline comes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from symmetric_peers import T0, S, symmetric_peer

from tsyncd.sync.peer_timing import (
    lengthened,
    stratum_diff,
    transmit_delay_ns,
    transmit_poll,
    wait_poll,
)
from tsyncd.sync.symmetric import SymmetricAssociation
from tsyncd.wire.ntp import decode_ntp

ONE_WAY = 30_000  # ns
MS = 1_000_000


def test_after_sending_a_lower_stratum_peer_waits_longer() -> None:
    assert transmit_delay_ns(S, 1, None) == 1100 * MS  # the peer's stratum is above ours
    assert transmit_delay_ns(S, 0, None) == S
    assert transmit_delay_ns(S, -1, None) == S
    # ... 1.1 times the longest interval the peer's next packet may take.
    assert transmit_delay_ns(S // 2, 1, None, S) == 1100 * MS
    assert transmit_delay_ns(S // 2, 0, None, S) == S // 2


def test_a_lower_stratum_peer_waits_for_a_peer_whose_poll_may_rise() -> None:
    # The peer polls every 0.5 s, we every 1 s: its next packet may come after 1 s.
    assert wait_poll(0, -1, -1, reachable=True) == 0
    # Its poll is longer than ours: within one step above the poll our packets go at.
    assert wait_poll(-1, 0, -1, reachable=True) == 0
    assert wait_poll(6, 0, 0, reachable=True) == 1
    assert wait_poll(0, 0, 0, reachable=True) == 0
    assert wait_poll(0, -1, -1, reachable=False) == -1
    assert wait_poll(0, None, 0, reachable=True) == 0


def test_a_higher_stratum_peers_packet_moves_our_next_one() -> None:
    # Later than 1 / 1.1 of our interval: we answer the peer's packet as soon as it comes.
    assert transmit_delay_ns(S, 2, 950 * MS) == 0
    assert transmit_delay_ns(S, 2, 1020 * MS) == 0
    # Earlier (the phase was lost): at once from half an interval on, else half an interval
    # after our last packet, so that the peer's next packet finds us locked on again.
    assert transmit_delay_ns(S, 2, 600 * MS) == 0
    assert transmit_delay_ns(S, 2, 300 * MS) == 200 * MS
    assert transmit_delay_ns(S, 2, 300 * MS, 2 * S) == 200 * MS
    # A peer polling faster than we may: chronyd's 1.1 intervals after our packet.
    assert transmit_delay_ns(S, 2, 600 * MS, S // 2) == 500 * MS


def test_equal_strata_spread_out_and_a_lower_peer_follows_us() -> None:
    assert transmit_delay_ns(S, 0, 500 * MS) == 500 * MS
    assert transmit_delay_ns(S, 0, 700 * MS) == 400 * MS  # late: 1.1 intervals after ours
    assert transmit_delay_ns(S, -3, 700 * MS) == 300 * MS
    assert transmit_delay_ns(S, -3, 1500 * MS) == 0


def test_the_shorter_poll_of_a_reachable_peer_within_our_floor() -> None:
    assert transmit_poll(6, 4, 3, reachable=True) == 4
    assert transmit_poll(6, 1, 3, reachable=True) == 3  # never below min-poll
    assert transmit_poll(6, 4, 3, reachable=False) == 6
    assert transmit_poll(6, None, 3, reachable=True) == 6
    assert transmit_poll(2, 4, 0, reachable=True) == 2  # a longer peer poll is not followed


def test_unsynchronized_strata_compare_as_16() -> None:
    assert stratum_diff(0, 8) == 8 and stratum_diff(9, 8) == 1 and stratum_diff(3, 16) == -13
    assert stratum_diff(0, 16) == 0 and stratum_diff(16, 0) == 0 and stratum_diff(20, 16) == 0


def test_the_random_part_only_lengthens() -> None:
    rng = random.Random(5)
    delays = [lengthened(S, rng) for _ in range(200)]
    assert min(delays) >= S and max(delays) <= S + S // 50
    assert len(set(delays)) > 100
    assert lengthened(0, rng) == 0


@dataclass
class Peer:
    """One association and the times (one clock for both) it sent and heard the other."""

    assoc: SymmetricAssociation
    sent_ns: list[int] = field(default_factory=list)
    heard_ns: list[int] = field(default_factory=list)

    def holds_ns(self) -> list[int]:
        """For each packet sent after hearing the other: how long after the latest packet
        heard (the other's measurement spans it: chronyc's "Response time")."""
        holds = []
        for prev, sent in zip(self.sent_ns, self.sent_ns[1:], strict=False):
            heard = [h for h in self.heard_ns if prev < h <= sent]
            if heard:
                holds.append(sent - heard[-1])
        return holds


def run(
    a: Peer,
    b: Peer,
    until_ns: int,
    in_flight: list[tuple[int, Peer, bytes]] | None = None,
    lose: int = 0,
) -> None:
    """Each peer sends when its deadline comes; each packet arrives ``ONE_WAY`` later.  A run
    in stages passes the same ``in_flight`` list to each; ``lose``: so many of B's next
    packets are lost."""
    in_flight = [] if in_flight is None else in_flight
    for _ in range(10_000):
        timers = [(p.assoc.next_deadline_ns() or until_ns, i, p) for i, p in enumerate((a, b))]
        t, _, due = min(timers)
        arrival = min(in_flight, key=lambda f: f[0], default=None)
        if arrival is not None and arrival[0] <= t:
            in_flight.remove(arrival)
            arrival[1].assoc.handle_reply(arrival[2], arrival[0])
            arrival[1].heard_ns.append(arrival[0])
            continue
        if t >= until_ns:
            return
        data = due.assoc.handle_timer(t)
        assert data is not None and decode_ntp(data).transmit_ts
        due.sent_ns.append(t)
        if due is b and lose:
            lose -= 1
            continue
        in_flight.append((t + ONE_WAY, b if due is a else a, data))
    raise AssertionError("too many events")


def intervals(times_ns: list[int], n: int) -> list[int]:
    """The last ``n`` intervals between ``times_ns``."""
    return [y - x for x, y in zip(times_ns[-n - 1 :], times_ns[-n:], strict=False)]


def pair(a_stratum: int, b_stratum: int, *, xleave: bool = False) -> tuple[Peer, Peer]:
    return Peer(symmetric_peer(1, a_stratum, xleave=xleave)), Peer(
        symmetric_peer(2, b_stratum, xleave=xleave)
    )


def test_the_lower_stratum_peer_answers_the_other_at_once() -> None:
    """A (stratum 3) locks on to B (stratum 4), whose measurements of A then span no more
    than the network: A sends as soon as B's packet comes, and no packets cross."""
    for xleave in (False, True):
        a, b = pair(3, 4, xleave=xleave)
        run(a, b, T0 + 60 * S)
        assert max(a.holds_ns()[-30:]) == 0, a.holds_ns()
        assert min(b.holds_ns()[-30:]) > 900 * MS  # B keeps its own interval
        drops = b.assoc.stats.drops_by_reason.get("bogus", 0)
        run(a, b, T0 + 120 * S)
        assert b.assoc.stats.drops_by_reason.get("bogus", 0) == drops
        last = intervals(a.sent_ns, 30)
        assert min(last) >= S - 2 * ONE_WAY and max(last) <= S + S // 50 + 2 * ONE_WAY
        # Each packet's reach bit goes in when it is answered, as chronyd's: 377 on both
        # sides, though A sends right after B's packet (hunt-new #6: it showed 376).
        assert (a.assoc.reach, b.assoc.reach) == (0o377, 0o377)


def test_peers_of_equal_stratum_spread_their_packets_out() -> None:
    """Started in step (the worst case: every packet crosses the other's), two peers of the
    same stratum move apart until each sends well inside the other's interval."""
    a, b = pair(5, 5)
    run(a, b, T0 + 90 * S)
    holds = a.holds_ns()[-20:] + b.holds_ns()[-20:]
    assert min(holds) > 250 * MS, holds


def test_a_faster_reachable_peer_sets_our_interval() -> None:
    """B polls every second; A's own poll is 8 s (min-poll 0): A sends each second too."""
    a, b = pair(4, 4)
    a.assoc.poll = 3
    run(a, b, T0 + 40 * S)
    last = intervals(a.sent_ns, 10)
    assert a.assoc.reach != 0 and len(last) == 10 and max(last) < 1200 * MS, last


def varying_pair(a_poll: int, b_poll: int) -> tuple[Peer, Peer]:
    """A (stratum 3) and B (stratum 4), both with min-poll -1 and max-poll 0 (QA s19
    hunt-new #1: chronyd's poll wanders inside them, and so does ours)."""
    a, b = pair(3, 4)
    for peer, poll in ((a, a_poll), (b, b_poll)):
        peer.assoc.set_poll_limits(-1, 0, T0)
        peer.assoc.poll = poll
    return a, b


def test_the_higher_stratum_peer_lengthening_its_poll_keeps_the_lock() -> None:
    """B goes from 0.5 s to 1 s (A polls at 1 s): its next packet comes after 1 s, and A,
    having waited for it instead of 1.1 x 0.5 s, answers it at once: no packet crosses."""
    a, b = varying_pair(0, -1)
    flight: list[tuple[int, Peer, bytes]] = []
    run(a, b, T0 + 30 * S, flight)
    assert max(a.holds_ns()[-20:]) == 0 and max(intervals(b.sent_ns, 20)) < 600 * MS
    held, bogus = len(a.holds_ns()), b.assoc.stats.drops_by_reason.get("bogus", 0)
    b.assoc.poll = 0
    run(a, b, T0 + 60 * S, flight)
    assert max(a.holds_ns()[held:]) == 0, a.holds_ns()[held:]
    assert b.assoc.stats.drops_by_reason.get("bogus", 0) == bogus
    assert min(intervals(b.sent_ns, 20)) > 900 * MS


def test_polls_changing_on_either_side_keep_the_lock() -> None:
    a, b = varying_pair(0, 0)
    flight: list[tuple[int, Peer, bytes]] = []
    run(a, b, T0 + 30 * S, flight)
    held = len(a.holds_ns())
    for k, (a_poll, b_poll) in enumerate(((-1, 0), (0, 0), (0, -1), (0, 0), (-1, -1), (0, 0))):
        a.assoc.poll, b.assoc.poll = a_poll, b_poll
        run(a, b, T0 + (40 + 10 * k) * S, flight)
    assert max(a.holds_ns()[held:]) == 0, a.holds_ns()[held:]


def test_after_a_lost_packet_the_lower_stratum_peer_locks_on_again_at_once() -> None:
    """One of B's packets is lost: A's own timer answers late once, and A is locked on again
    from B's next packet (chronyd: 0.1 interval closer per poll, about 20 polls)."""
    a, b = pair(3, 4)
    flight: list[tuple[int, Peer, bytes]] = []
    run(a, b, T0 + 30 * S, flight)
    held = len(a.holds_ns())
    run(a, b, T0 + 31 * S, flight, lose=1)
    run(a, b, T0 + 60 * S, flight)
    late = [h for h in a.holds_ns()[held:] if h > 0]
    assert len(late) <= 2 and max(late, default=0) <= S // 2, a.holds_ns()[held:]
    assert max(a.holds_ns()[held + 4 :]) == 0


def test_a_peer_faster_than_our_min_poll_never_makes_us_faster() -> None:
    """B polls every 0.5 s, A's min-poll is 0: A never sends sooner than 1 s after its last
    packet once going, however B's packets fall."""
    a, b = pair(3, 4)
    b.assoc.set_poll_limits(-1, -1, T0)
    run(a, b, T0 + 60 * S)
    assert min(intervals(a.sent_ns, 40)) >= S, intervals(a.sent_ns, 40)
