"""SystemDecision.selection (chronyc selectdata's rows) and forget_system_peer (reselect)."""

from __future__ import annotations

from test_system import MS, NOW, S, cand, est

from tsyncd.sync.system import Candidate, SelectData, SystemProcess, root_distance_ns


def codes(process: SystemProcess, sources: list[Candidate]) -> dict[str, str]:
    return {n: row.code for n, row in process.choose(sources, NOW).selection.items()}


def test_every_state_gets_chronyc_selectdata_letter() -> None:
    unfit = [
        cand("gone", est(0), usable=False, reason="server sent kiss-o'-death DENY"),
        cand("new", None, polled=False),
        cand("quiet", None, reach=0),
        cand("lost", est(0), reach=0),
        cand("sixteen", est(0, stratum=16)),
        cand("alarm", est(0, leap=3)),
        cand("far", est(0, delay_ms=10, root_disp_ms=1200, disp_ms=90, jitter_ms=5)),
        cand("watched", est(0), noselect=True),
    ]
    assert codes(SystemProcess(local_stratum=None, min_sources=1), unfit) == {
        "gone": "?",
        "new": "M",
        "quiet": "M",
        "lost": "S",
        "sixteen": "s",
        "alarm": "s",
        "far": "d",
        "watched": "N",
    }
    clustered = {"a": 0, "b": 1, "c": -1, "d": 20, "e": -50}
    sources = [cand(n, est(o, root_disp_ms=100 + i)) for i, (n, o) in enumerate(clustered.items())]
    got = codes(SystemProcess(local_stratum=None, min_sources=1), sources)
    assert got == {"a": "*", "b": "+", "c": "+", "d": "D", "e": "D"}
    voted = [cand("a", est(0)), cand("b", est(1)), cand("p", est(500), prefer=True)]
    got = codes(SystemProcess(local_stratum=None, min_sources=1), voted)
    assert got["p"] == "x" and sorted(got.values()) == ["*", "+", "x"]
    preferred = [
        cand("a", est(0, root_disp_ms=5.5)),
        cand("b", est(2, root_disp_ms=25.5), prefer=True),
    ]
    assert codes(SystemProcess(local_stratum=None, min_sources=1), preferred) == {
        "a": "P",
        "b": "*",
    }
    too_few = [cand("a", est(0)), cand("b", None, polled=False)]
    assert codes(SystemProcess(local_stratum=None, min_sources=2), too_few) == {"a": "W", "b": "M"}
    split = [cand("a", est(0)), cand("b", est(300))]  # two against each other: no majority
    assert codes(SystemProcess(local_stratum=None, min_sources=1), split) == {"a": "x", "b": "x"}


def test_a_loop_through_us_is_unsynchronized() -> None:
    system = SystemProcess(local_stratum=None, min_sources=1)
    peer = cand("p", est(0, stratum=2), refid=0x0A000001)
    downstream = cand("q", est(0, stratum=3, refid=0x0A000001))
    system.choose([peer, downstream], NOW)
    assert codes(system, [peer, downstream]) == {"p": "*", "q": "s"}


def test_interval_is_the_offset_give_or_take_the_root_distance_at_the_selection() -> None:
    e = est(
        3, delay_ms=4, root_delay_ms=8, root_disp_ms=3, disp_ms=2, jitter_ms=1, rx_ns=NOW - 5 * S
    )
    d = SystemProcess(local_stratum=None, min_sources=1).choose(
        [cand("a", e), cand("b", None, polled=False)], NOW
    )
    dist = root_distance_ns(e, NOW)
    assert dist == 12 * MS
    assert d.selection["a"] == SelectData(code="*", interval_ns=(-9 * MS, 15 * MS), age_ns=5 * S)
    assert d.selection["b"] == SelectData(code="M")  # nothing measured: no interval, no age


def test_forget_system_peer_lets_the_best_survivor_win_at_once() -> None:
    system = SystemProcess(local_stratum=None, min_sources=1)
    a, b = est(0, root_disp_ms=10), est(0.1, root_disp_ms=20)
    assert system.choose([cand("a", a), cand("b", b)], NOW).selected == "a"
    a = est(0, root_disp_ms=30)  # b is now the better one, at the same stratum
    assert system.choose([cand("a", a), cand("b", b)], NOW).selected == "a"  # anti-clockhop
    system.forget_system_peer()
    d = system.choose([cand("a", a), cand("b", b)], NOW)
    assert d.selected == "b" and d.selection["b"].code == "*" and d.selection["a"].code == "+"
    assert system.choose([cand("a", a), cand("b", b)], NOW).selected == "b"  # and stays
