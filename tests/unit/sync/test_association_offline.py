"""Sources offline and online (tsyncctl offline/online, chronyc's): the sync core on virtual
time polls nothing offline, ages no reach, and polls again soon once online."""

from __future__ import annotations

import itertools
import random

from tsyncd.sync.association import poll_interval_ns
from tsyncd.sync.core import SyncCore

S = 1_000_000_000
T0 = 1_800_000_000 * S


def core_with(*names: str, iburst: bool = False) -> SyncCore:
    core = SyncCore(
        local_stratum=None, min_sources=1, precision_log2=-20, discipline=None, now_ns=T0
    )
    for name in names:
        core.add_source(
            name,
            reference_id=1,
            min_poll=4,
            max_poll=8,
            iburst=iburst,
            rng=random.Random(1),
            now_ns=T0,
        )
    return core


def run(core: SyncCore, until_ns: int, start_ns: int = T0) -> list[tuple[int, str]]:
    """Call the core's timer at each deadline up to ``until_ns``: (time, source) per request."""
    sent: list[tuple[int, str]] = []
    now = start_ns
    while True:
        deadline = core.next_deadline_ns()
        if deadline is None or deadline > until_ns:
            return sent
        now = max(now, deadline)
        requests, _ = core.handle_timer(now)
        sent += [(now, name) for name, _data in requests]


def test_offline_source_sends_nothing_and_keeps_its_reach() -> None:
    core = core_with("a", "b")
    sent = run(core, T0 + 100 * S)
    assert {name for _, name in sent} == {"a", "b"}
    reach_before = core.sources["b"].association.reach
    assert core.set_online("b", False, T0 + 100 * S) is True
    assert core.set_online("b", False, T0 + 100 * S) is False  # already offline
    later = run(core, T0 + 1000 * S, T0 + 100 * S)
    assert later and {name for _, name in later} == {"a"}
    assert core.sources["b"].association.reach == reach_before  # not aged into unreachable
    assert core.sources["b"].association.stats.packets_sent == sum(n == "b" for _, n in sent)


def test_back_online_polls_within_a_moment_from_min_poll_with_iburst() -> None:
    core = core_with("a", iburst=True)
    run(core, T0 + 3600 * S)
    a = core.sources["a"].association
    assert a.poll == 8  # never answered: it backed off to max-poll
    core.set_online("a", False, T0 + 3600 * S)
    assert core.next_deadline_ns() is None  # nothing at all to do
    back = T0 + 7200 * S
    assert core.set_online("a", True, back) is True
    assert a.poll == 4
    sent = [t for t, _ in run(core, back + 10 * S, back)]
    assert back <= sent[0] <= back + poll_interval_ns(-4)
    assert [b - a for a, b in itertools.pairwise(sent[:4])] == [2 * S] * 3  # iburst: 2 s apart


def test_burst_while_offline_sends_four_then_is_offline_again() -> None:
    core = core_with("a")
    a = core.sources["a"].association
    core.set_online("a", False, T0)
    assert not a.polling and not a.bursting
    core.burst(T0 + S)
    assert a.polling and a.bursting and not a.online
    sent = run(core, T0 + 3600 * S, T0 + S)
    assert len(sent) == 4 and sent[-1][0] - sent[0][0] == 6 * S
    assert not a.polling and not a.online and core.next_deadline_ns() is None


def test_burst_of_named_sources_only() -> None:
    """tsyncctl burst SOURCE...: the others keep their polls."""
    core = core_with("a", "b")
    core.burst(T0 + S, ["b"])
    assert core.sources["b"].association.bursting
    assert not core.sources["a"].association.bursting
    core.burst(T0 + S)
    assert all(state.association.bursting for state in core.sources.values())


def test_a_deny_stopped_source_stays_down_offline_and_polls_again_online() -> None:
    """QA s19 hunt-client F4: offline and online said "already" for the same source; now
    offline marks it offline (still stopped) and online polls it again, as chronyd, which
    never stops polling a server that kissed DENY, would."""
    core = core_with("a")
    a = core.sources["a"].association
    a._handle_kod("DENY", a._new_request(T0))  # as a matched KoD DENY does
    assert core.set_online("a", False, T0) is True
    assert core.next_deadline_ns() is None
    assert core.set_online("a", True, T0) is True
    deadline = core.next_deadline_ns()
    assert deadline is not None and deadline - T0 <= S
