"""A source's sample history for its statistics (``tsyncctl sourcestats``), sans-IO.

Theory of operation
-------------------
The RFC 5905 clock filter holds eight samples, chosen among by delay for selection: too few
and too short a span to tell a frequency.  ``SampleHistory`` keeps up to ``MAX_SAMPLES`` (64,
as chrony keeps per source) of every sample the filter is given, beside it and without changing
it, and fits the line of ``sync/regression`` through them: the source's offset now, its
frequency relative to our clock with its skew, the residuals' standard deviation and runs.

Each new sample runs the regression; the oldest samples whose residuals fail the runs test are
forgotten, as chrony prunes its register, so the history spans what still fits one line.

Our own corrections must not look like the source's frequency: offsets are taken at the
instant asked for, each corrected by what our slews moved the clock by since it was measured
(``slewed``, the discipline's, as the clock filter's), so the slope is the source's rate
relative to our clock running at its current drift estimate; chrony slews its stored samples
the same way.  A step moves every stored offset and time with it (``shift``).

``combined_skew_ppm``: ``tsyncctl tracking``'s skew, from the skews of the sources combined
into the system offset, as chronyd's ``combine_sources`` takes it (below).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import Final

from tsyncd.sync.regression import Regression, regress
from tsyncd.sync.sample import Sample, shifted

MAX_SAMPLES: Final = 64  # chrony's samples per source


class SampleHistory:
    """Up to ``MAX_SAMPLES`` samples of one source, oldest first, and their regression."""

    def __init__(self) -> None:
        self._samples: list[Sample] = []
        # (measured at, now) -> phase our own slews moved the clock by in between: the sync
        # core sets the discipline's; None: no correction.
        self.slewed: Callable[[int, int], int] | None = None

    def add(self, sample: Sample) -> None:
        """Take a new sample; forget the oldest one past ``MAX_SAMPLES`` and those the runs
        test rejects.  A sample older than the newest held goes in its place in time."""
        bisect.insort(self._samples, sample, key=lambda s: s.local_rx_ns)
        del self._samples[:-MAX_SAMPLES]
        newest = self._samples[-1].local_rx_ns
        del self._samples[: self.regression(newest).dropped]

    def regression(self, now_ns: int) -> Regression:
        """The line through the samples, with offsets as of ``now_ns`` (our clock), evaluated
        at ``now_ns``."""
        slewed = self.slewed
        times = [s.local_rx_ns for s in self._samples]
        offsets = [
            float(s.offset_ns - (slewed(s.local_rx_ns, now_ns) if slewed is not None else 0))
            for s in self._samples
        ]
        delays = [float(s.delay_ns) for s in self._samples]
        return regress(times, offsets, delays, now_ns)

    def span_ns(self) -> int | None:
        """Time between the oldest and the newest sample held; None without samples."""
        if not self._samples:
            return None
        return self._samples[-1].local_rx_ns - self._samples[0].local_rx_ns

    def shift(self, offset_ns: int) -> None:
        """Our clock was stepped by ``offset_ns``: every stored offset shrinks by as much and
        every time reads as much later (as ``ClockFilter.shift``)."""
        self._samples = [shifted(s, offset_ns) for s in self._samples]

    def clear(self) -> None:
        """Forget every sample (tsyncctl reset sources)."""
        self._samples.clear()

    def __len__(self) -> int:
        return len(self._samples)


def combined_skew_ppm(skews_ppm: Iterable[float]) -> float:
    """The skew of the combined sources' frequency, from each one's (``Regression.skew_ppm``,
    a 99.9 % bound): ``1 / sqrt(sum(1 / skew**2))``, as chronyd's ``combine_sources`` gives
    ``chronyc tracking``'s Skew (the bounds are a standard error times one t quantile, so
    they combine as inverse variances do).  One source: its own skew.  A zero skew (a line
    through its samples without residuals) makes the combination exact: 0.  No skews: 0.0,
    what chronyc shows while unsynchronized."""
    skews = list(skews_ppm)
    if not skews or min(skews) <= 0:
        return 0.0
    if len(skews) == 1:
        return skews[0]  # exactly the source's, without rounding through 1/x**2
    return 1.0 / math.sqrt(sum(1.0 / (s * s) for s in skews))
