"""SampleHistory: 64 samples beside the 8-stage filter, runs-test pruning, our slews and steps
taken out; and the sync core feeding it (tests/sim/test_simulator.py: in a disciplined loop)."""

from __future__ import annotations

import random

import pytest
from test_filter import T0, US, S, smp

from tsyncd.sync.core import SyncCore
from tsyncd.sync.filter import NSTAGE
from tsyncd.sync.regression import WORST_CASE_SKEW_PPM
from tsyncd.sync.sample import Sample
from tsyncd.sync.sourcestats import MAX_SAMPLES, SampleHistory, combined_skew_ppm

DELAY = 200 * US


def noisy_line(n: int, ppm: float, seed: int = 1) -> list[Sample]:
    """n samples 16 s apart on a line of ``ppm`` with 20 µs of noise."""
    rng = random.Random(seed)
    return [
        smp(round(i * 16 * S * ppm * 1e-6 + rng.gauss(0, 20 * US)), DELAY, T0 + i * 16 * S)
        for i in range(n)
    ]


def core_with_source() -> SyncCore:
    core = SyncCore(
        local_stratum=None, min_sources=1, precision_log2=-20, discipline=None, now_ns=T0
    )
    core.add_source(
        "src", reference_id=1, min_poll=4, max_poll=4, iburst=False, rng=random.Random(1), now_ns=T0
    )
    return core


def test_the_core_keeps_64_samples_beside_the_filters_8() -> None:
    core = core_with_source()
    for s in noisy_line(100, ppm=3.0):
        core.handle_sample("src", s)
    state = core.sources["src"]
    assert len(state.filter) == NSTAGE
    assert len(state.history) == MAX_SAMPLES
    r = state.history.regression(T0 + 100 * 16 * S)
    assert r.samples == MAX_SAMPLES and abs(r.frequency_ppm - 3.0) <= r.skew_ppm < 0.1
    core.reset_sources(T0 + 100 * 16 * S)  # tsyncctl reset sources forgets them too
    assert len(state.history) == 0


def test_samples_that_no_longer_fit_a_line_are_forgotten() -> None:
    """The source (or our clock) changed frequency: the runs test drops the older samples,
    so the frequency is the new one, as chrony prunes its register."""
    h = SampleHistory()
    rng = random.Random(2)
    turn = T0 + 40 * 16 * S
    for i in range(64):
        t = T0 + i * 16 * S
        h.add(smp(round(max(0, t - turn) * 20e-6 + rng.gauss(0, 20 * US)), DELAY, t))
    assert len(h) < 40
    r = h.regression(T0 + 64 * 16 * S)
    assert abs(r.frequency_ppm - 20.0) <= r.skew_ppm < 1.0


def test_our_own_slews_are_taken_out() -> None:
    """A perfect source measured while we ran our clock 10 ppm fast: the offsets fall at
    10 ppm, which is ours, not the source's."""
    h = SampleHistory()
    for i in range(20):
        t = T0 + i * 16 * S
        h.add(smp(-round((t - T0) * 10e-6), DELAY, t))
    assert h.regression(T0 + 19 * 16 * S).frequency_ppm == pytest.approx(-10.0)
    h.slewed = lambda since, now: round((now - since) * 10e-6)  # what we moved it by
    now = T0 + 20 * 16 * S
    r = h.regression(now)
    assert r.frequency_ppm == pytest.approx(0.0, abs=1e-3)
    assert r.offset_ns == pytest.approx(-(now - T0) * 10e-6, abs=1)  # where the clock is now


def test_a_step_moves_every_sample() -> None:
    h = SampleHistory()
    for s in noisy_line(10, ppm=4.0):
        h.add(s)
    now = T0 + 10 * 16 * S
    before = h.regression(now)
    h.shift(S)  # our clock jumped a second ahead: offsets 1 s less, times 1 s later
    after = h.regression(now + S)
    assert after.frequency_ppm == pytest.approx(before.frequency_ppm)
    assert after.offset_ns == pytest.approx(before.offset_ns - S, abs=1)  # type: ignore[operator]


def test_too_few_samples_tell_no_frequency() -> None:
    h = SampleHistory()
    h.add(smp(5 * US, DELAY, T0))
    r = h.regression(T0 + S)
    assert (r.samples, r.frequency_ppm, r.skew_ppm, r.offset_ns) == (
        1,
        0.0,
        WORST_CASE_SKEW_PPM,
        5 * US,
    )


def test_combined_skew_is_chronyds_inverse_variance_combination() -> None:
    assert combined_skew_ppm([0.25]) == 0.25  # one source: exactly its own
    assert combined_skew_ppm([0.3, 0.4]) == pytest.approx(0.24)  # 1 / sqrt(1/0.09 + 1/0.16)
    assert combined_skew_ppm([0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.25)
    assert combined_skew_ppm([0.5, WORST_CASE_SKEW_PPM]) == pytest.approx(0.5, rel=1e-6)
    assert combined_skew_ppm([0.5, 0.0]) == 0.0  # a line without residuals: exact
    assert combined_skew_ppm([]) == 0.0  # nothing combined: chronyc's 0 while unsynchronized


def test_tracking_skew_is_the_combined_sources_sourcestats_skew() -> None:
    """QA s19: tracking's skew was the discipline's standard error, sourcestats' a 99.9 %
    bound: chronyc shows the same kind of figure in both, from the combined sources."""
    core = core_with_source()
    core.add_source(
        "other",
        reference_id=2,
        min_poll=4,
        max_poll=4,
        iburst=False,
        rng=random.Random(2),
        now_ns=T0,
    )
    assert core.reference_skew_ppm(T0) == 0.0  # unsynchronized: chronyc shows 0
    for s in noisy_line(30, ppm=3.0):
        core.handle_sample("src", s)
    now = T0 + 30 * 16 * S
    assert core.decision.synchronized and core.decision.survivors == ("src",)
    alone = core.sources["src"].history.regression(now).skew_ppm
    assert 0 < alone < 1 and core.reference_skew_ppm(now) == alone
    for s in noisy_line(30, ppm=3.0, seed=7):
        core.handle_sample("other", s)
    assert sorted(core.decision.survivors) == ["other", "src"]
    skews = [core.sources[n].history.regression(now).skew_ppm for n in ("src", "other")]
    assert core.reference_skew_ppm(now) == pytest.approx(combined_skew_ppm(skews))
    assert core.reference_skew_ppm(now) < min(skews)
