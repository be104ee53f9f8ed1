"""A simulated free-running oscillator: initial offset, frequency error and random-walk wander.

The frequency error ``y`` (fractional, 1e-4 = 100 ppm fast) is a random walk updated once per
simulated second by ``wander * N(0, 1)``, as clknetsim models chrony's test machines
(``freq = offset + sum(wander * normal())``).  Within a second the phase is exactly linear, so
the reading at any nanosecond is defined and the whole thing is piecewise linear and monotone.
"""

from __future__ import annotations

import math
import random
from typing import Final

NS_PER_S: Final = 1_000_000_000


class Oscillator:
    """U(T): what the bare client oscillator reads at true time T (both integer Unix ns)."""

    def __init__(
        self,
        *,
        start_ns: int,
        offset_ns: int,
        freq_ppm: float,
        wander: float,
        rng: random.Random,
    ) -> None:
        self.start_ns = start_ns
        self._rng = rng
        self._wander = wander
        # Per whole second k since start: phase U - T (ns) and frequency error, at its start.
        self._phase: list[float] = [float(offset_ns)]
        self._freq: list[float] = [freq_ppm * 1e-6]

    def _extend(self, k: int) -> None:
        phase, freq = self._phase, self._freq
        while len(phase) <= k:
            y = freq[-1]
            phase.append(phase[-1] + y * NS_PER_S)
            freq.append(y + self._wander * self._rng.gauss(0.0, 1.0) if self._wander else y)

    def _segment(self, true_ns: int) -> tuple[int, float, float]:
        k = max(0, (true_ns - self.start_ns) // NS_PER_S)
        self._extend(k)
        return k, self._phase[k], self._freq[k]

    def read(self, true_ns: int) -> int:
        """The oscillator's reading at true time ``true_ns``."""
        k, phase, y = self._segment(true_ns)
        into = true_ns - (self.start_ns + k * NS_PER_S)
        return true_ns + math.floor(phase + y * into + 0.5)

    def frequency(self, true_ns: int) -> float:
        """Fractional frequency error at ``true_ns`` (d(U - T)/dT)."""
        return self._segment(true_ns)[2]
