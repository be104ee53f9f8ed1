"""Weighted linear regression of offsets against time, sans-IO: the statistics behind
``tsyncctl sourcestats`` and the pieces the discipline's estimator shares with it.

Theory of operation
-------------------
A source's offsets, measured at times ``t_i`` against our clock, lie on a line when both clocks
run at steady rates: its intercept is the source's offset now, its slope the source's frequency
relative to our clock (chrony's sourcestats.c and regress.c work this way; RFC 5905 leaves it
open).  ``regress`` fits that line by weighted least squares and says how far to trust it:

* Weights come from the delay of each exchange (``delay_weights``): queueing only adds delay,
  and an exchange that queued ``e`` longer than the fastest one can be off by up to ``e / 2``.
  chrony weighs by the same excess delay (its peer distance against the minimum and the median
  one); we use the discipline's form of it, so that ``sourcestats`` and ``tracking`` agree
  about which exchanges to trust.
* The runs test (``count_runs``, ``runs_random``): residuals of a line that fits white noise
  change sign often; long runs of one sign mean the line no longer fits the older samples (a
  clock wandered).  The oldest samples are dropped one at a time until the test passes, as
  chrony does; ``Regression.dropped`` says how many, for the caller to forget them.
* The skew is the half-width of a 99.9 % confidence interval of the slope: its standard error
  times Student's t quantile for the degrees of freedom left, as chrony's ``Freq Skew`` is, so
  the two can be compared.  With fewer than three samples there is no line to judge, and, as
  chronyc shows, the frequency is 0 within ``WORST_CASE_SKEW_PPM``.

Offsets use tsyncd's sign throughout (RFC 5905: source minus our clock), so a positive slope
means the source runs fast of our clock; chronyc shows both with the opposite sign.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MIN_REGRESSION_SAMPLES: Final = 3  # a line through two points has no residuals to judge it
MIN_RUNS_SAMPLES: Final = 6  # below this the runs test has no power: keep everything
WORST_CASE_SKEW_PPM: Final = 2000.0  # chrony's bound on an unknown frequency
_RUNS_Z: Final = 1.5  # one-sided normal quantile for "too few runs"
_WEIGHT_FLOOR_FRACTION: Final = 0.1  # of the median excess delay, see delay_weights
_MIN_WEIGHT_FLOOR_NS: Final = 1_000.0  # ... and never below a microsecond
_SKEW_CONFIDENCE: Final = 0.999  # two-sided, chrony's 99.95 % one-sided t quantile


def delay_weights(delays: Sequence[float]) -> list[float]:
    """Relative weights of samples with these round-trip delays (ns; nan: not known).

    Queueing only adds delay, and an exchange that queued ``e`` ns more than the fastest one
    can be off by up to ``e / 2`` either way; spread evenly, that is a variance of ``e**2 / 12``.
    A floor (a fraction of the typical excess) keeps one lucky exchange from outvoting the rest.
    Without every delay, every sample weighs the same.
    """
    if not delays or any(math.isnan(d) for d in delays):
        return [1.0] * len(delays)
    base = min(delays)
    excess = sorted(d - base for d in delays)
    floor = max(_WEIGHT_FLOOR_FRACTION * excess[len(excess) // 2], _MIN_WEIGHT_FLOOR_NS)
    return [1.0 / (floor * floor + (d - base) ** 2 / 12.0) for d in delays]


def count_runs(residuals: Sequence[float]) -> int:
    """Runs of residuals with the same sign (chronyc's NR); exact zeros have no sign and are
    skipped.  0 without a signed residual."""
    signs = [r > 0 for r in residuals if r != 0]
    if not signs:
        return 0
    return 1 + sum(1 for a, b in itertools.pairwise(signs) if a != b)


def runs_random(residuals: Sequence[float]) -> bool:
    """Wald-Wolfowitz runs test: False when the residual signs change too rarely to be noise
    (always True with fewer than ``MIN_RUNS_SAMPLES`` signed residuals)."""
    signs = [r > 0 for r in residuals if r != 0]
    n = len(signs)
    if n < MIN_RUNS_SAMPLES:
        return True
    pos = sum(signs)
    neg = n - pos
    if pos == 0 or neg == 0:
        return False
    mean = 1.0 + 2.0 * pos * neg / n
    var = (mean - 1.0) * (mean - 2.0) / (n - 1)
    return count_runs(residuals) >= mean - _RUNS_Z * math.sqrt(max(var, 0.0))


@dataclass(frozen=True, slots=True)
class Line:
    """A weighted least-squares line y(x) = y_mean + slope * (x - x_mean)."""

    x_mean: float
    y_mean: float
    slope: float  # 0.0 when every x is the same (sxx == 0): no slope can be told
    sxx: float  # weighted sum of squared x deviations
    sum_w: float
    residuals: tuple[float, ...]  # y - y(x), in input order


def fit_line(xs: Sequence[float], ys: Sequence[float], ws: Sequence[float]) -> Line:
    """Weighted least squares of ``ys`` on ``xs`` with weights ``ws`` (at least one point)."""
    sw = sum(ws)
    x_mean = sum(w * x for w, x in zip(ws, xs, strict=True)) / sw
    y_mean = sum(w * y for w, y in zip(ws, ys, strict=True)) / sw
    sxx = sum(w * (x - x_mean) ** 2 for w, x in zip(ws, xs, strict=True))
    sxy = sum(w * (x - x_mean) * (y - y_mean) for w, x, y in zip(ws, xs, ys, strict=True))
    slope = sxy / sxx if sxx > 0 else 0.0
    residuals = tuple(y - y_mean - slope * (x - x_mean) for x, y in zip(xs, ys, strict=True))
    return Line(x_mean, y_mean, slope, sxx, sw, residuals)


@dataclass(frozen=True, slots=True, kw_only=True)
class Regression:
    """What a source's offsets say about it at one instant (chronyc sourcestats' row)."""

    samples: int  # samples in the line (after dropping the ones the runs test rejects)
    dropped: int  # oldest samples the runs test rejected
    runs: int  # runs of residual signs (NR); 0 without a line
    offset_ns: float | None  # the line at the instant asked for; the newest sample's offset
    # with fewer than MIN_REGRESSION_SAMPLES; None without samples
    frequency_ppm: float  # slope: + the source runs fast of our clock; 0 without a line
    skew_ppm: float  # half-width of the slope's 99.9 % confidence interval
    std_dev_ns: float | None  # residual standard deviation of a sample of average weight


def regress(
    times_ns: Sequence[int], offsets_ns: Sequence[float], delays_ns: Sequence[float], at_ns: int
) -> Regression:
    """The line through these samples (oldest first; times integer ns on our clock, offsets
    and delays ns), evaluated at ``at_ns``; see the module docstring."""
    n = len(times_ns)
    if n < MIN_REGRESSION_SAMPLES:
        return Regression(
            samples=n,
            dropped=0,
            runs=0,
            offset_ns=float(offsets_ns[-1]) if n else None,
            frequency_ppm=0.0,
            skew_ppm=WORST_CASE_SKEW_PPM,
            std_dev_ns=None,
        )
    newest = times_ns[-1]
    xs = [float(t - newest) for t in times_ns]  # integers subtracted first: no lost precision
    start = 0
    while True:
        ws = delay_weights(delays_ns[start:])
        line = fit_line(xs[start:], offsets_ns[start:], ws)
        if n - start <= MIN_RUNS_SAMPLES or runs_random(line.residuals):
            break
        start += 1
    used = n - start
    if line.sxx <= 0:  # every sample at one instant: no slope to tell
        return Regression(
            samples=used,
            dropped=start,
            runs=count_runs(line.residuals),
            offset_ns=line.y_mean,
            frequency_ppm=0.0,
            skew_ppm=WORST_CASE_SKEW_PPM,
            std_dev_ns=None,
        )
    dof = used - 2
    unit_var = sum(w * r * r for w, r in zip(ws, line.residuals, strict=True)) / dof
    slope_sd = math.sqrt(unit_var / line.sxx)
    return Regression(
        samples=used,
        dropped=start,
        runs=count_runs(line.residuals),
        offset_ns=line.y_mean + line.slope * (float(at_ns - newest) - line.x_mean),
        frequency_ppm=line.slope * 1e6,
        skew_ppm=min(slope_sd * t_quantile(dof) * 1e6, WORST_CASE_SKEW_PPM),
        std_dev_ns=math.sqrt(unit_var * used / line.sum_w),
    )


@functools.cache
def t_quantile(dof: int) -> float:
    """Student's t for ``dof`` degrees of freedom that bounds ``_SKEW_CONFIDENCE`` of the
    distribution two-sided (636.6 for one degree, 3.29 for many), by bisection on the CDF."""
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_central(mid, dof) < _SKEW_CONFIDENCE:
            lo = mid
        else:
            hi = mid
    return hi


def _t_central(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's T with an integer ``dof`` >= 1 (Abramowitz & Stegun 26.7.3-4:
    a finite series in cos(theta), theta = atan(t / sqrt(dof)))."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2:  # odd: 2/pi * (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 1.0 if dof > 1 else 0.0
        for k in range(1, (dof - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, dof // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total
