"""PoolMembers: which addresses a pool uses and when a bad one is replaced."""

from __future__ import annotations

import ipaddress
import random

from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.sync.association import AssociationState, NtpAssociation
from tsyncd.sync.pool import PoolMembers
from tsyncd.wire.ntp import Leap

S = 1_000_000_000
T0 = 1_800_000_000 * S


def assoc() -> NtpAssociation:
    return NtpAssociation(
        min_poll=0, max_poll=0, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )


def test_choose_fills_up_to_count_in_dns_order_and_rate_limits_resolution() -> None:
    pool = PoolMembers(count=2, resolve_interval_ns=10 * S)
    assert pool.wants_resolution(T0)
    assert pool.choose(["192.0.2.1", "192.0.2.2", "192.0.2.3"], T0) == ["192.0.2.1", "192.0.2.2"]
    assert not pool.wants_resolution(T0 + 20 * S)  # full
    pool.drop("192.0.2.1", T0 + S)
    assert pool.members == ["192.0.2.2"] and pool.replaced == 1
    assert not pool.wants_resolution(T0 + 5 * S)  # asked DNS 5 s ago
    assert pool.wants_resolution(T0 + 11 * S)
    # The dropped address is held out even though DNS still lists it.
    assert pool.choose(["192.0.2.1", "192.0.2.2", "192.0.2.3"], T0 + 11 * S) == ["192.0.2.3"]


def test_unreachable_member_is_replaced_after_eight_polls() -> None:
    pool = PoolMembers(count=1, resolve_interval_ns=S)
    pool.choose(["192.0.2.1"], T0)
    a = assoc()
    for i in range(7):
        a.handle_timer(T0 + i * S)
        assert pool.check("192.0.2.1", a, "unreachable", T0 + i * S) is None
    a.handle_timer(T0 + 8 * S)
    reason = pool.check("192.0.2.1", a, "unreachable", T0 + 8 * S)
    assert reason == "unreachable (the last 8 requests unanswered)"
    assert pool.members == []


def test_a_member_answering_unsynchronized_is_replaced_as_such_not_as_unanswered() -> None:
    """QA s19 hunt-client F8: every request was answered, with stratum 0 and a leap alarm;
    the log said "8 requests unanswered"."""
    pool = PoolMembers(count=1, resolve_interval_ns=S)
    pool.choose(["192.0.2.1"], T0)
    a, server = assoc(), NtpResponder(AccessList((), ()))
    server.template = ResponseTemplate(leap=Leap.UNSYNCHRONIZED, stratum=0)
    client = ipaddress.ip_address("192.0.2.100")
    reasons = []
    for i in range(8):
        request = a.handle_timer(T0 + i * S)
        assert request is not None
        _, reply = server.handle_request(request, client, T0 + i * S, T0 + i * S + 1000)
        assert reply is not None and a.handle_reply(reply, T0 + i * S + 2000) is None
        reasons.append(pool.check("192.0.2.1", a, "unusable", T0 + i * S))
    assert reasons[:7] == [None] * 7 and pool.members == []  # replaced after the eighth
    assert reasons[7] == "server unsynchronized (it answers with stratum 0 or 16, or a leap alarm)"
    assert a.stats.drops_since_reply == {"unsynchronized": 8}
    a.server_unsynchronized = False  # had the replies been dropped for something else
    pool.choose(["192.0.2.1"], T0 + 3600 * S + 8 * S)
    why = pool.check("192.0.2.1", a, "unusable", T0 + 3600 * S + 8 * S)
    assert why == "no valid reply to the last 8 requests (dropped: 8 unsynchronized)"


def test_demobilized_member_is_replaced_at_once() -> None:
    pool = PoolMembers(count=1, resolve_interval_ns=S)
    pool.choose(["192.0.2.1"], T0)
    a = assoc()
    a.state = AssociationState.DEMOBILIZED
    assert pool.check("192.0.2.1", a, "unusable", T0) == "demobilized"


def test_falseticker_needs_consecutive_checks() -> None:
    pool = PoolMembers(count=1, resolve_interval_ns=S)
    pool.choose(["192.0.2.1"], T0)
    a = assoc()
    for _ in range(7):
        assert pool.check("192.0.2.1", a, "falseticker", T0) is None
    assert pool.check("192.0.2.1", a, "candidate", T0) is None  # resets the count
    for _ in range(7):
        assert pool.check("192.0.2.1", a, "falseticker", T0) is None
    assert pool.check("192.0.2.1", a, "falseticker", T0) == "falseticker"


def _waits(pool: PoolMembers, resolved: list[str], start: int, rounds: int) -> list[int]:
    """Seconds between the resolutions a short ``pool`` asks for, DNS always giving
    ``resolved``."""
    now, waits = start, []
    for _ in range(rounds):
        wait = 0
        while not pool.wants_resolution(now + wait * S):
            wait += 1
        waits.append(wait)
        now += wait * S
        pool.choose(resolved, now)
    return waits


def test_a_pool_short_of_addresses_backs_off_doubling_to_an_hour() -> None:
    pool = PoolMembers(count=2, resolve_interval_ns=4 * S)
    assert pool.choose(["192.0.2.1"], T0) == ["192.0.2.1"]  # one of two: short
    waits = _waits(pool, ["192.0.2.1"], T0, 12)
    assert waits[:4] == [4, 8, 16, 32] and waits[-1] == 3600
    # A failed lookup backs off the same way.
    pool.resolution_failed(T0)
    assert not pool.wants_resolution(T0 + 3599 * S) and pool.wants_resolution(T0 + 3600 * S)


def test_refresh_a_complete_pool_or_a_dropped_member_start_from_the_interval_again() -> None:
    pool = PoolMembers(count=2, resolve_interval_ns=4 * S)
    pool.choose(["192.0.2.1"], T0)
    assert _waits(pool, ["192.0.2.1"], T0, 4) == [4, 8, 16, 32]
    later = T0 + 60 * S
    pool.reset_backoff()  # tsyncctl refresh
    pool.choose(["192.0.2.1"], later)
    assert _waits(pool, ["192.0.2.1"], later, 2) == [4, 8]
    # Complete at last: a member dropped later is replaced soon, and backing off starts anew.
    later += 12 * S
    assert pool.choose(["192.0.2.1", "192.0.2.2"], later) == ["192.0.2.2"]
    pool.drop("192.0.2.2", later + S)  # replaced at the interval after the last resolution
    assert _waits(pool, ["192.0.2.1"], later + S, 3) == [3, 4, 8]


def test_an_address_refused_after_choosing_is_held_out_without_hastening_dns() -> None:
    pool = PoolMembers(count=2, resolve_interval_ns=4 * S)
    pool.choose(["192.0.2.1"], T0)
    assert _waits(pool, ["192.0.2.1"], T0, 4) == [4, 8, 16, 32]
    now = T0 + 60 * S + 64 * S
    # DNS now gives a second address, which turns out to be in use by another source.
    assert pool.choose(["192.0.2.1", "192.0.2.9"], now) == ["192.0.2.9"]
    pool.refuse("192.0.2.9", now)
    assert pool.members == ["192.0.2.1"] and pool.replaced == 0
    # Still backing off: 128 s after the 64 s before.
    assert not pool.wants_resolution(now + 127 * S) and pool.wants_resolution(now + 128 * S)
    assert pool.choose(["192.0.2.1", "192.0.2.9"], now + 128 * S) == []  # held out


def test_a_member_dropped_as_no_longer_in_dns_is_taken_again_when_dns_gives_it_back() -> None:
    """QA s19 hunt-client F2: ``tsyncctl refresh`` dropped it for not being in DNS, not for
    being bad: no hour's hold (chrony keeps none), unlike a bad member."""
    pool = PoolMembers(count=2, resolve_interval_ns=4 * S)
    pool.choose(["192.0.2.1", "192.0.2.2"], T0)
    assert pool.stale(["192.0.2.1"]) == ["192.0.2.2"]
    pool.drop("192.0.2.2", T0 + S, bad=False)
    pool.drop("192.0.2.1", T0 + S)  # a bad one, for contrast
    assert pool.members == [] and pool.replaced == 2
    assert pool.choose(["192.0.2.1", "192.0.2.2"], T0 + 2 * S) == ["192.0.2.2"]


def test_an_address_another_source_polls_is_left_out_only_while_it_does() -> None:
    """QA s21 hunt-nts #4: a member an NTS source (or a server) took over was held out for an
    hour as if bad, after that source was gone too.  Dropped without the hold, and left out of
    ``choose`` only while ``taken``, a free address filling its place meanwhile."""
    pool = PoolMembers(count=2, resolve_interval_ns=4 * S)
    pool.choose(["192.0.2.1", "192.0.2.2"], T0)
    pool.drop("192.0.2.1", T0 + S, bad=False)  # taken over by another source
    assert pool.choose(["192.0.2.1", "192.0.2.3"], T0 + 2 * S, taken={"192.0.2.1"}) == ["192.0.2.3"]
    pool.drop("192.0.2.3", T0 + 3 * S)  # bad, for contrast
    assert pool.choose(["192.0.2.1", "192.0.2.3"], T0 + 4 * S) == ["192.0.2.1"]  # free again
