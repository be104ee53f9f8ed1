"""Clock backends: system (Linux clock_adjtime), measure (virtual over the host clock)."""

from __future__ import annotations

from tsyncd.clock.base import Clock, ClockState

__all__ = ["Clock", "ClockState", "make_clock"]


def make_clock(mode: str) -> Clock:
    """The backend for a ``[clock] mode`` value."""
    if mode == "measure":
        from tsyncd.clock.measure import MeasureClock

        return MeasureClock()
    if mode == "system":
        from tsyncd.clock.linux import LinuxClock

        return LinuxClock()
    raise ValueError(f"unknown clock mode {mode!r}")
