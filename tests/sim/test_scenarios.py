"""Named scenarios against the real sync core and discipline, with two-sided limits.

Limits: chrony's own acceptance (max |offset| <= 1 ms, RMS <= 300 µs, RMS frequency error
<= 10 ppm after sync; test/simulation/test.common) everywhere, and where chronyd was measured
under the same conditions (issue 3: RMS 110 µs at default polling, about 10 µs at 2 s), we must
beat it.  Lower limits catch a simulator that stopped simulating (no jitter, no clock error).
Each test runs one fixed seed and prints it with the figures.
"""

from __future__ import annotations

from .engine import Scenario, Trace, simulate
from .metrics import Stats, intervals_s, stats
from .network import PathSpec
from .scenarios import (
    FAILOVER_DEATH_S,
    KOD_INTERVAL_S,
    chrony_2s,
    chrony_default,
    failover,
    falseticker,
    kod_rate,
    lan_first_sync,
    packet_loss,
)
from .servers import ServerSpec

US = 1e-6
CHRONY_MAX_OFFSET_S = 1e-3
CHRONY_RMS_OFFSET_S = 300e-6
CHRONY_RMS_FREQ_PPM = 10.0
CHRONY_MEASURED_DEFAULT_RMS_S = 110e-6
CHRONY_MEASURED_2S_RMS_S = 10e-6


def run(scenario: Scenario, seed: int) -> tuple[Trace, Stats]:
    trace = simulate(scenario, seed)
    st = stats(trace)
    print(
        f"{scenario.name} seed={seed}: sync {st.sync_time_s} s, first synchronized "
        f"{st.first_synchronized_s} s, RMS {st.rms_offset_s / US:.1f} µs, "
        f"max {st.max_offset_s / US:.1f} µs, RMS freq {st.rms_freq_ppm:.3f} ppm, "
        f"{st.requests} requests, selected {trace.selected}"
    )
    return trace, st


def assert_chrony_acceptance(st: Stats, *, max_sync_s: float) -> None:
    assert st.sync_time_s is not None and 1.0 <= st.sync_time_s <= max_sync_s, st
    assert 1 * US <= st.rms_offset_s <= CHRONY_RMS_OFFSET_S, st
    assert st.max_offset_s <= CHRONY_MAX_OFFSET_S, st
    assert 0.001 <= st.rms_freq_ppm <= CHRONY_RMS_FREQ_PPM, st


def test_chrony_default_beats_chronyd() -> None:
    trace, st = run(chrony_default(10_000), seed=1)
    assert_chrony_acceptance(st, max_sync_s=210)
    assert 2 * US <= st.rms_offset_s <= CHRONY_MEASURED_DEFAULT_RMS_S, st
    assert st.first_synchronized_s is not None and st.first_synchronized_s < 1.0
    # Polling stays within 64..1024 s on average: no hammering, no neglect.
    assert 64 * 0.9 <= st.mean_interval_s <= 1024, st
    assert not trace.panics and not trace.steps  # 0.1 s is slewed, as chrony's makestep says


def test_two_second_polling_beats_chronyd() -> None:
    _, st = run(chrony_2s(2_000), seed=1)
    assert_chrony_acceptance(st, max_sync_s=210)
    assert 0.3 * US <= st.rms_offset_s <= CHRONY_MEASURED_2S_RMS_S, st
    assert 1.8 <= st.mean_interval_s <= 2.2, st


def test_falseticker_is_voted_out() -> None:
    trace, st = run(falseticker(10_000), seed=1)
    assert_chrony_acceptance(st, max_sync_s=210)
    assert st.rms_offset_s <= CHRONY_MEASURED_DEFAULT_RMS_S, st
    # What was selected from 10 s on: the choice in force at 10 s, then every change.
    start = max(i for i, (t, _) in enumerate(trace.selected) if t <= 10.0)
    later = [name for _, name in trace.selected[start:]]
    assert "liar" not in later and later[-1] is not None, trace.selected


def test_failover_when_the_system_peer_dies() -> None:
    trace, st = run(failover(10_000), seed=2)
    before = [name for t, name in trace.selected if t < FAILOVER_DEATH_S]
    assert before[-1] == "dies", trace.selected  # the scenario's premise: it was followed
    switch = [t for t, name in trace.selected if name == "survives" and t >= FAILOVER_DEATH_S]
    # Two-sided: not before it died, and within eight polls of 64..128 s after.
    assert switch and FAILOVER_DEATH_S < switch[0] <= FAILOVER_DEATH_S + 1_100, trace.selected
    assert trace.selected[-1][1] == "survives"
    assert_chrony_acceptance(st, max_sync_s=210)


def test_kod_rate_makes_us_poll_less_without_hammering() -> None:
    trace, st = run(kod_rate(10_000), seed=1)
    kods = trace.kods["strict"]
    assert 1 <= kods <= 5, trace.kods
    arrivals = trace.requests["strict"]
    # Never more than the server allows: its bucket, one request per interval, and the kissed.
    assert len(arrivals) <= 4 + 10_000 / KOD_INTERVAL_S + kods, arrivals
    # Each RATE holds the next poll back 4 intervals (chronyd's), so the kisses and the
    # back-off are over well before 3000 s; then one poll per interval, no faster.
    after_kod = [t for t in arrivals if t > 3_000]
    assert min(intervals_s(after_kod)) >= 0.9 * KOD_INTERVAL_S, after_kod
    assert len(after_kod) >= (10_000 - 3_000) / 1_100, after_kod  # still polled
    assert max(poll for _, poll in trace.polls["strict"]) >= 8
    assert_chrony_acceptance(st, max_sync_s=1_000)


def test_twenty_percent_loss() -> None:
    trace, st = run(packet_loss(10_000), seed=1)
    arrived = len(trace.requests["ntp1"])
    assert 0.72 <= arrived / trace.sent["ntp1"] <= 0.88, (arrived, trace.sent)
    assert_chrony_acceptance(st, max_sync_s=1_000)


def test_lan_first_sync_within_a_second() -> None:
    _, st = run(lan_first_sync(60), seed=1)
    assert st.first_synchronized_s is not None and 0.0 < st.first_synchronized_s < 1.0, st
    assert st.sync_time_s is not None and st.sync_time_s <= 10, st
    assert st.max_offset_s <= 200 * US, st


def test_same_seed_same_figures() -> None:
    scenario = falseticker(3_000)
    first, second = run(scenario, seed=5), run(scenario, seed=5)
    assert first[1] == second[1]
    assert first[0].selected == second[0].selected and first[0].kods == second[0].kods


def test_a_long_queued_reply_at_start_up_does_not_throw_the_clock_off() -> None:
    """QA s17 hunt-sync F2: 5 % of packets queued 200 ms longer.  With these seeds one such
    reply among the first ones used to reach the discipline, pull the clock 100 ms the wrong
    way and make every good reply after it a "spike": 130-330 ms off for 5-18 minutes."""
    for seed in (1, 9):
        path = PathSpec(popcorn=0.05)
        scenario = Scenario(
            name="popcorn at start-up",
            description="one server, 5 % of packets queued 200 ms",
            duration_s=1200,
            servers=(ServerSpec(name="A", path=path),),
        )
        trace = simulate(scenario, seed)
        worst = max(abs(x) for x in trace.offsets_ns[60:])
        print(f"seed {seed}: max |offset| after 60 s {worst / 1e6:.2f} ms, steps {trace.steps}")
        assert worst < 20_000_000, seed
        assert not trace.steps, seed  # nothing to step once the 100 ms start is slewed out
