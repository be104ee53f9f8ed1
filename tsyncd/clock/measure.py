"""The measure-only clock: reads the host clock, never changes it.

Tests, the demo and first trials use it: the daemon computes everything (offsets, selection,
what it would do) and reports the host clock's offset from true time, and no step, slew or
frequency change ever reaches the kernel.
"""

from __future__ import annotations

import time

from tsyncd.clock.base import ClockState


class MeasureClock:
    """Host CLOCK_REALTIME, read-only."""

    mode = "measure"

    def now_ns(self) -> int:
        """Unix nanoseconds from CLOCK_REALTIME."""
        return time.time_ns()

    def correct(self, offset_ns: int, *, step_allowed: bool) -> str:
        """Do nothing: measuring is the whole job."""
        return "none"

    def publish_state(self, state: ClockState) -> None:
        """Do nothing: the kernel's sync state belongs to whoever disciplines the clock."""
