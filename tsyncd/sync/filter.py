"""The per-source clock filter (RFC 5905 §10), simplified for the walking skeleton.

Keeps the last eight samples and trusts the one with the smallest delay: queueing only ever
adds delay, so the fastest exchange is the least distorted.  Jitter is the RMS of the other
offsets about the chosen one.  The full filter (dispersion ageing per stage, popcorn spike
suppression, sample age rules) belongs to the synchronization engine.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

from tsyncd.sync.sample import Sample, dispersion_at

NSTAGE: Final = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterOutput:
    """What the filter believes about a source right now."""

    sample: Sample  # the chosen (lowest-delay) sample
    jitter_ns: int
    dispersion_ns: int  # filter dispersion, aged to ``now``


class ClockFilter:
    """Eight-stage shift register of samples; pick by minimum delay."""

    def __init__(self, precision_ns: int) -> None:
        self._samples: deque[Sample] = deque(maxlen=NSTAGE)
        self._precision_ns = precision_ns

    def add(self, sample: Sample) -> None:
        """Shift a new sample in (the oldest falls out)."""
        self._samples.append(sample)

    def clear(self) -> None:
        """Forget everything (after a clock step the old offsets are meaningless)."""
        self._samples.clear()

    def __len__(self) -> int:
        return len(self._samples)

    def output(self, now_ns: int) -> FilterOutput | None:
        """The current best sample, jitter and dispersion; None before the first sample."""
        if not self._samples:
            return None
        ordered = sorted(self._samples, key=lambda s: s.delay_ns)
        best = ordered[0]
        if len(ordered) > 1:
            sq = sum((s.offset_ns - best.offset_ns) ** 2 for s in ordered[1:])
            jitter = math.isqrt(sq // (len(ordered) - 1))
        else:
            jitter = 0
        # RFC 5905 §10: dispersion = sum of aged stage dispersions weighted 1/2^(i+1).
        disp = 0
        for i, s in enumerate(ordered):
            disp += dispersion_at(s.dispersion_ns, now_ns - s.local_rx_ns) >> (i + 1)
        return FilterOutput(
            sample=best,
            jitter_ns=max(jitter, self._precision_ns),
            dispersion_ns=disp,
        )
