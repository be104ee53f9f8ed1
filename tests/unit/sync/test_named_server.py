"""NamedServer: when a server given by host name is resolved again, and where it moves."""

from __future__ import annotations

import random

from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.named_server import NamedServer
from tsyncd.sync.pool import PoolMembers

S = 1_000_000_000
T0 = 1_800_000_000 * S
A, B = "192.0.2.1", "192.0.2.2"


def unanswered(polls: int) -> NtpAssociation:
    a = NtpAssociation(
        min_poll=0, max_poll=0, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )
    for i in range(polls):
        a.handle_timer(T0 + i * S)
    return a


def test_a_good_or_young_server_is_not_resolved_again() -> None:
    watch = NamedServer(resolve_interval_ns=8 * S)
    assert watch.check(unanswered(7), "unreachable", T0) is None  # 7 polls: not yet
    why = watch.check(unanswered(8), "unreachable", T0)
    assert why == "unreachable (the last 8 requests unanswered)"


def test_moves_to_another_address_of_the_name() -> None:
    watch = NamedServer(resolve_interval_ns=8 * S)
    assert watch.choose(A, [A, B], T0) == B and watch.moves == 1
    assert watch.check(unanswered(8), "unreachable", T0 + S) is None  # just moved: wait
    assert watch.check(unanswered(8), "unreachable", T0 + 8 * S) is not None


def test_same_address_again_backs_off_doubling_to_an_hour() -> None:
    watch = NamedServer(resolve_interval_ns=8 * S)
    dead, now, waits = unanswered(8), T0, []
    for _ in range(12):
        assert watch.check(dead, "unreachable", now) is not None
        assert watch.choose(A, [A], now) is None  # DNS still says A: stay
        wait = 0
        while watch.check(dead, "unreachable", now + wait * S) is None:
            wait += 1
        waits.append(wait)
        now += wait * S
    assert waits[:4] == [8, 16, 32, 64] and waits[-1] == 3600
    assert watch.moves == 0


def test_a_failed_lookup_backs_off_too() -> None:
    watch = NamedServer(resolve_interval_ns=8 * S)
    watch.resolution_failed(T0)
    assert watch.check(unanswered(8), "unreachable", T0 + 7 * S) is None
    assert watch.check(unanswered(8), "unreachable", T0 + 8 * S) is not None


def test_a_falseticker_is_resolved_again_after_eight_checks_in_a_row() -> None:
    watch = NamedServer(resolve_interval_ns=S)
    good = unanswered(0)
    for _ in range(7):
        assert watch.check(good, "falseticker", T0) is None
    assert watch.check(good, "candidate", T0) is None  # the run is broken
    for _ in range(7):
        assert watch.check(good, "falseticker", T0) is None
    assert watch.check(good, "falseticker", T0) == "falseticker"


def test_refresh_moves_only_when_the_name_lost_the_address() -> None:
    watch = NamedServer(resolve_interval_ns=8 * S)
    assert watch.choose(A, [B, A], T0, refresh=True) is None  # reordered, still A's
    assert watch.check(unanswered(8), "unreachable", T0) is not None  # no back-off from that
    assert watch.choose(A, [B], T0, refresh=True) == B
    assert watch.choose("", [A], T0, refresh=True) == A  # never had one (no socket)


def test_a_source_with_every_address_in_use_asks_again_backing_off() -> None:
    watch = NamedServer(resolve_interval_ns=8 * S)
    assert watch.choose("", [], T0) is None  # every address the name gave is in use
    now, waits = T0, []
    for _ in range(4):
        wait = 0
        while not watch.due(now + wait * S):
            wait += 1
        waits.append(wait)
        now += wait * S
        assert watch.choose("", [], now) is None
    assert waits == [8, 16, 32, 64]
    assert watch.choose("", [B], now) == B  # one is free now
    assert not watch.due(now + 7 * S) and watch.due(now + 8 * S)  # the back-off starts anew


def test_pool_members_dns_no_longer_gives_are_stale() -> None:
    pool = PoolMembers(count=2, resolve_interval_ns=S)
    pool.choose([A, B], T0)
    assert pool.stale([B, "192.0.2.3"]) == [A]
    assert pool.stale([A, B]) == []
