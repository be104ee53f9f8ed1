"""The measure-only clock: a virtual disciplined clock over the host clock, which never changes.

Tests, the demo and first trials use it.  The daemon runs its whole discipline (steps,
frequency) against this virtual clock, exactly as it would against the kernel, and the host
clock's own offset from true time is the virtual clock's correction plus the measured offset
(``host_offset_ns``).  No step, slew or frequency change ever reaches the kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tsyncd.clock.base import MAX_SLEW_PPM, ClockState
from tsyncd.clock.timescale import Timescale


class VirtualClock:
    """A disciplined timescale over an underlying clock function (host or simulated)."""

    mode = "measure"

    def __init__(self, underlying_ns: Callable[[], int] = time.time_ns) -> None:
        self._underlying = underlying_ns
        self.timescale = Timescale(underlying_ns())

    def now_ns(self) -> int:
        """Disciplined Unix nanoseconds."""
        return self.timescale.time(self._underlying())

    def from_kernel_ns(self, kernel_ns: int) -> int:
        """The disciplined time at which the underlying clock read ``kernel_ns``."""
        return self.timescale.time(kernel_ns)

    def step(self, offset_ns: int) -> None:
        """Jump the virtual clock."""
        self.timescale.step(self._underlying(), offset_ns)

    def set_frequency(self, ppm: float) -> float:
        """Change the virtual clock's rate (clamped to the slew limit)."""
        ppm = max(-MAX_SLEW_PPM, min(MAX_SLEW_PPM, ppm))
        self.timescale.set_frequency(self._underlying(), ppm)
        return ppm

    @property
    def frequency_ppm(self) -> float:
        """The frequency correction in force."""
        return self.timescale.frequency_ppm

    def host_offset_ns(self) -> int:
        """Virtual minus underlying clock now."""
        u = self._underlying()
        return self.timescale.time(u) - u

    def publish_state(self, state: ClockState) -> None:
        """Nothing: the kernel's sync state belongs to whoever disciplines the host clock."""


class MeasureClock(VirtualClock):
    """The virtual clock over the host's CLOCK_REALTIME."""

    mode = "measure"

    def __init__(self) -> None:
        super().__init__(time.time_ns)
