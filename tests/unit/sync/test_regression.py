"""regress: frequency, skew, offset now, residual std dev and runs from synthetic offsets."""

from __future__ import annotations

import math
import random

import pytest

from tsyncd.sync.regression import (
    WORST_CASE_SKEW_PPM,
    count_runs,
    delay_weights,
    regress,
    runs_random,
    t_quantile,
)

S = 1_000_000_000
US = 1_000
T0 = 1_800_000_000 * S


def line_samples(
    n: int, *, ppm: float, noise_ns: float, interval_s: int = 16, seed: int = 1
) -> tuple[list[int], list[float], list[float]]:
    """n offsets on a line of slope ``ppm`` (offset 0 at T0) with Gaussian noise, delay 1 ms."""
    rng = random.Random(seed)
    times = [T0 + i * interval_s * S for i in range(n)]
    offsets = [(t - T0) * ppm * 1e-6 + rng.gauss(0.0, noise_ns) for t in times]
    return times, offsets, [1_000_000.0] * n


def test_frequency_recovered_within_its_skew() -> None:
    times, offsets, delays = line_samples(64, ppm=5.0, noise_ns=50 * US)
    now = times[-1] + 8 * S
    r = regress(times, offsets, delays, now)
    assert r.samples + r.dropped == 64 and r.samples >= 32
    assert 0 < r.skew_ppm < 1.0  # 50 µs of noise over ~17 min: well under a ppm
    assert abs(r.frequency_ppm - 5.0) <= r.skew_ppm
    # The offset now is the line's, extrapolated past the newest sample.
    assert r.offset_ns == pytest.approx((now - T0) * 5e-6, abs=50 * US)
    assert r.std_dev_ns == pytest.approx(50 * US, rel=0.3)


@pytest.mark.parametrize("seed", range(20))
def test_skew_bounds_the_error_of_a_short_noisy_line(seed: int) -> None:
    """A 99.9 % bound: with 8 noisy samples the truth is still inside it."""
    times, offsets, delays = line_samples(8, ppm=-12.0, noise_ns=200 * US, seed=seed)
    r = regress(times, offsets, delays, times[-1])
    assert abs(r.frequency_ppm + 12.0) <= r.skew_ppm < WORST_CASE_SKEW_PPM


def test_noise_changes_sign_often_a_bent_line_rarely() -> None:
    times, offsets, delays = line_samples(64, ppm=0.0, noise_ns=10 * US, seed=2)
    r = regress(times, offsets, delays, times[-1])
    assert r.dropped == 0 and r.runs >= 20  # white noise: about half as many runs as samples
    # A clock that wandered (1 ms of bend): a parabola leaves long runs about any line through
    # all of it, so the oldest samples are dropped until what is left fits.
    bent = [o + 1e-9 * float(t - T0) ** 2 / S for t, o in zip(times, offsets, strict=True)]
    r = regress(times, bent, delays, times[-1])
    assert r.dropped > 0 and r.samples < 64


def test_runs_count_sign_changes() -> None:
    assert count_runs([1.0, 2.0, -1.0, -3.0, 0.0, 4.0]) == 3  # ++ -- + (0 has no sign)
    assert count_runs([1.0, -1.0, 1.0, -1.0]) == 4
    assert count_runs([0.0, 0.0]) == 0
    assert not runs_random([1.0] * 5 + [-1.0] * 5)
    assert runs_random([1.0, -1.0] * 5)


def test_slow_exchanges_weigh_less() -> None:
    """Offsets of exchanges that queued 2 ms longer (off by ~1 ms) barely move the line."""
    rng = random.Random(3)
    times = [T0 + i * 16 * S for i in range(40)]
    slow = [rng.random() < 0.5 for _ in times]
    offsets = [-1_000_000.0 if s else 0.0 for s in slow]
    delays = [2_200_000.0 if s else 200_000.0 for s in slow]
    r = regress(times, offsets, delays, times[-1])
    assert r.offset_ns is not None and abs(r.offset_ns) < 50 * US
    assert delay_weights([math.nan, 1.0]) == [1.0, 1.0]  # without every delay: equal weights


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_samples_give_no_frequency(n: int) -> None:
    """As chronyc shows a new source: frequency 0 within the worst-case bound."""
    times, offsets, delays = line_samples(n, ppm=5.0, noise_ns=0.0)
    offsets = [o + 7_000.0 for o in offsets]
    r = regress(times, offsets, delays, T0 + 100 * S)
    assert (r.samples, r.runs, r.frequency_ppm) == (n, 0, 0.0)
    assert r.skew_ppm == WORST_CASE_SKEW_PPM and r.std_dev_ns is None
    assert r.offset_ns == (offsets[-1] if n else None)  # the newest sample's offset


def test_samples_at_one_instant_tell_no_frequency() -> None:
    r = regress([T0] * 4, [1.0, 2.0, 3.0, 2.0], [1.0] * 4, T0)
    assert (r.frequency_ppm, r.skew_ppm, r.offset_ns) == (0.0, WORST_CASE_SKEW_PPM, 2.0)


def test_t_quantile_matches_the_tables() -> None:
    """Student's t, 99.95 % one-sided (the skew's confidence, as chrony's)."""
    assert t_quantile(1) == pytest.approx(636.62, rel=1e-4)
    assert t_quantile(2) == pytest.approx(31.599, rel=1e-4)
    assert t_quantile(10) == pytest.approx(4.587, rel=1e-3)
    assert t_quantile(30) == pytest.approx(3.646, rel=1e-3)
    assert t_quantile(1000) == pytest.approx(3.300, rel=1e-3)
