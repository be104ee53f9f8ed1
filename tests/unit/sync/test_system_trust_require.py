"""chrony's trust and require source options in SystemProcess.choose (and intersect_trusting)."""

from __future__ import annotations

from test_system import NOW, cand, est

from tsyncd.sync.select import Contender, intersect_trusting
from tsyncd.sync.system import Candidate, SystemProcess

MS = 1_000_000


def letters(sources: list[Candidate], min_sources: int = 1) -> tuple[bool, dict[str, str]]:
    d = SystemProcess(local_stratum=None, min_sources=min_sources).choose(sources, NOW)
    return d.synchronized, {n: row.code for n, row in d.selection.items()}


def test_a_trusted_source_is_not_outvoted_by_untrusted_ones() -> None:
    # Two sources agree at 0 ms; a third is 200 ms away: the majority wins ...
    lone, a, b = est(200, root_disp_ms=10), est(0, root_disp_ms=10), est(1, root_disp_ms=10)
    synced, got = letters([cand("t", lone), cand("a", a), cand("b", b)])
    assert synced and got["t"] == "x"
    # ... unless the lone one is trusted: then the two are the ones that do not agree.
    synced, got = letters([cand("t", lone, trust=True), cand("a", a), cand("b", b)])
    assert synced and got == {"t": "*", "a": "T", "b": "T"}


def test_untrusted_sources_that_fully_agree_are_combined() -> None:
    wide = est(3, root_disp_ms=40)  # its interval holds the trusted one's whole interval
    narrow = est(30, root_disp_ms=5)  # overlaps it, but not fully
    synced, got = letters(
        [cand("t", est(0, root_disp_ms=10), trust=True), cand("w", wide), cand("n", narrow)]
    )
    assert synced and got["t"] == "*" and got["w"] == "+" and got["n"] == "T"


def test_trusted_sources_still_outvote_each_other() -> None:
    trusted = [
        cand(n, est(o, root_disp_ms=5), trust=True) for n, o in (("p", 0), ("q", 1), ("r", 90))
    ]
    synced, got = letters(trusted)
    assert synced and got["r"] == "x"
    d = SystemProcess(local_stratum=None, min_sources=1).choose(trusted[1:], NOW)  # one to one
    assert not d.synchronized and d.reason == "no majority agreement among 2 trust sources"


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
