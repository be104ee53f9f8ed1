"""The clock discipline, sans-IO: system offsets in, clock steps and frequencies out.

Theory of operation
-------------------
The clock is only ever corrected two ways: a step, and a frequency (how much faster than its
oscillator it runs).  The discipline issues every one of those corrections itself, so it knows
the total correction ``C`` it has applied at any instant: steps plus the integral of the
frequencies in force.  A measured offset ``theta`` (true time minus our clock) therefore turns
into a *raw* offset ``x = theta + C``: true time minus the bare oscillator, a quantity our own
corrections cannot disturb.  Every sample goes into one history in that frame, so steps and
phase slewing never invalidate it (no "clear the filter after a step"), and the estimator and
the controller are decoupled: no loop gain to tune, nothing that can oscillate.

Estimator (chrony's idea, RFC 5905 leaves it open): a weighted least-squares line through the
recent raw offsets gives the oscillator's phase now and its frequency (the slope).  When every
offset comes with the delay of its exchange, samples are weighted by how much queueing they
suffered beyond the fastest exchange (the offset of an exchange that queued ``e`` longer can be
off by ``e/2``), so the lucky fast exchanges carry the estimate.  How many samples to trust is
decided by two tests on the residuals, after which the oldest samples are dropped: a runs test
(white noise changes sign often; a line that no longer fits, because the oscillator wandered,
leaves long runs of one sign) and a tail test (the newest samples must not sit off the line as
a group, at any scale: that end is what the estimate of "now" rests on).  With few samples the
slope is blended with the prior (the drift file and its skew, or nothing).  A sample handed on
late (the clock filter may pick one several polls old) is placed at its measurement time, using
the log of frequencies we set since.

Spikes (RFC 5905's SPIK state): an offset far outside what the estimate predicts is ignored once;
a second one telling the same story means the reference moved (another system peer, a
falseticker voted out): the history restarts from those two, keeping the frequency as a prior.

Controller: the frequency is set to the slope (the drift estimate, ``frequency_ppm``, kept in
the drift file), and the estimated phase error is slewed out over a quarter of the interval
between updates (the estimate beats any one sample); ``handle_timer`` ends the slew.  Start-up
and limits follow chrony's ``makestep``/``maxslewrate`` and RFC 5905 §11.3: steps only above
``step_threshold_ns`` within the first ``step_limit`` updates; ``Panic`` beyond
``panic_threshold_ns`` except on a first update that may step; drift within
``max_frequency_ppm``, total rate within ``max_slew_ppm``.  Poll (chrony's ``polltarget``): up
while the regression keeps more samples than a target, down when fewer or when an offset lands
far outside the prediction; the caller clamps it to each source's limits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

from tsyncd.sync.regression import MIN_RUNS_SAMPLES, delay_weights, fit_line, runs_random

_log = logging.getLogger(__name__)

_PPM: Final = 1e-6
_NS_PER_S: Final = 1_000_000_000
_MAX_SAMPLES: Final = 256  # history kept for the regression (chrony maxsamples)
_TAIL_Z: Final = 3.0  # newest samples this many standard errors off the line: window too long
_POLL_TARGET: Final = 24  # regression samples to aim for before raising the poll
_CORRECTION_RATIO: Final = 0.25  # slew the phase error out over this fraction of the interval
_MIN_CORRECTION_NS: Final = 1_000_000_000  # never slew faster than over 1 s
_NO_PRIOR_SKEW_PPM: Final = 1000.0  # "no idea" about the frequency before any data
_MIN_PRIOR_SKEW_PPM: Final = 1.0  # a drift file is never trusted better than this
_MIN_ERROR_NS: Final = 1_000.0  # bounds on a sample's stated uncertainty, used only while
_MAX_ASSUMED_ERROR_NS: Final = 1_000_000.0  # too few samples give their own noise
_SPIKE_Z: Final = 6.0  # an offset this many noise deviations off the estimate is a spike ...
_SPIKE_MIN_NS: Final = 50_000.0  # ... and at least this far off
_RMS_WEIGHT: Final = 0.125  # exponential average weight for rms_offset
_MAX_LOG: Final = 512  # frequency changes remembered for stale samples


@dataclass(frozen=True, slots=True, kw_only=True)
class DisciplineConfig:
    """Limits of the discipline (chrony's ``makestep 0.128 3`` and ``maxslewrate`` by default)."""

    step_threshold_ns: int = 128_000_000  # step when |offset| is above this ...
    step_limit: int = 3  # ... only within the first N clock updates (-1: always)
    panic_threshold_ns: int | None = 1000 * _NS_PER_S  # larger offsets are refused (Panic)
    max_frequency_ppm: float = 500.0  # limit of the drift (frequency) estimate
    max_slew_ppm: float = 83_333.0  # limit of the total rate correction used to slew phase


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """Jump the clock by ``offset_ns`` (positive: forward)."""

    offset_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetFrequency:
    """Run the clock ``ppm`` faster than its oscillator from now on (drift plus phase slew)."""

    ppm: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Panic:
    """An offset too large to correct without an operator (RFC 5905 PANICT)."""

    offset_ns: int
    reason: str


ClockAction = Step | SetFrequency | Panic


@dataclass(frozen=True, slots=True, kw_only=True)
class DisciplineSnapshot:
    """What ``tsyncctl tracking`` shows about the discipline."""

    frequency_ppm: float  # drift estimate (positive: the clock is made to run faster)
    skew_ppm: float  # standard error of that estimate
    last_offset_ns: int  # the last offset handed in
    rms_offset_ns: int  # long-term RMS of the offsets handed in
    residual_offset_ns: int  # phase still being slewed out
    updates: int  # offsets accepted
    state: str  # "nset" | "fset" | "freq" | "sync" | "panic"
    poll_log2: int  # recommended system poll


@dataclass(frozen=True, slots=True)
class _Point:
    """A sample in the raw frame: oscillator time (ns since the origin) and raw offset (ns)."""

    u: float
    x: float
    error: float  # the stated uncertainty, ns
    delay: float  # round-trip delay of the exchange, ns (nan: not given)


@dataclass(frozen=True, slots=True)
class _Fit:
    """A fitted line x(u) = x_mean + slope * (u - u_mean), with its uncertainties."""

    u_mean: float
    x_mean: float
    slope: float  # ns/ns, blended with the prior
    mean_var: float  # variance of x_mean, ns^2
    slope_var: float  # variance of slope
    sigma: float  # residual standard deviation of one sample, ns
    used: int  # samples in the regression

    def at(self, u: float) -> float:
        """The fitted raw offset at oscillator time ``u``."""
        return self.x_mean + self.slope * (u - self.u_mean)

    def sd_at(self, u: float) -> float:
        """Standard error of ``at(u)``."""
        du = u - self.u_mean
        return math.sqrt(self.mean_var + self.slope_var * du * du)


class Discipline:
    """Turns system offsets into clock steps and frequencies (see the module docstring)."""

    def __init__(
        self,
        config: DisciplineConfig,
        *,
        initial_frequency_ppm: float | None,
        now_ns: int,
        initial_skew_ppm: float | None = None,
    ) -> None:
        self._config = config
        self._origin_ns = now_ns  # times are kept relative to this, as floats
        self._last_ns = now_ns  # when the correction integral was last brought up to date
        self._correction_ns = 0.0  # C: everything applied since the origin
        has_file = initial_frequency_ppm is not None
        freq = _clamp(initial_frequency_ppm or 0.0, config.max_frequency_ppm)
        self._prior_ppm = freq
        self._prior_skew_ppm = (
            max(initial_skew_ppm or _MIN_PRIOR_SKEW_PPM, _MIN_PRIOR_SKEW_PPM)
            if has_file
            else _NO_PRIOR_SKEW_PPM
        )
        self._freq_ppm = freq  # drift estimate
        self._skew_ppm = self._prior_skew_ppm
        self._applied_ppm = freq  # what the clock runs at now (drift + slew)
        self._points: list[_Point] = []
        self._last_fit: _Fit | None = None  # the estimate as of the last update
        self._pending: _Point | None = None  # an ignored spike, waiting for confirmation
        self._updates = 0
        self._state = "fset" if has_file else "nset"
        self._state_before_panic = self._state
        # The refusal in force: the last offset was over the panic threshold (None once an
        # offset is taken again, or the operator stepped the clock with tsyncctl makestep).
        self.panic: Panic | None = None
        self._poll_log2 = 6
        self._poll_score = 0.0
        self._interval_ns = 0.0  # average interval between updates
        self._last_update_ns: int | None = None
        self._last_offset_ns = 0
        self._mean_square = 0.0
        # The first timer tells the clock the starting frequency: whatever correction the
        # clock carried before we started is not ours.
        self._deadline_ns: int | None = now_ns
        self._slew_end_ns: int | None = None
        # (clock time, ppm) of every frequency set, for samples measured in the past.
        self._log: list[tuple[int, float]] = [(now_ns, freq)]

    # ---------------------------------------------------------------- properties

    @property
    def frequency_ppm(self) -> float:
        """The drift estimate (what the drift file keeps), without any phase slewing."""
        return self._freq_ppm

    @property
    def skew_ppm(self) -> float:
        """Standard error of the drift estimate."""
        return self._skew_ppm

    @property
    def poll_log2(self) -> int:
        """Recommended system poll; the caller clamps it to each source's min/max poll."""
        return self._poll_log2

    def next_deadline_ns(self) -> int | None:
        """When ``handle_timer`` must run (clock ns), or None."""
        return self._deadline_ns

    def snapshot(self) -> DisciplineSnapshot:
        """The discipline's state for control and metrics."""
        residual = 0.0
        if self._slew_end_ns is not None:
            remaining = max(0, self._slew_end_ns - self._last_ns)
            rate = (self._applied_ppm - self._freq_ppm) * _PPM
            residual = remaining * rate / (1.0 + self._applied_ppm * _PPM)
        return DisciplineSnapshot(
            frequency_ppm=self._freq_ppm,
            skew_ppm=self._skew_ppm,
            last_offset_ns=self._last_offset_ns,
            rms_offset_ns=round(math.sqrt(self._mean_square)),
            residual_offset_ns=round(residual),
            updates=self._updates,
            state=self._state,
            poll_log2=self._poll_log2,
        )

    # ---------------------------------------------------------------- inputs

    def handle_offset(
        self,
        now_ns: int,
        offset_ns: int,
        *,
        error_ns: int,
        poll_log2: int,
        measured_ns: int | None = None,
        delay_ns: int | None = None,
    ) -> list[ClockAction]:
        """A new system offset: true time minus our clock, to be added to the clock.

        ``error_ns`` is its uncertainty, ``poll_log2`` the system poll in force.  ``measured_ns``
        is the clock time it was measured at (T4) if earlier than ``now_ns``, in the current
        clock's frame (moved by any step since, as the offset is).  ``delay_ns``, the round trip
        of its exchange, turns on delay weighting (give it for every offset or for none).  The
        caller applies the actions at ``now_ns``, in order; after ``Panic`` nothing was done.
        """
        cfg = self._config
        self._advance(now_ns)
        step_allowed = cfg.step_limit < 0 or self._updates < cfg.step_limit
        if (
            cfg.panic_threshold_ns is not None
            and abs(offset_ns) > cfg.panic_threshold_ns
            and not (self._updates == 0 and step_allowed)
        ):
            entering = self._state != "panic"
            if entering:
                self._state_before_panic = self._state
            self._state = "panic"
            reason = (
                f"offset {offset_ns / _NS_PER_S:+.3f} s exceeds the panic threshold "
                f"{seconds_text(cfg.panic_threshold_ns)} s"
            )
            self.panic = Panic(offset_ns=offset_ns, reason=reason)
            level = logging.WARNING if entering else logging.DEBUG  # once, not every poll
            _log.log(level, "clock discipline refuses an update: %s", reason)
            return [self.panic]
        at = now_ns if measured_ns is None else min(measured_ns, now_ns)
        k = self._correction_ns - self._freq_correction_since(at)
        delay = math.nan if delay_ns is None else float(delay_ns)
        point = _Point(float(at - self._origin_ns) - k, offset_ns + k, float(error_ns), delay)
        predicted = self._last_fit
        if self._is_spike(point):
            pending = self._pending
            if pending is None or not self._agree(pending, point):
                # RFC 5905 SPIK: one offset far from everything before is ignored ...
                self._pending = point
                _log.debug("ignoring an offset of %+d ns far from the prediction", offset_ns)
                return []
            # ... but two in a row that agree mean the world changed (another system peer):
            # start a new history, keeping the frequency as its prior.
            _log.info("offsets moved away from the prediction: restarting the estimate")
            self._restart(pending)
            self._poll_score = min(self._poll_score, 0.0) - 2.0  # poll faster at once
        self._pending = None
        self.panic = None
        self._note_interval(now_ns)
        self._updates += 1
        self._last_offset_ns = offset_ns
        self._mean_square += _RMS_WEIGHT * (float(offset_ns) ** 2 - self._mean_square)
        self._points.append(point)
        self._points.sort(key=lambda p: p.u)  # a stale sample may come after a newer one
        del self._points[:-_MAX_SAMPLES]
        fit = self._fit(prune=True)
        self._last_fit = fit
        self._adapt_poll(poll_log2, fit, predicted, point)
        self._freq_ppm = _clamp(fit.slope / _PPM, cfg.max_frequency_ppm)
        self._skew_ppm = math.sqrt(fit.slope_var) / _PPM
        if fit.used >= 3 or self._state == "fset":
            self._state = "sync"
        elif self._state in ("nset", "panic"):
            self._state = "freq"
        phase_ns = fit.at(self._u(now_ns)) - self._correction_ns  # our clock's offset now
        if step_allowed and abs(phase_ns) > cfg.step_threshold_ns:
            step = round(phase_ns)
            self._apply_step(step)
            _log.info("stepping the clock by %+.6f s", step / _NS_PER_S)
            # The clock reads ``step`` later from here on: the frequency is set in that frame.
            return [Step(offset_ns=step), self._set(now_ns + step, self._freq_ppm, None)]
        return [self._slew(now_ns, phase_ns)]

    def slewed_ns(self, since_ns: int, now_ns: int) -> int:
        """Phase our frequency corrections moved the clock by, between clock times ``since_ns``
        and ``now_ns``, beyond running at the drift estimate (steps excluded).

        An offset measured at ``since_ns`` says less about the clock now by this much: a slew
        since has taken it out (chrony corrects its stored samples for its own slews the same
        way).  Measured against the current drift estimate, the best guess of the oscillator's
        own rate, so a drift estimate that improved since counts as a correction too."""
        if now_ns <= since_ns:
            return 0
        total = self._freq_correction_since(since_ns)  # up to self._last_ns
        tail_from = max(since_ns, self._last_ns)
        if now_ns > tail_from:
            f = self._applied_ppm * _PPM
            total += (now_ns - tail_from) * f / (1.0 + f)
        drift = self._freq_ppm * _PPM
        return round(total - (now_ns - since_ns) * drift / (1.0 + drift))

    def handle_timer(self, now_ns: int) -> list[ClockAction]:
        """Run when ``next_deadline_ns`` has passed: end a phase slew (or apply the start-up
        frequency); returns the frequency to apply now."""
        if self._deadline_ns is None or now_ns < self._deadline_ns:
            return []
        self._advance(now_ns)
        return [self._set(now_ns, self._freq_ppm, None)]

    def handle_external_step(self, now_ns: int, offset_ns: int) -> None:
        """Someone else (``tsyncctl makestep``) stepped the clock by ``offset_ns`` at ``now_ns``.

        It is a correction like our own, so it goes into the correction integral and the
        history stays valid.
        """
        self._advance(now_ns)
        self._apply_step(offset_ns)
        if self.panic is not None:  # the operator accepted the offset the panic refused
            self.panic = None
            self._state = self._state_before_panic

    def forget_offsets(self, now_ns: int) -> None:
        """Drop the offset history (``tsyncctl reset sources``, as chronyd drops its
        measurements): the offsets are known to be no longer valid (after a resume, a move to
        another network).  The frequency is kept as the prior of the next estimate, with its
        uncertainty, as a restart after two agreeing spikes keeps it."""
        self._advance(now_ns)
        self._keep_estimate_as_prior()
        self._points = []
        self._pending = None

    def handle_leap(self, now_ns: int, delta_s: int) -> None:
        """The kernel applied a leap second at ``now_ns``: the clock moved by ``delta_s`` s.

        ``delta_s`` is -1 for an inserted second (Unix time repeats a second) and +1 for a
        deleted one.  True UTC moved by the same amount, so offsets are unchanged: this is not
        a correction to learn from, only a relabelling of the time axis.  The history and the
        deadlines are shifted so that intervals stay right and nothing gets stepped back.
        """
        self._advance(now_ns)
        delta_ns = delta_s * _NS_PER_S
        self._origin_ns += delta_ns  # u = v - origin - C must not move: C did not change
        self._shift_times(delta_ns)

    # ---------------------------------------------------------------- internals

    def _u(self, now_ns: int) -> float:
        """Oscillator time of ``now_ns`` relative to the origin (the clock minus C)."""
        return float(now_ns - self._origin_ns) - self._correction_ns

    def _advance(self, now_ns: int) -> None:
        """Bring the correction integral up to ``now_ns`` at the frequency in force.

        dV = dU * (1 + F), so the correction accumulated over dV of clock time is
        dV * F / (1 + F): exact, not first order, because F may be tens of ppm for hours.
        """
        dv = now_ns - self._last_ns
        if dv > 0:
            f = self._applied_ppm * _PPM
            self._correction_ns += dv * f / (1.0 + f)
        self._last_ns = now_ns

    def _set(self, now_ns: int, ppm: float, slew_end_ns: int | None) -> SetFrequency:
        ppm = _clamp(ppm, self._config.max_slew_ppm)
        self._applied_ppm = ppm
        self._slew_end_ns = slew_end_ns
        self._deadline_ns = slew_end_ns
        self._log.append((now_ns, ppm))
        del self._log[:-_MAX_LOG]
        return SetFrequency(ppm=ppm)

    def _apply_step(self, step_ns: int) -> None:
        """A step is a correction like any other; clock times recorded before it move with it."""
        self._correction_ns += step_ns
        self._shift_times(step_ns)

    def _shift_times(self, delta_ns: int) -> None:
        """The clock jumped by ``delta_ns``: re-express every clock time we keep."""
        self._last_ns += delta_ns
        if self._last_update_ns is not None:
            self._last_update_ns += delta_ns
        if self._deadline_ns is not None:
            self._deadline_ns += delta_ns
        if self._slew_end_ns is not None:
            self._slew_end_ns += delta_ns
        self._log = [(t + delta_ns, f) for t, f in self._log]

    def _freq_correction_since(self, t_ns: int) -> float:
        """Correction applied through frequency alone between clock time ``t_ns`` and the last
        accounting point (steps excluded: the caller's offsets already carry those)."""
        total = 0.0
        end = self._last_ns
        for start, ppm in reversed(self._log):
            lo = max(start, t_ns)
            if end > lo:
                f = ppm * _PPM
                total += (end - lo) * f / (1.0 + f)
            end = start
            if start <= t_ns:
                break
        if end > t_ns and self._log:  # older than the log: assume its oldest frequency
            f = self._log[0][1] * _PPM
            total += (end - t_ns) * f / (1.0 + f)
        return total

    def _slew(self, now_ns: int, phase_ns: float) -> SetFrequency:
        """Correct ``phase_ns`` by running faster/slower than the drift estimate for a while."""
        base = self._freq_ppm
        duration_u = max(_CORRECTION_RATIO * self._interval_ns, float(_MIN_CORRECTION_NS))
        room_ppm = max(self._config.max_slew_ppm - abs(base), 1.0)
        rate_ppm = phase_ns / duration_u / _PPM
        if abs(rate_ppm) > room_ppm:
            rate_ppm = math.copysign(room_ppm, rate_ppm)
            duration_u = phase_ns / (rate_ppm * _PPM)
        if abs(phase_ns) < 0.5 or duration_u <= 0:
            return self._set(now_ns, base, None)
        total = base + rate_ppm
        end = now_ns + max(1, round(duration_u * (1.0 + total * _PPM)))
        return self._set(now_ns, total, end)

    def _innovation(self, point: _Point) -> tuple[float, float]:
        """How far ``point`` is from the current estimate, and the noise that allows."""
        fit = self._last_fit
        if fit is None or fit.used == 0:
            return 0.0, math.inf
        excess = 0.0
        delays = [p.delay for p in self._points]
        if not math.isnan(point.delay) and delays and not any(map(math.isnan, delays)):
            excess = max(0.0, point.delay - min(delays)) / 2.0
        noise = math.sqrt(fit.sd_at(point.u) ** 2 + fit.sigma**2 + excess * excess)
        return point.x - fit.at(point.u), noise

    def _is_spike(self, point: _Point) -> bool:
        miss, noise = self._innovation(point)
        z = _SPIKE_Z
        fit = self._last_fit
        if fit is not None and 1 < fit.used < MIN_RUNS_SAMPLES:
            z *= 10.0  # the noise of a line through 2..5 samples is itself a guess
        return abs(miss) > max(z * noise, _SPIKE_MIN_NS)

    def _agree(self, first: _Point, second: _Point) -> bool:
        """Two spikes tell the same story: their misses match within their noise."""
        miss1, _ = self._innovation(first)
        miss2, noise = self._innovation(second)
        return abs(miss2 - miss1) <= max(_SPIKE_Z * noise, abs(miss1) / 4.0)

    def _restart(self, first: _Point) -> None:
        self._keep_estimate_as_prior()
        self._points = [first]

    def _keep_estimate_as_prior(self) -> None:
        """Before a new history: the last fit's frequency and its uncertainty become the prior
        the next fit is blended with (none from fewer than two samples)."""
        fit = self._last_fit
        if fit is not None and fit.used >= 2:
            self._prior_ppm = _clamp(fit.slope / _PPM, self._config.max_frequency_ppm)
            self._prior_skew_ppm = max(math.sqrt(fit.slope_var) / _PPM, _MIN_PRIOR_SKEW_PPM)
        self._last_fit = None

    def _note_interval(self, now_ns: int) -> None:
        if self._last_update_ns is not None:
            gap = float(max(0, now_ns - self._last_update_ns))
            weight = 0.25 if self._interval_ns else 1.0
            self._interval_ns += weight * (gap - self._interval_ns)
        self._last_update_ns = now_ns

    def _fit(self, *, prune: bool = False) -> _Fit:
        """Regression over the newest samples that pass the runs test (see the docstring)."""
        pts = self._points
        start = 0
        while True:
            window = pts[start:]
            fit, runs_ok = self._regress(window)
            if runs_ok or len(window) <= MIN_RUNS_SAMPLES:
                break
            start += max(1, len(window) // 4)
            if len(pts) - start < MIN_RUNS_SAMPLES:
                start = len(pts) - MIN_RUNS_SAMPLES
        if prune and start > 0:
            del self._points[:start]
        return fit

    def _regress(self, pts: list[_Point]) -> tuple[_Fit, bool]:
        """Weighted least squares over ``pts``; the slope is blended with the drift file."""
        n = len(pts)
        if n == 0:
            prior_var = (self._prior_skew_ppm * _PPM) ** 2
            return _Fit(0.0, 0.0, self._prior_ppm * _PPM, 0.0, prior_var, 0.0, 0), True
        ws = delay_weights([p.delay for p in pts])
        line = fit_line([p.u for p in pts], [p.x for p in pts], ws)
        sw, u_mean, x_mean, suu = line.sum_w, line.x_mean, line.y_mean, line.sxx
        slope = line.slope if suu > 0 else self._prior_ppm * _PPM
        runs_ok = True
        # Noise of one sample: from the residuals when there are enough of them, else the
        # stated error (bounded: a filter's jitter can be wild while the clock is slewed).
        stated = min(max(pts[-1].error, _MIN_ERROR_NS), _MAX_ASSUMED_ERROR_NS)
        unit_var = stated * stated * sw / n  # variance of a sample of weight 1
        if n >= 3 and suu > 0:
            resid = list(line.residuals)
            fitted = sum(w * r * r for w, r in zip(ws, resid, strict=True)) / (n - 2)
            unit_var = max(fitted, unit_var) if n < MIN_RUNS_SAMPLES else fitted
            runs_ok = runs_random(resid) and _tail_ok(resid, ws, unit_var)
        slope_var = unit_var / suu if suu > 0 else math.inf
        if self._prior_skew_ppm < _NO_PRIOR_SKEW_PPM:
            # A drift file is worth as much as its skew says: blend by inverse variances.
            prior = self._prior_ppm * _PPM
            prior_var = (self._prior_skew_ppm * _PPM) ** 2
            if math.isinf(slope_var):
                slope, slope_var = prior, prior_var
            else:
                w = prior_var / (prior_var + slope_var)
                slope = w * slope + (1.0 - w) * prior
                slope_var = 1.0 / (1.0 / slope_var + 1.0 / prior_var)
        elif math.isinf(slope_var):
            slope, slope_var = self._prior_ppm * _PPM, (_NO_PRIOR_SKEW_PPM * _PPM) ** 2
        sigma = math.sqrt(unit_var * n / sw)  # noise of a sample of average weight
        return _Fit(u_mean, x_mean, slope, unit_var / sw, slope_var, sigma, n), runs_ok

    def _adapt_poll(self, poll_log2: int, fit: _Fit, predicted: _Fit | None, point: _Point) -> None:
        """chrony-style poll score: aim for a regression of ``_POLL_TARGET`` samples, and back
        off at once when a new offset lands far outside the prediction."""
        miss = 0.0
        if predicted is not None and predicted.used >= 3:
            bound = 4.0 * math.hypot(predicted.sigma, predicted.sd_at(point.u))
            miss = abs(point.x - predicted.at(point.u)) / max(bound, _MIN_ERROR_NS)
        if miss > 1.0:
            adj = max(-math.log2(miss), -2.0)  # we are not tracking well
        else:  # shortening the interval goes twice as fast as lengthening it
            adj = (
                (fit.used / _POLL_TARGET - 1.0)
                / _POLL_TARGET
                * (2.0 if fit.used < _POLL_TARGET else 1.0)
            )
        self._poll_score += adj
        # Our own poll, not the caller's: the caller clamps it to the sources' limits, and we
        # stay within one step of what it runs so that a clamp never leaves us far away.
        poll = self._poll_log2 if self._updates > 1 else poll_log2
        if self._poll_score >= 1.0:
            poll += 1
            self._poll_score = 0.0
        elif self._poll_score <= -1.0:
            poll -= int(-self._poll_score)
            self._poll_score = 0.0
        self._poll_log2 = max(poll_log2 - 1, min(poll_log2 + 1, poll))


def _tail_ok(resid: list[float], ws: list[float], unit_var: float) -> bool:
    """False when the newest k samples (any k from 3 to half the window) sit off the line as a
    group: their weighted mean residual beyond ``_TAIL_Z`` standard errors.  A bend at the new
    end (the oscillator just wandered) hides from the runs test, yet "now" rests on that end."""
    if unit_var <= 0:
        return True
    limit = _TAIL_Z * _TAIL_Z * unit_var
    sum_w = sum_wr = 0.0
    half = len(resid) // 2
    for k, (w, r) in enumerate(zip(reversed(ws), reversed(resid), strict=True), start=1):
        if k > max(half, 3):
            break
        sum_w += w
        sum_wr += w * r
        # mean = sum_wr / sum_w with variance unit_var / sum_w: |mean| / sd > z
        if k >= 3 and sum_wr * sum_wr > limit * sum_w:
            return False
    return True


def seconds_text(ns: int) -> str:
    """``ns`` as seconds, with as many decimals as it has (to the ns): 0.3, 1000, 0.000125."""
    text = f"{abs(ns) // _NS_PER_S}.{abs(ns) % _NS_PER_S:09d}".rstrip("0").rstrip(".")
    return f"-{text}" if ns < 0 else text


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))
