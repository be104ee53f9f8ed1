"""Selection (intersection), clustering, system peer choice and combining, hand-computed."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsyncd.sync.sample import MAXDIST_NS
from tsyncd.sync.select import (
    Contender,
    cluster,
    combine,
    intersect,
    merit,
    pick_system_peer,
    selection_jitter_ns,
)

MS = 1_000_000
US = 1_000


def ct(
    name: str, offset_ms: float, distance_ms: float, stratum: int = 2, jitter_ms: float = 1
) -> Contender:
    return Contender(
        name=name,
        offset_ns=round(offset_ms * MS),
        root_distance_ns=round(distance_ms * MS),
        stratum=stratum,
        jitter_ns=round(jitter_ms * MS),
    )


# ---------------------------------------------------------------- intersection


def test_three_agree_and_one_falseticker_is_excluded() -> None:
    sources = [ct("a", 0, 10), ct("b", 2, 10), ct("c", -3, 10), ct("d", 100, 10)]
    found = intersect(sources)
    # f = 0 fails (d overlaps nobody); with f = 1 three intervals share [-8, 7] ms and only
    # d's midpoint lies outside.
    assert found is not None
    assert (found.low_ns, found.high_ns, found.faults) == (-8 * MS, 7 * MS, 1)
    assert found.truechimers == ("a", "b", "c") and found.falsetickers == ("d",)


def test_two_against_two_has_no_majority() -> None:
    sources = [ct("a", 0, 5), ct("b", 1, 5), ct("c", 100, 5), ct("d", 101, 5)]
    assert intersect(sources) is None


def test_all_overlapping_all_truechimers_boundaries_inclusive() -> None:
    sources = [ct("a", 0, 10), ct("b", 5, 10), ct("c", -5, 10)]
    found = intersect(sources)
    # The intersection is [-5, 5] ms; b and c sit exactly on its edges.
    assert found is not None
    assert (found.low_ns, found.high_ns, found.faults) == (-5 * MS, 5 * MS, 0)
    assert found.truechimers == ("a", "b", "c") and found.falsetickers == ()


def test_a_huge_interval_with_a_far_midpoint_is_a_falseticker() -> None:
    # c's interval [-100 ms, 1.9 s] covers the others, but its midpoint is far outside them:
    # with f = 0 that midpoint is outside [-6, 10] ms, so f = 1 gives [-10, 14] ms.
    sources = [ct("a", 0, 10), ct("b", 4, 10), ct("c", 900, 1000)]
    found = intersect(sources)
    assert found is not None
    assert (found.low_ns, found.high_ns, found.faults) == (-10 * MS, 14 * MS, 1)
    assert found.truechimers == ("a", "b") and found.falsetickers == ("c",)


def test_a_huge_interval_does_not_widen_the_intersection() -> None:
    sources = [ct("a", 0, 10), ct("b", 4, 10), ct("c", 2, 1000)]
    found = intersect(sources)
    assert found is not None
    assert (found.low_ns, found.high_ns, found.faults) == (-6 * MS, 10 * MS, 0)
    assert found.truechimers == ("a", "b", "c")


def test_one_source_is_its_own_majority_and_none_is_nothing() -> None:
    found = intersect([ct("a", 7, 3)])
    assert found is not None and (found.low_ns, found.high_ns) == (4 * MS, 10 * MS)
    assert found.truechimers == ("a",)
    assert intersect([]) is None


def test_non_positive_distance_is_a_bug() -> None:
    with pytest.raises(ValueError, match="root distance"):
        intersect([ct("a", 0, 0)])


# ---------------------------------------------------------------- clustering


def test_merit_puts_stratum_before_distance() -> None:
    near = ct("near", 0, 900, stratum=1)
    far = ct("far", 0, 1, stratum=2)
    assert merit(near) == MAXDIST_NS + 900 * MS
    assert merit(near) < merit(far)
    assert cluster([far, near]).survivors == (near, far)


def test_cluster_drops_the_largest_selection_jitter_first() -> None:
    sources = [
        ct("a", 0, 10),
        ct("b", 1, 11),
        ct("c", -1, 12),
        ct("d", 20, 13),
        ct("e", -50, 14),
    ]
    # e: sqrt((50² + 51² + 49² + 70²)/4) ≈ 55.7 ms > d: sqrt((20² + 19² + 21² + 70²)/4) ≈ 39 ms.
    assert selection_jitter_ns(sources[4], sources) == math.isqrt(12_402 * MS * MS // 4)
    result = cluster(sources)
    assert result.outliers == ("e", "d")
    assert [c.name for c in result.survivors] == ["a", "b", "c"]
    # Stopped at NMIN: b's selection jitter sqrt((1² + 2²)/2) ms is the largest left.
    assert result.selection_jitter_ns == math.isqrt(2_500_000_000_000)


def test_cluster_stops_when_the_spread_is_below_the_peer_jitter() -> None:
    sources = [ct(n, i / 1000, 10 + i, jitter_ms=0.01) for i, n in enumerate("abcde")]
    result = cluster(sources)
    assert result.outliers == ()
    assert len(result.survivors) == 5
    assert result.selection_jitter_ns < 10 * US


def test_cluster_keeps_going_above_nmin_until_agreement() -> None:
    sources = [ct("a", 0, 10, jitter_ms=2), ct("b", 1, 11, jitter_ms=2)]
    sources += [ct("c", 2, 12, jitter_ms=2), ct("d", 3, 13, jitter_ms=2), ct("e", 9, 14)]
    result = cluster(sources)
    # e (9 ms away) goes first; then a's and d's selection jitter sqrt((1+4+9)/3) ≈ 2.16 ms
    # is still above the smallest peer jitter, 2 ms, and four survivors are more than NMIN.
    assert result.outliers[0] == "e"
    assert len(result.survivors) == 3
    assert result.outliers[1] == "d"  # a tie with a: the worse merit is dropped


def test_cluster_with_one_survivor() -> None:
    result = cluster([ct("a", 3, 10)])
    assert result.selection_jitter_ns == 0 and result.outliers == ()


# ---------------------------------------------------------------- system peer


def test_anti_clockhop_keeps_the_current_peer_at_the_same_stratum() -> None:
    a, b, c = ct("a", 0, 10), ct("b", 0, 20), ct("c", 0, 5, stratum=1)
    assert pick_system_peer([a, b], None) is a
    assert pick_system_peer([a, b], "b") is b  # b survived at a's stratum: no hop
    assert pick_system_peer([c, a, b], "b") is c  # a better stratum appeared: hop
    assert pick_system_peer([a], "b") is a  # b did not survive


# ---------------------------------------------------------------- combining


def test_combine_weights_by_inverse_distance() -> None:
    a, b = ct("a", 0, 10), ct("b", 40, 30)
    combo = combine([a, b], a, selection_jitter_ns=15 * MS)
    assert combo.weights == {"a": Fraction(3, 4), "b": Fraction(1, 4)}
    assert combo.offset_ns == 10 * MS  # 3/4 · 0 + 1/4 · 40 ms
    assert combo.peer_jitter_ns == 20 * MS  # sqrt(1/4 · 40²) ms
    assert combo.system_jitter_ns == 25 * MS  # sqrt(15² + 20²) ms


def test_combine_three_sources_exactly() -> None:
    sources = [ct("a", 0, 10), ct("b", 10, 20), ct("c", -20, 20)]
    combo = combine(sources, sources[0], selection_jitter_ns=0)
    assert combo.weights == {"a": Fraction(1, 2), "b": Fraction(1, 4), "c": Fraction(1, 4)}
    assert combo.offset_ns == -2_500 * US  # (10 - 20)/4 ms
    assert combo.peer_jitter_ns == math.isqrt((100 + 400) * MS * MS // 4)


def test_combine_spread_is_about_the_system_peer() -> None:
    a, b = ct("a", 0, 10), ct("b", 40, 30)
    combo = combine([a, b], b, selection_jitter_ns=0)
    assert combo.offset_ns == 10 * MS
    assert combo.peer_jitter_ns == math.isqrt(3 * 1600 * MS * MS // 4)  # sqrt(3/4 · 40²)


# ---------------------------------------------------------------- properties

contender_lists = st.lists(
    st.tuples(
        st.integers(-2_000 * MS, 2_000 * MS),
        st.integers(1, 1_000 * MS),
        st.integers(1, 15),
        st.integers(1, 50 * MS),
    ),
    min_size=1,
    max_size=9,
).map(
    lambda rows: [
        Contender(name=f"s{i}", offset_ns=o, root_distance_ns=d, stratum=s, jitter_ns=j)
        for i, (o, d, s, j) in enumerate(rows)
    ]
)


@settings(max_examples=300, deadline=None)
@given(contender_lists)
def test_selection_keeps_a_majority_or_nothing(contenders: list[Contender]) -> None:
    found = intersect(contenders)
    if found is None:
        return
    assert 2 * len(found.truechimers) > len(contenders)
    assert found.low_ns < found.high_ns and 2 * found.faults < len(contenders)
    assert sorted(found.truechimers + found.falsetickers) == sorted(c.name for c in contenders)
    for c in contenders:
        assert (c.name in found.truechimers) == (found.low_ns <= c.offset_ns <= found.high_ns)


@settings(max_examples=300, deadline=None)
@given(contender_lists, st.integers(0, 100 * MS))
def test_combined_offset_lies_within_the_survivors(
    contenders: list[Contender], selection_jitter: int
) -> None:
    result = cluster(contenders)
    survivors = result.survivors
    assert len(survivors) >= min(3, len(contenders))
    assert len(survivors) + len(result.outliers) == len(contenders)
    peer = pick_system_peer(survivors, None)
    combo = combine(survivors, peer, selection_jitter_ns=selection_jitter)
    offsets = [c.offset_ns for c in survivors]
    assert min(offsets) <= combo.offset_ns <= max(offsets)
    assert sum(combo.weights.values()) == 1
    assert combo.system_jitter_ns >= max(selection_jitter, combo.peer_jitter_ns)
