"""What the daemon asks of a clock, whatever the clock is.

The sync core decides; a backend carries the decision out.  There are two corrections, and
only two: a step (jump by an offset) and a frequency (run faster or slower than the
oscillator).  Phase is corrected by running the clock fast or slow for a while, as chrony and
ntpd-rs do, so the discipline always knows exactly what it has applied.

``system`` disciplines the kernel clock; ``measure`` keeps a virtual disciplined clock over the
host clock and never changes the host; ``simulated`` (tests) does the same over a simulated
oscillator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

MAX_SLEW_PPM: Final = 83_333.0  # chrony's default maxslewrate; Linux reaches it with tick


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
        """Current time of the disciplined clock, Unix nanoseconds."""
        ...

    def from_kernel_ns(self, kernel_ns: int) -> int:
        """Map a kernel CLOCK_REALTIME timestamp (e.g. SO_TIMESTAMPING) to this clock's time."""
        ...

    def step(self, offset_ns: int) -> None:
        """Jump the clock by ``offset_ns`` (positive: forward)."""
        ...

    def set_frequency(self, ppm: float) -> float:
        """Run ``ppm`` faster than the oscillator; returns the value applied (clamped)."""
        ...

    @property
    def frequency_ppm(self) -> float:
        """The frequency correction in force."""
        ...

    def host_offset_ns(self) -> int:
        """This clock minus the host's CLOCK_REALTIME now: 0 when we discipline the host."""
        ...

    def publish_state(self, state: ClockState) -> None:
        """Tell the kernel (and so other programs) how well synchronized we are."""
        ...
