"""How long after a clock read a datagram leaves, learnt from the kernel's TX stamps, sans-IO.

A Transmit timestamp that a peer takes as a time (a server's basic reply, RFC 5905 §8; a
symmetric peer's basic packet, §9) should be the moment the packet leaves, yet it must be
written before the send.  ``SendLag`` learns the gap from a clock read to the kernel's software
TX stamp of the same datagram, so the IO edges can add it to their reading.  Its use by the
server, with the measurements behind the window and the slope, is in
``tsyncd/servers/latetx.py``; symmetric peers use the median only (``sync/symmetric.py``).
All times are ns of one clock (host or daemon): only differences are used.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SendLag"]

_CALIBRATE_EVERY_NS: Final = 10_000_000  # at most 100 stamped basic replies a second
_MAX_GAP_NS: Final = 1_000_000
_WINDOW: Final = 31  # gaps the median is taken over
_MAX_SLOPE: Final = 0.5  # at most this much more lag per ns of slower handling


class SendLag:
    """How long after the clock read a basic reply leaves, learnt from kernel TX stamps."""

    def __init__(self) -> None:
        self.lag_ns = 0  # add to the clock read before sending (0 until a stamp was seen)
        self.slope = 0.0  # more lag per ns of handling time above the median (``lag_for``)
        self._busy_ns = 0  # the window's median handling time
        self._busy_max_ns = 0  # and its longest
        self._gaps: list[int] = []  # the latest gaps, oldest first
        self._window: list[tuple[int, int]] = []  # the latest (handling ns, gap ns)
        self._next_ns = 0  # host ns of the next calibration

    def due(self, read_ns: int) -> bool:
        """Whether the reply read at ``read_ns`` (host ns) should be sent asking for a stamp."""
        if read_ns < self._next_ns:
            return False
        self._next_ns = read_ns + _CALIBRATE_EVERY_NS
        return True

    def lag_for(self, busy_ns: int) -> int:
        """The lag of a reply whose request took ``busy_ns`` from its RX stamp to the read."""
        if not 0 <= busy_ns <= _MAX_GAP_NS:
            return self.lag_ns
        # Never beyond the waits the slope was learnt from: a long wait under load is queueing
        # on a warm CPU, not a cold one.
        busy_ns = min(busy_ns, self._busy_max_ns)
        lag = self.lag_ns + int(self.slope * (busy_ns - self._busy_ns))
        return lag if 0 <= lag <= _MAX_GAP_NS else self.lag_ns

    def observe(self, read_ns: int, stamped_ns: int, busy_ns: int | None = None) -> None:
        """The reply whose clock was read at ``read_ns`` left at ``stamped_ns`` (host ns);
        ``busy_ns``: its request's RX stamp to that read (None: unknown, no slope learnt)."""
        gap = stamped_ns - read_ns
        if not 0 <= gap <= _MAX_GAP_NS:
            return
        gaps = self._gaps
        gaps.append(gap)
        if len(gaps) > _WINDOW:
            del gaps[0]
        self.lag_ns = sorted(gaps)[len(gaps) // 2]
        if busy_ns is None or not 0 <= busy_ns <= _MAX_GAP_NS:
            return
        window = self._window
        window.append((busy_ns, gap))
        if len(window) > _WINDOW:
            del window[0]
        self._learn_slope(sorted(window))

    def _learn_slope(self, by_busy: list[tuple[int, int]]) -> None:
        half = len(by_busy) // 2
        if half < 4:
            return
        quick, slow = by_busy[:half], by_busy[-half:]
        self._busy_ns = by_busy[half][0]
        self._busy_max_ns = by_busy[-1][0]
        d_busy = _median([b for b, _ in slow]) - _median([b for b, _ in quick])
        d_gap = _median([g for _, g in slow]) - _median([g for _, g in quick])
        self.slope = min(_MAX_SLOPE, max(0.0, d_gap / d_busy)) if d_busy > 0 else 0.0


def _median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2]
