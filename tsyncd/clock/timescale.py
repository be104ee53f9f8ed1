"""A disciplined timescale over an undisciplined one: pure arithmetic, no clock reads.

The measure-only and simulated clocks both need "what would the clock read if our corrections
had been applied?": ``Timescale.time(u)`` maps a reading ``u`` of the underlying clock (host
CLOCK_REALTIME, or a simulated oscillator) to the disciplined time, piecewise linear:

    V(u) = v0 + (u - u0) * (1 + f * 1e-6)

Each command (step, frequency change) rebases ``(u0, v0)`` at the underlying time it takes
effect, so the mapping stays continuous under frequency changes and jumps only on a step.
Rounding is to the nearest nanosecond at each rebase.
"""

from __future__ import annotations

_PPM = 1e-6


class Timescale:
    """V(u): disciplined nanoseconds as a function of underlying nanoseconds."""

    def __init__(self, u0: int, v0: int | None = None) -> None:
        self._u0 = u0
        self._v0 = u0 if v0 is None else v0
        self._freq_ppm = 0.0

    @property
    def frequency_ppm(self) -> float:
        """The frequency correction in force (positive: the disciplined clock runs faster)."""
        return self._freq_ppm

    def time(self, u: int) -> int:
        """Disciplined time at underlying time ``u``."""
        du = u - self._u0
        return self._v0 + du + round(du * self._freq_ppm * _PPM)

    def _rebase(self, u: int) -> None:
        self._v0 = self.time(u)
        self._u0 = u

    def step(self, u: int, offset_ns: int) -> None:
        """From underlying time ``u`` on, the disciplined clock reads ``offset_ns`` later."""
        self._rebase(u)
        self._v0 += offset_ns

    def set_frequency(self, u: int, ppm: float) -> None:
        """From underlying time ``u`` on, run ``ppm`` faster than the underlying clock."""
        self._rebase(u)
        self._freq_ppm = ppm
