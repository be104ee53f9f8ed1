"""Selection, clustering and combining of sources (RFC 5905 §11.2), as pure functions.

Theory of operation
-------------------
Each source that passed accept() is a ``Contender``: its filter offset θ and its root distance
Λ, the most its offset can be wrong by.  So the true time lies in its correctness interval
[θ − Λ, θ + Λ] if the source is honest.

1. ``intersect`` (§11.2.1, Marzullo's algorithm as RFC 5905 modifies it) looks for the smallest
   number f of liars, f < m/2, such that m − f intervals share a common stretch [l, u] and at
   most f midpoints lie outside it.  Sources whose offset lies inside are truechimers, the
   rest falsetickers.  If no such f exists there is no majority, and nothing is selected.
   With chrony's ``trust`` sources, ``intersect_trusting`` does chronyd's selection instead:
   the interval covered by the most trust sources, then by the most sources in all, and
   only the trust sources vote on the majority.
2. ``cluster`` (§11.2.2) sorts the truechimers by merit (stratum first, then root distance)
   and, while more than NMIN remain, drops the one whose offset is farthest from the others
   (largest selection jitter) until that spread is smaller than the smallest peer jitter: at
   that point dropping more would not make the rest agree better than they measure.
3. ``pick_system_peer`` takes the first survivor, but keeps the current system peer if it
   survived at the same stratum (RFC 5905 A.5.5.2: no clock hopping between equals).
4. ``combine`` (§11.2.3) averages the survivors' offsets weighted by 1/Λ and derives the system
   jitter from the selection jitter and the survivors' spread about the system peer.

Exact arithmetic: weighted means use ``Fraction`` and round once at the end, so results do not
depend on summation order and stay within the survivors' offset range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tsyncd.sync.sample import MAXDIST_NS

if TYPE_CHECKING:
    from fractions import Fraction

NMIN: Final = 3  # RFC 5905 NMIN: clustering never leaves fewer survivors than this


@dataclass(frozen=True, slots=True, kw_only=True)
class Contender:
    """One source as the selection algorithms see it; times in ns."""

    name: str
    offset_ns: int  # θ: source minus our clock, from the clock filter
    root_distance_ns: int  # Λ: half-width of the correctness interval, > 0
    stratum: int
    jitter_ns: int  # the source's peer (filter) jitter


@dataclass(frozen=True, slots=True, kw_only=True)
class Intersection:
    """A successful selection: the majority interval and who agrees with it."""

    low_ns: int  # l
    high_ns: int  # u
    faults: int  # f: how many sources had to be presumed wrong
    # offset inside [l, u], in input order (intersect_trusting: interval holding [l, u] or
    # inside it, and an untrusted one also inside the trust sources' interval)
    truechimers: tuple[str, ...]
    # the others, in input order (intersect_trusting: those whose interval neither holds
    # [l, u] nor lies inside it; its "T" sources are in neither tuple)
    falsetickers: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Clustering:
    """What is left after clustering, best merit first, and who was dropped."""

    survivors: tuple[Contender, ...]  # by merit: stratum·MAXDIST + Λ, then name
    outliers: tuple[str, ...]  # dropped truechimers, in the order they were dropped
    selection_jitter_ns: int  # Ψ_s: the largest selection jitter among the survivors


@dataclass(frozen=True, slots=True, kw_only=True)
class Combination:
    """The survivors averaged into one offset (RFC 5905 §11.2.3)."""

    offset_ns: int  # Θ: Σ θ_i/Λ_i / Σ 1/Λ_i, rounded to the nearest ns
    peer_jitter_ns: int  # Ψ_p: weighted RMS of the offsets about the system peer's
    system_jitter_ns: int  # sqrt(Ψ_s² + Ψ_p²)
    weights: dict[str, Fraction]  # each survivor's share of Θ, summing to 1


def merit(c: Contender) -> int:
    """RFC 5905 §11.2.2 sort key: stratum dominates, root distance breaks ties."""
    return c.stratum * MAXDIST_NS + c.root_distance_ns


# ---------------------------------------------------------------- selection


def intersect(contenders: Sequence[Contender]) -> Intersection | None:
    """RFC 5905 §11.2.1: the majority interval, or None when no majority agrees.

    Endpoints sort by value, and at equal values lowpoints before midpoints before highpoints,
    so intervals that merely touch still count as overlapping.
    """
    m = len(contenders)
    if m == 0:
        return None
    edges: list[tuple[int, int]] = []  # (value, type): -1 lowpoint, 0 midpoint, +1 highpoint
    for c in contenders:
        if c.root_distance_ns <= 0:
            raise ValueError(f"{c.name}: root distance must be positive")
        edges += [
            (c.offset_ns - c.root_distance_ns, -1),
            (c.offset_ns, 0),
            (c.offset_ns + c.root_distance_ns, 1),
        ]
    edges.sort()
    faults = 0
    while 2 * faults < m:
        need = m - faults
        low, outside_low = _scan(edges, need)
        high, outside_high = _scan([(-v, -t) for v, t in reversed(edges)], need)
        if low is not None and high is not None:
            high = -high
            if outside_low + outside_high <= faults and low < high:
                inside = [c.name for c in contenders if low <= c.offset_ns <= high]
                outside = [c.name for c in contenders if not low <= c.offset_ns <= high]
                return Intersection(
                    low_ns=low,
                    high_ns=high,
                    faults=faults,
                    truechimers=tuple(inside),
                    falsetickers=tuple(outside),
                )
        faults += 1
    return None


def intersect_trusting(
    contenders: Sequence[Contender], trusted: frozenset[str]
) -> tuple[Intersection | None, tuple[str, ...]]:
    """Selection with chrony's ``trust`` option: (the intersection, the untrusted sources that
    do not fully agree with the trust sources, chrony's "T").

    Without a trusted contender this is ``intersect``.  With one it is chronyd's selection (4.x
    sources.c, checked against chronyd 4.3): one sweep over the correctness intervals of all
    contenders looks for the stretch covered by the most trusted intervals and, among those,
    by the most intervals in all ([low, high]; where several disjoint stretches tie, from the
    first one's start to the last one's end).  The trust sources alone vote on the majority:
    more than half of them must cover it, so only trust sources can outvote a trust source,
    and two that disagree leave no majority however many others side with one.  The
    untrusted sources add depth (they pick among stretches the trust sources cover equally,
    and narrow the interval to where they agree), so a LAN server more accurate than the
    trusted internet source it sits inside is used with it.

    A source whose interval holds [low, high] or lies within it agrees; any other is a
    falseticker.  An untrusted source that agrees must also lie within the trust sources'
    interval (the stretch of the most trusted depth, ties spanned as above), so that it cannot
    pull the combined offset outside what they vouch for; a wider one is out as "T".
    """
    n_trusted = sum(c.name in trusted for c in contenders)
    if not n_trusted:
        return intersect(contenders), ()
    # (value, -1 lowpoint / +1 highpoint, trusted): lowpoints first at equal values, so
    # intervals that merely touch overlap, as in ``intersect``.
    edges: list[tuple[int, int, bool]] = []
    for c in contenders:
        if c.root_distance_ns <= 0:
            raise ValueError(f"{c.name}: root distance must be positive")
        edges += [
            (c.offset_ns - c.root_distance_ns, -1, c.name in trusted),
            (c.offset_ns + c.root_distance_ns, 1, c.name in trusted),
        ]
    edges.sort()
    depth = trust_depth = 0
    best = (0, 0)  # (trust depth, depth) of the best stretch so far, compared in that order
    low = high = trust_low = trust_high = 0
    for value, kind, is_trusted in edges:
        if kind < 0:
            depth += 1
            trust_depth += is_trusted
            if (trust_depth, depth) > best:
                if trust_depth > best[0]:
                    trust_low = value  # a stretch of more trusted depth starts
                best = (trust_depth, depth)
                low = value
        else:
            if trust_depth == best[0]:
                trust_high = value  # the last stretch of the best trusted depth ends here
                if depth == best[1]:
                    high = value
            depth -= 1
            trust_depth -= is_trusted
    if 2 * best[0] <= n_trusted:
        return None, ()  # no majority of the trust sources agrees

    def inside(c: Contender, lo: int, hi: int) -> bool:
        return lo <= c.offset_ns - c.root_distance_ns and c.offset_ns + c.root_distance_ns <= hi

    def holds(c: Contender) -> bool:
        return c.offset_ns - c.root_distance_ns <= low and high <= c.offset_ns + c.root_distance_ns

    agree: list[str] = []
    untrusted: list[str] = []
    outside: list[str] = []
    for c in contenders:
        if not (holds(c) or inside(c, low, high)):
            outside.append(c.name)
        elif c.name not in trusted and not inside(c, trust_low, trust_high):
            untrusted.append(c.name)
        else:
            agree.append(c.name)
    chosen = Intersection(
        low_ns=low,
        high_ns=high,
        faults=len(outside),
        truechimers=tuple(agree),
        falsetickers=tuple(outside),
    )
    return chosen, tuple(untrusted)


def _scan(edges: list[tuple[int, int]], need: int) -> tuple[int | None, int]:
    """Walk up the edges until ``need`` intervals overlap: (that edge, midpoints passed)."""
    chime = 0
    passed = 0
    for value, kind in edges:
        chime -= kind
        if chime >= need:
            return value, passed
        if kind == 0:
            passed += 1
    return None, passed


# ---------------------------------------------------------------- clustering


def selection_jitter_ns(c: Contender, others: Sequence[Contender]) -> int:
    """RFC 5905 §11.2.2 ψ_s: RMS distance of ``c``'s offset from the other survivors'."""
    rest = [o for o in others if o is not c]
    if not rest:
        return 0
    sq = sum((c.offset_ns - o.offset_ns) ** 2 for o in rest)
    return math.isqrt(sq // len(rest))


def cluster(
    truechimers: Sequence[Contender], *, nmin: int = NMIN, immune: frozenset[str] = frozenset()
) -> Clustering:
    """RFC 5905 §11.2.2: prune outliers until the survivors agree within their own jitter.

    Each round drops the survivor with the largest selection jitter (the worse merit on a tie),
    and stops when that jitter is below the smallest peer jitter or only ``nmin`` are left, or
    (as ntpd: "stop if we are about to discard a TRUE or PREFER peer, who of course have the
    immunity idol") when that survivor is ``immune``: the prefer sources and the current system
    peer.  With sources that agree to within a microsecond (a LAN) the smallest peer jitter is
    tiny, so the RFC rule prunes on noise alone, and the system peer used to be dropped and
    re-picked every few seconds (each time a new reference ID served); chronyd keeps its peer
    there (its reselectdist hysteresis).
    """
    if not truechimers:
        raise ValueError("cluster() needs at least one truechimer")
    survivors = sorted(truechimers, key=lambda c: (merit(c), c.name))
    outliers: list[str] = []
    while True:
        jitters = [selection_jitter_ns(c, survivors) for c in survivors]
        psi_max = max(jitters)
        psi_min = min(c.jitter_ns for c in survivors)
        if psi_max < psi_min or len(survivors) <= nmin:
            break
        worst = max(range(len(survivors)), key=lambda i: (jitters[i], i))
        if survivors[worst].name in immune:
            break
        outliers.append(survivors.pop(worst).name)
    return Clustering(
        survivors=tuple(survivors), outliers=tuple(outliers), selection_jitter_ns=psi_max
    )


def pick_system_peer(survivors: Sequence[Contender], current: str | None) -> Contender:
    """The first survivor, or the current system peer if it survived at the same stratum."""
    if not survivors:
        raise ValueError("pick_system_peer() needs at least one survivor")
    first = survivors[0]
    for c in survivors:
        if c.name == current and c.stratum == first.stratum:
            return c
    return first


# ---------------------------------------------------------------- combining


def combine(
    survivors: Sequence[Contender], peer: Contender, *, selection_jitter_ns: int
) -> Combination:
    """RFC 5905 §11.2.3: the 1/Λ-weighted offset and the system jitter.

    Ψ_p is taken about the system peer's offset (the RFC uses the first survivor's, which is
    the system peer unless clock-hop prevention kept another).
    """
    if not survivors:
        raise ValueError("combine() needs at least one survivor")
    # Imported at the first combine: fractions brings decimal, about 0.5 MB that a daemon
    # serving only its local clock (no sources) would carry, in every server worker too.
    from fractions import Fraction

    inverse = {c.name: Fraction(1, c.root_distance_ns) for c in survivors}
    total = sum(inverse.values(), Fraction(0))
    weights = {name: w / total for name, w in inverse.items()}
    theta = sum((weights[c.name] * c.offset_ns for c in survivors), Fraction(0))
    spread = sum(
        (weights[c.name] * (c.offset_ns - peer.offset_ns) ** 2 for c in survivors), Fraction(0)
    )
    psi_p = math.isqrt(round(spread))
    return Combination(
        offset_ns=round(theta),
        peer_jitter_ns=psi_p,
        system_jitter_ns=math.isqrt(selection_jitter_ns**2 + psi_p**2),
        weights=weights,
    )
