"""What the daemon asks of a clock, whatever the clock is.

The sync core decides; a backend carries the decision out.  ``measure`` carries out nothing
(and so is safe anywhere), ``system`` adjusts the kernel clock, ``simulated`` lives in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockState:
    """What other programs should learn about our sync state (kernel maxerror/esterror/leap)."""

    synchronized: bool
    max_error_ns: int  # root distance bound
    est_error_ns: int  # estimated error (jitter)
    leap: int  # 0 none, 1 insert, 2 delete, 3 unknown


class Clock(Protocol):
    """A clock the daemon reads and may correct."""

    mode: str  # "system" | "measure" | "simulated"

    def now_ns(self) -> int:
        """Current time, Unix nanoseconds, as the kernel's receive stamps count it."""
        ...

    def correct(self, offset_ns: int, *, step_allowed: bool) -> str:
        """Remove ``offset_ns`` (true time minus clock time) from the clock.

        Returns what was done: ``"step"``, ``"slew"`` or ``"none"`` (measure mode).
        """
        ...

    def publish_state(self, state: ClockState) -> None:
        """Tell the kernel (and so other programs) how well synchronized we are."""
        ...
