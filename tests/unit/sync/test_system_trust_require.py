"""chrony's trust and require source options in SystemProcess.choose (and intersect_trusting).

The trust cases are chronyd 4.3's results, checked against a chronyd 4.3 client (-x) on
loopback: a wide trust source (a SOCK refclock server with a 20 ms delay) with narrow untrusted
servers inside it selects them ("*", "+"); a wide untrusted server beside a narrow trust one is
"T"; two trust sources that disagree leave "no majority" with three untrusted siding with one.
"""

from __future__ import annotations

from test_system import NOW, cand, est

from tsyncd.sync.select import Contender, intersect_trusting
from tsyncd.sync.system import Candidate, SystemProcess

MS = 1_000_000
US = 1_000


def letters(sources: list[Candidate], min_sources: int = 1) -> tuple[bool, dict[str, str]]:
    d = SystemProcess(local_stratum=None, min_sources=min_sources).choose(sources, NOW)
    return d.synchronized, {n: row.code for n, row in d.selection.items()}


def test_a_trusted_source_is_not_outvoted_by_untrusted_ones() -> None:
    # Two sources agree at 0 ms; a third is 200 ms away: the majority wins ...
    lone, a, b = est(200, root_disp_ms=10), est(0, root_disp_ms=10), est(1, root_disp_ms=10)
    synced, got = letters([cand("t", lone), cand("a", a), cand("b", b)])
    assert synced and got["t"] == "x"
    # ... unless the lone one is trusted: then the two are the ones that do not agree, outside
    # the interval the trust source picks, so falsetickers as chronyd marks them.
    synced, got = letters([cand("t", lone, trust=True), cand("a", a), cand("b", b)])
    assert synced and got == {"t": "*", "a": "x", "b": "x"}


def test_narrow_untrusted_sources_inside_a_trusted_one_are_combined() -> None:
    # The README's case: an authenticated internet source (30 ms away, 1 ms off) vouches for
    # two LAN servers, whose intervals (Λ 2.75 ms) lie inside its own (Λ 15.25 ms).
    fine = {"disp_ms": 0.1, "jitter_ms": 0.05, "root_disp_ms": 0.1}
    nts = est(1, delay_ms=30, **fine)
    lan1, lan2 = est(0, delay_ms=0.2, **fine), est(0.05, delay_ms=0.2, **fine)
    sources = [cand("nts", nts, trust=True), cand("lan1", lan1), cand("lan2", lan2)]
    d = SystemProcess(local_stratum=None, min_sources=1).choose(sources, NOW)
    assert d.synchronized and d.selected == "lan1"
    assert {n: row.code for n, row in d.selection.items()} == {
        "nts": "+",
        "lan1": "*",
        "lan2": "+",
    }
    # The LAN servers carry the offset (1/Λ weights): 0.106 ms, not the trusted source's 1 ms,
    # and just what the same three give without trust.
    assert abs(d.offset_ns - 106 * US) < US
    plain = [cand("nts", nts), cand("lan1", lan1), cand("lan2", lan2)]
    assert SystemProcess(local_stratum=None, min_sources=1).choose(plain, NOW).offset_ns == (
        d.offset_ns
    )


def test_an_untrusted_source_is_used_only_inside_the_trust_sources_interval() -> None:
    trusted = cand("t", est(0, root_disp_ms=10), trust=True)  # [-14.5, 14.5] ms
    inside = cand("i", est(2, root_disp_ms=1))  # [-3.5, 7.5]: inside, used
    wide = cand("w", est(3, root_disp_ms=40))  # [-41.5, 47.5]: agrees, but reaches outside
    beside = cand("n", est(30, root_disp_ms=5))  # [20.5, 39.5]: does not agree at all
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [trusted, inside, wide, beside], NOW
    )
    assert d.synchronized
    assert {n: row.code for n, row in d.selection.items()} == {
        "t": "+",
        "i": "*",
        "w": "T",
        "n": "x",
    }
    assert d.reasons["w"] == "does not fully agree with the trust sources (reaches outside them)"
    assert d.reasons["n"] == "outside the majority interval"


def test_trusted_sources_still_outvote_each_other() -> None:
    trusted = [
        cand(n, est(o, root_disp_ms=5), trust=True) for n, o in (("p", 0), ("q", 1), ("r", 90))
    ]
    synced, got = letters(trusted)
    assert synced and got["r"] == "x"
    d = SystemProcess(local_stratum=None, min_sources=1).choose(trusted[1:], NOW)  # one to one
    assert not d.synchronized and d.reason == "no majority agreement among 2 trust sources"
    # Only the trust sources vote on the majority: three untrusted sources siding with one of
    # them do not settle it (chronyd 4.3: "Can't synchronise: no majority", every source x).
    plain = [cand(n, est(o, root_disp_ms=5)) for n, o in (("u", 1.5), ("v", 0.5), ("w", 1))]
    synced, got = letters([*trusted[1:], *plain])
    assert not synced and set(got.values()) == {"x"}


def test_untrusted_sources_choose_between_equally_trusted_stretches() -> None:
    # A wide trust source covers two others that disagree: each stretch is covered by two of
    # the three, a majority either way.  The untrusted sources' depth picks a's side, b is the
    # falseticker, and the untrusted ones are used with a (u1, the smallest Λ, as the system
    # peer; w, far from the rest, is clustered out).
    trusted = [
        cand("w", est(50, root_disp_ms=60), trust=True),  # [-14.5, 114.5] ms
        cand("a", est(0, root_disp_ms=5), trust=True),  # [-9.5, 9.5]
        cand("b", est(100, root_disp_ms=5), trust=True),  # [90.5, 109.5]
    ]
    plain = [  # inside a's interval, so inside the trust sources'
        cand("u1", est(1, root_disp_ms=3)),  # [-6.5, 8.5]
        cand("u2", est(-1, root_disp_ms=3)),  # [-8.5, 6.5]
    ]
    synced, got = letters([*trusted, *plain])
    assert synced
    assert got == {"w": "D", "a": "+", "b": "x", "u1": "*", "u2": "+"}


def test_intersect_trusting_picks_by_trusted_depth_then_depth() -> None:
    def ct(name: str, offset_ms: int, distance_ms: int) -> Contender:
        return Contender(
            name=name,
            offset_ns=offset_ms * MS,
            root_distance_ns=distance_ms * MS,
            stratum=2,
            jitter_ns=0,
        )

    contenders = [
        ct("t", 0, 10),  # [-10, 10], trusted
        ct("l1", 1, 2),  # [-1, 3]
        ct("l2", 2, 2),  # [0, 4]
        ct("w", 5, 8),  # [-3, 13]: holds [0, 3], but reaches outside [-10, 10]
        ct("f", 30, 5),  # [25, 35]
    ]
    chosen, untrusted = intersect_trusting(contenders, frozenset({"t"}))
    assert chosen is not None
    assert (chosen.low_ns, chosen.high_ns) == (0, 3 * MS)  # covered by t, l1, l2 and w
    assert chosen.truechimers == ("t", "l1", "l2")
    assert chosen.falsetickers == ("f",) and chosen.faults == 1
    assert untrusted == ("w",)


def test_intersect_trusting_without_trust_is_the_rfc_intersection() -> None:
    contenders = [
        Contender(name=n, offset_ns=o * MS, root_distance_ns=10 * MS, stratum=2, jitter_ns=0)
        for n, o in (("a", 0), ("b", 1), ("c", 50))
    ]
    chosen, untrusted = intersect_trusting(contenders, frozenset())
    assert chosen is not None and chosen.falsetickers == ("c",) and untrusted == ()


def test_require_holds_the_clock_until_a_require_source_is_selectable() -> None:
    a, b = cand("a", est(0)), cand("b", est(1))
    # The require source has not answered yet: nobody is used.
    synced, got = letters([cand("r", None, reach=0, require=True), a, b])
    assert not synced and got == {"r": "M", "a": "W", "b": "W"}
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [cand("r", None, reach=0, require=True), a, b], NOW
    )
    assert d.reason == "no require source is selectable"
    assert d.reasons["a"] == "no require source is selectable (r)"
    # A require falseticker does not count either.
    synced, got = letters([cand("r", est(300), require=True), a, b])
    assert not synced and got["r"] == "x"
    # Selectable: the others are used with it.
    synced, got = letters([cand("r", est(0.5), require=True), a, b])
    assert synced and sorted(got.values()) == ["*", "+", "+"]
