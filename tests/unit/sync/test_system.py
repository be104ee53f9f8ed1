"""SystemProcess.choose: accept(), selection states and reasons, system variables."""

from __future__ import annotations

from tsyncd.sync.filter import ClockFilter, FilterOutput
from tsyncd.sync.sample import MINDISP_NS, Sample
from tsyncd.sync.system import (
    LOCAL_REFID,
    Candidate,
    SystemProcess,
    _exceeds,
    max_distance_ns,
    root_distance_ns,
)

S = 1_000_000_000
MS = 1_000_000
US = 1_000
NOW = 1_800_000_000 * S


def est(
    offset_ms: float,
    *,
    delay_ms: float = 2,
    disp_ms: float = 1,
    jitter_ms: float = 1,
    root_delay_ms: float = 0,
    root_disp_ms: float = 0,
    stratum: int = 2,
    leap: int = 0,
    refid: int = 0x47505300,
    aged_to_ns: int | None = NOW,
    rx_ns: int = NOW - S,
) -> FilterOutput:
    return FilterOutput(
        sample=Sample(
            offset_ns=round(offset_ms * MS),
            delay_ns=round(delay_ms * MS),
            dispersion_ns=100 * US,
            root_delay_ns=round(root_delay_ms * MS),
            root_dispersion_ns=round(root_disp_ms * MS),
            stratum=stratum,
            leap=leap,
            reference_id=refid,
            local_rx_ns=rx_ns,
        ),
        jitter_ns=round(jitter_ms * MS),
        dispersion_ns=round(disp_ms * MS),
        new=True,
        aged_to_ns=aged_to_ns,
    )


def cand(
    name: str,
    estimate: FilterOutput | None,
    *,
    reach: int = 0xFF,
    polled: bool = True,
    usable: bool = True,
    reason: str | None = None,
    refid: int | None = None,
    poll_log2: int | None = None,
    noselect: bool = False,
    prefer: bool = False,
    trust: bool = False,
    require: bool = False,
    unsynchronized: bool = False,
    synchronized_to_us: int | None = None,
    drops: tuple[tuple[str, int], ...] = (),
) -> Candidate:
    return Candidate(
        name=name,
        reference_id=refid if refid is not None else 0x0A000000 + ord(name[0]),
        reach=reach,
        polled=polled,
        usable=usable,
        unusable_reason=reason,
        estimate=estimate,
        poll_log2=poll_log2,
        noselect=noselect,
        unsynchronized=unsynchronized,
        synchronized_to_us=synchronized_to_us,
        drops=drops,
        prefer=prefer,
        trust=trust,
        require=require,
    )


def test_no_sources() -> None:
    d = SystemProcess(local_stratum=None, min_sources=1).choose([], NOW)
    assert not d.synchronized and d.reason == "no sources configured"
    assert (d.stratum, d.leap, d.reference_id, d.selected) == (16, 3, 0, None)


def test_local_stratum_when_unsynchronized() -> None:
    d = SystemProcess(local_stratum=7, min_sources=1).choose([cand("a", None, polled=False)], NOW)
    assert not d.synchronized
    assert d.reason == (
        "waiting for the first replies from sources; serving the local clock at stratum 7"
    )
    assert (d.stratum, d.leap, d.reference_id) == (7, 0, LOCAL_REFID)
    assert d.states == {"a": "init"} and d.reasons == {"a": "waiting for the first reply"}


def test_unfit_sources_get_states_and_reasons() -> None:
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [
            cand("gone", est(0), usable=False, reason="server sent kiss-o'-death DENY"),
            cand("quiet", None, reach=0),
            cand("lost", est(0), reach=0),
            cand("sixteen", est(0, stratum=16)),
            cand("alarm", est(0, leap=3)),
            cand("far", est(0, delay_ms=10, root_disp_ms=1200, disp_ms=90, jitter_ms=5)),
            cand("says", None, unsynchronized=True),
            cand("lapsed", est(0), unsynchronized=True),
        ],
        NOW,
    )
    assert not d.synchronized and d.reason == "no source is reachable and usable"
    # A server whose last reply says it is unsynchronized is out at once, samples or not,
    # as chronyd's "s".
    assert d.selection["says"].code == d.selection["lapsed"].code == "s"
    assert d.states == {
        "gone": "unusable",
        "quiet": "unreachable",
        "lost": "unreachable",
        "sixteen": "unusable",
        "alarm": "unusable",
        "far": "unusable",
        "says": "unusable",
        "lapsed": "unusable",
    }
    assert d.reasons == {
        "gone": "server sent kiss-o'-death DENY",
        "quiet": "no valid reply yet",
        "lost": "no valid reply to the last 8 polls",
        "sixteen": "source is unsynchronized (stratum 16)",
        "alarm": "source is unsynchronized (leap alarm)",
        "far": "distance 1.3 s exceeds 1 s",
        "says": "source is unsynchronized (its last reply says so)",
        "lapsed": "source is unsynchronized (its last reply says so)",
    }


def test_root_distance_and_the_poll_allowance() -> None:
    e = est(0, delay_ms=4, root_delay_ms=8, root_disp_ms=3, disp_ms=2, jitter_ms=1)
    assert root_distance_ns(e, NOW) == (6 + 3 + 2 + 1) * MS
    # The dispersion ages at PHI from when the filter computed it (or the sample's rx).
    assert root_distance_ns(e, NOW + 10 * S) == 12 * MS + 150 * US
    unaged = est(0, delay_ms=4, root_delay_ms=8, root_disp_ms=3, aged_to_ns=None)
    assert root_distance_ns(unaged, NOW) == 11 * MS + 15 * US  # rx was 1 s before NOW
    # A small delay still counts MINDISP/2.
    assert root_distance_ns(est(0, delay_ms=1, disp_ms=0, jitter_ms=0), NOW) == MINDISP_NS // 2
    assert max_distance_ns(None) == S
    assert max_distance_ns(6) == S + 64 * 15 * US
    assert max_distance_ns(-2) == S + 3_750
    # Over MAXDIST but within what PHI adds over one 64 s poll: accepted.
    just = est(0, delay_ms=10, root_disp_ms=990, disp_ms=5, jitter_ms=0.5)
    assert root_distance_ns(just, NOW) == S + 500 * US
    system = SystemProcess(local_stratum=None, min_sources=1)
    assert system.choose([cand("a", just, poll_log2=6)], NOW).selected == "a"
    assert system.choose([cand("a", just)], NOW).states == {"a": "unusable"}


def test_one_source_system_variables() -> None:
    e = est(0.5, delay_ms=2, root_delay_ms=1, root_disp_ms=3, disp_ms=4, jitter_ms=6, stratum=3)
    d = SystemProcess(local_stratum=None, min_sources=1).choose([cand("a", e, refid=42)], NOW)
    assert d.synchronized and d.reason is None and d.selected == "a"
    assert d.states == {"a": "selected"} and d.reasons == {} and d.survivors == ("a",)
    assert d.offset_ns == d.combined_offset_ns == 500 * US
    assert d.jitter_ns == d.system_jitter_ns == 0  # one survivor: no spread
    assert (d.stratum, d.reference_id, d.leap) == (4, 42, 0)
    assert d.reference_time_ns == NOW - S
    assert d.root_delay_ns == 3 * MS
    # root dispersion 3 + (dispersion 4 + |offset| 0.5 + sqrt(6² + 0²)) ms
    assert d.root_dispersion_ns == 13_500 * US


def test_root_dispersion_increment_is_at_least_mindisp() -> None:
    e = est(0, root_disp_ms=3, disp_ms=1, jitter_ms=1, aged_to_ns=NOW - 10 * S)
    d = SystemProcess(local_stratum=None, min_sources=1).choose([cand("a", e)], NOW)
    assert d.root_dispersion_ns == 3 * MS + MINDISP_NS
    e = est(0, root_disp_ms=3, disp_ms=4, jitter_ms=1, aged_to_ns=NOW - 10 * S)
    d = SystemProcess(local_stratum=None, min_sources=1).choose([cand("a", e)], NOW)
    assert d.root_dispersion_ns == 3 * MS + 5 * MS + 150 * US  # aged 10 s at PHI


def test_falseticker_is_excluded_and_the_rest_combined() -> None:
    # Root distances: 2.5 (MINDISP/2) + 1 (disp) + 1 (jitter) + root dispersion.
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [
            cand("a", est(0, root_disp_ms=5.5)),  # Λ 10 ms
            cand("b", est(8, root_disp_ms=25.5)),  # Λ 30 ms
            cand("c", est(-10, root_disp_ms=45.5)),  # Λ 50 ms
            cand("d", est(500, root_disp_ms=5.5)),  # far away
        ],
        NOW,
    )
    assert d.synchronized and d.selected == "a"
    assert d.states == {"a": "selected", "b": "candidate", "c": "candidate", "d": "falseticker"}
    assert d.reasons["d"] == "outside the majority interval"
    assert d.survivors == ("a", "b", "c")
    # Weights 1/10 : 1/30 : 1/50 = 15/23 : 5/23 : 3/23; Θ = (5·8 − 3·10)/23 ms.
    assert d.offset_ns == d.combined_offset_ns == 434_783
    assert d.reasons["b"] == "combined with weight 22%"
    assert d.reasons["c"] == "combined with weight 13%"


def test_two_against_two_is_no_majority() -> None:
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [cand("a", est(0)), cand("b", est(1)), cand("c", est(100)), cand("d", est(101))], NOW
    )
    assert not d.synchronized and d.reason == "no majority agreement among 4 sources"
    assert set(d.states.values()) == {"falseticker"}
    assert d.reasons["a"] == "no majority agreement among 4 sources"
    assert (d.stratum, d.leap, d.offset_ns) == (16, 3, 0)


def test_min_sources_counts_truechimers() -> None:
    system = SystemProcess(local_stratum=None, min_sources=2)
    d = system.choose([cand("a", est(0)), cand("b", None, polled=False)], NOW)
    assert not d.synchronized and d.reason == "1 source(s) agree, min-sources is 2"
    assert d.states == {"a": "candidate", "b": "init"}
    d = system.choose([cand("a", est(0)), cand("b", est(1))], NOW)
    assert d.synchronized and d.survivors == ("a", "b")


def test_clustering_outliers() -> None:
    offsets = {"a": 0, "b": 1, "c": -1, "d": 20, "e": -50}
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [cand(n, est(o, root_disp_ms=100 + i)) for i, (n, o) in enumerate(offsets.items())], NOW
    )
    assert d.states == {
        "a": "selected",
        "b": "candidate",
        "c": "candidate",
        "d": "outlier",
        "e": "outlier",
    }
    assert d.reasons["e"] == "dropped by clustering: too far from the other sources"
    # b's selection jitter sqrt(2.5) ms is Ψ_s; Ψ_p = sqrt(Σ w (θ − 0)²) over a, b, c.
    assert d.system_jitter_ns > 1_581 * US


def test_anti_clockhop() -> None:
    system = SystemProcess(local_stratum=None, min_sources=1)
    a, b = est(0, root_disp_ms=10), est(0.1, root_disp_ms=20)
    assert system.choose([cand("a", a), cand("b", b)], NOW).selected == "a"
    # b is now better at the same stratum: a stays.
    a = est(0, root_disp_ms=30)
    d = system.choose([cand("a", a), cand("b", b)], NOW)
    assert d.selected == "a" and d.survivors == ("b", "a")
    assert d.states == {"a": "selected", "b": "candidate"}
    # b at a better stratum: hop.
    b = est(0.1, root_disp_ms=20, stratum=1)
    assert system.choose([cand("a", a), cand("b", b)], NOW).selected == "b"
    # A fresh process would have picked b by merit all along.
    fresh = SystemProcess(local_stratum=None, min_sources=1)
    assert fresh.choose([cand("a", a), cand("b", est(0.1, root_disp_ms=20))], NOW).selected == "b"


def test_a_source_synchronized_to_our_reference_is_a_loop() -> None:
    system = SystemProcess(local_stratum=None, min_sources=1)
    peer = cand("p", est(0, stratum=2), refid=0x0A000001)
    downstream = cand("q", est(0, stratum=3, refid=0x0A000001))  # synchronized to p, like us
    sibling = cand("r", est(0, stratum=2, refid=0x0A000001))  # same refid, closer than us
    d = system.choose([peer, downstream, sibling], NOW)
    assert d.selected == "p" and d.stratum == 3 and d.states["q"] == "candidate"
    d = system.choose([peer, downstream, sibling], NOW)
    assert d.states == {"p": "selected", "q": "unusable", "r": "candidate"}
    assert d.reasons["q"] == (
        "synchronization loop: synchronized to our reference 10.0.0.1 at stratum 3"
    )


def test_a_source_synchronized_to_us_is_out_whatever_its_samples() -> None:
    """Its last reply named our address as its reference (the association's loop test): out
    at once, as chronyd's test D keeps such a source out (QA s16 hunt-sync F2)."""
    d = SystemProcess(local_stratum=5, min_sources=1).choose(
        [cand("b", est(0, stratum=6), synchronized_to_us=0x7F000001)], NOW
    )
    assert not d.synchronized and d.stratum == 5
    assert d.states == {"b": "unusable"} and d.selection["b"].code == "s"
    assert d.reasons["b"] == (
        "synchronization loop: synchronized to us (its reference ID 127.0.0.1 is ours)"
    )


def test_a_local_clock_no_better_than_ours_is_not_followed() -> None:
    """With a local stratum, another server's local clock at the same or a higher stratum is
    no better than ours: two such servers polling each other settle on the lower one."""
    local = 0x7F7F0101
    system = SystemProcess(local_stratum=5, min_sources=1)
    d = system.choose([cand("b", est(0, stratum=7, refid=local))], NOW)
    assert not d.synchronized and d.stratum == 5 and d.selection["b"].code == "s"
    assert d.reasons["b"] == "serves its local clock at stratum 7, not below ours (5)"
    assert not system.choose([cand("b", est(0, stratum=5, refid=local))], NOW).synchronized
    # A lower local clock is followed, and so is any source without a local stratum of ours.
    assert system.choose([cand("a", est(0, stratum=3, refid=local))], NOW).stratum == 4
    plain = SystemProcess(local_stratum=None, min_sources=1)
    assert plain.choose([cand("b", est(0, stratum=7, refid=local))], NOW).stratum == 8


def test_no_valid_reply_says_what_became_of_the_replies() -> None:
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [
            cand("keyed", None, reach=0, drops=(("bad_mac", 15),)),
            cand("mixed", None, reach=0, drops=(("bogus", 3), ("bad_mac", 12))),
            cand("lost", est(0), reach=0, drops=(("wrong_address", 8),)),
        ],
        NOW,
    )
    assert d.reasons == {
        "keyed": "no valid reply yet: 15 dropped, bad_mac",
        "mixed": "no valid reply yet: 15 dropped, 12 bad_mac, 3 bogus",
        "lost": "no valid reply to the last 8 polls: 8 dropped, wrong_address",
    }


def test_with_real_filters() -> None:
    filters = {n: ClockFilter(precision_ns=US) for n in "abc"}
    for i in range(4):
        for k, f in enumerate(filters.values()):
            f.add(
                Sample(
                    offset_ns=(k + 1) * 100 * US + i * 10 * US,
                    delay_ns=(10 - i) * MS,
                    dispersion_ns=50 * US,
                    root_delay_ns=MS,
                    root_dispersion_ns=MS,
                    stratum=1,
                    leap=0,
                    reference_id=0x47505300,
                    local_rx_ns=NOW - (4 - i) * S,
                )
            )
    d = SystemProcess(local_stratum=None, min_sources=3).choose(
        [cand(n, f.output(NOW)) for n, f in filters.items()], NOW
    )
    assert d.synchronized and d.stratum == 2 and len(d.survivors) == 3
    assert 130 * US <= d.offset_ns <= 330 * US


def test_noselect_is_measured_but_never_selected_nor_a_vote() -> None:
    system = SystemProcess(local_stratum=None, min_sources=1)
    d = system.choose([cand("a", est(0), noselect=True)], NOW)
    assert not d.synchronized and d.states == {"a": "noselect"}
    assert d.reasons["a"] == "configured with noselect: measured, never selected"
    # a does not vote: b and c disagree with no majority (a and b would outvote c).
    d = system.choose(
        [cand("a", est(0), noselect=True), cand("b", est(1)), cand("c", est(300))], NOW
    )
    assert d.states["a"] == "noselect" and not d.synchronized  # b and c: no majority
    d = system.choose([cand("a", est(300), noselect=True), cand("b", est(1))], NOW)
    assert d.selected == "b" and d.states == {"a": "noselect", "b": "selected"}


def test_prefer_source_alone_is_combined_when_it_survives() -> None:
    sources = [
        cand("a", est(0, root_disp_ms=5.5)),  # the best root distance
        cand("b", est(2, root_disp_ms=25.5), prefer=True),
        cand("c", est(-1, root_disp_ms=45.5)),
    ]
    d = SystemProcess(local_stratum=None, min_sources=1).choose(sources, NOW)
    assert d.selected == "b" and d.survivors == ("b",) and d.offset_ns == 2 * MS
    assert d.states == {"a": "outlier", "b": "selected", "c": "outlier"}
    assert d.reasons["a"] == "not combined: a prefer source survives"


def test_a_prefer_falseticker_is_still_outvoted() -> None:
    sources = [
        cand("a", est(0)),
        cand("b", est(1)),
        cand("p", est(500), prefer=True),  # far from the majority
    ]
    d = SystemProcess(local_stratum=None, min_sources=1).choose(sources, NOW)
    assert d.states["p"] == "falseticker" and d.selected in ("a", "b")
    assert set(d.survivors) == {"a", "b"}


def test_max_distance_is_configurable() -> None:
    far = cand("far", est(0, delay_ms=10, root_disp_ms=1200, disp_ms=90, jitter_ms=5))
    d = SystemProcess(local_stratum=None, min_sources=1).choose([far], NOW)
    assert d.states == {"far": "unusable"} and d.reasons["far"] == "distance 1.3 s exceeds 1 s"
    wide = SystemProcess(local_stratum=None, min_sources=1, max_distance_ns=3 * S)  # chrony's
    assert wide.choose([far], NOW).selected == "far"


def test_clustering_never_drops_the_system_peer_or_a_prefer_source() -> None:
    """QA s17 hunt-churn: four sources agreeing within a microsecond, with peer jitters below
    that, made the RFC's clustering prune on noise, and the system peer (a prefer source too)
    was dropped and re-picked every few seconds.  As ntpd ("stop if we are about to discard a
    TRUE or PREFER peer"), the prefer sources and the current system peer are immune."""
    system = SystemProcess(local_stratum=None, min_sources=1)
    jitter = 0.0003  # 0.3 µs
    first = {"a": 0.0, "b": 0.0004, "c": -0.0004, "d": 0.0002}
    d = system.choose(
        [cand(n, est(o, jitter_ms=jitter, root_disp_ms=10)) for n, o in first.items()], NOW
    )
    peer = d.selected
    assert peer is not None
    # The noise moves: the system peer now has the largest selection jitter of the four.
    moved = {n: (0.002 if n == peer else o) for n, o in first.items()}
    d = system.choose(
        [cand(n, est(o, jitter_ms=jitter, root_disp_ms=10)) for n, o in moved.items()], NOW
    )
    assert d.selected == peer and d.states[peer] == "selected"
    # A prefer source is immune too, even to a fresh process with no system peer yet.
    fresh = SystemProcess(local_stratum=None, min_sources=1)
    d = fresh.choose(
        [
            cand(n, est(o, jitter_ms=jitter, root_disp_ms=10), prefer=(n == "b"))
            for n, o in {"a": 0.0, "b": 0.002, "c": -0.0001, "d": 0.0001}.items()
        ],
        NOW,
    )
    assert d.selected == "b" and d.selection["b"].code == "*"


def test_a_distance_just_over_the_limit_reads_larger_than_it() -> None:
    """QA s19: "distance 1 s exceeds 1 s" while a broadcast source warmed up (3 digits)."""
    assert _exceeds(1_000_400_000, 1_000_000_000) == "1.0004 s exceeds 1 s"
    assert _exceeds(1_300_000_000, 1_000_000_000) == "1.3 s exceeds 1 s"
