"""PoolMembers: which addresses a pool uses and when a bad one is replaced."""

from __future__ import annotations

import random

from tsyncd.sync.association import AssociationState, NtpAssociation
from tsyncd.sync.pool import PoolMembers

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
    assert reason is not None and reason.startswith("unreachable")
    assert pool.members == []


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
