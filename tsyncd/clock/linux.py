"""The system clock backend: Linux ``clock_adjtime(CLOCK_REALTIME, ...)`` through ctypes.

Calls go through ``ctypes.CDLL(None)``, the process's own symbols, never ``libc.so.6`` by name:
a simulator or sandbox that interposes the clock functions must see every call
(ARCHITECTURE.md, "One libc").  ``struct timex`` offsets are from specs/ntpv4.md §14.

This first backend steps with ADJ_SETOFFSET and slews with ADJ_OFFSET_SINGLESHOT (the kernel
slews such an offset at 500 ppm), and publishes maxerror/esterror/STA_UNSYNC so that other
programs see whether the clock is synchronized.  Frequency discipline comes with the sync engine.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Final, Protocol

from tsyncd.clock.base import ClockState

CLOCK_REALTIME: Final = 0
ADJ_OFFSET_SINGLESHOT: Final = 0x8001
ADJ_MAXERROR: Final = 0x0004
ADJ_ESTERROR: Final = 0x0008
ADJ_STATUS: Final = 0x0010
ADJ_SETOFFSET: Final = 0x0100
ADJ_NANO: Final = 0x2000
STA_PLL: Final = 0x0001
STA_INS: Final = 0x0010
STA_DEL: Final = 0x0020
STA_UNSYNC: Final = 0x0040
_NS_PER_S: Final = 1_000_000_000
_MAX_ERROR_US: Final = 16_000_000  # kernel treats > 16 s as unsynchronized


class Timeval(ctypes.Structure):
    """struct timeval; tv_usec carries nanoseconds with ADJ_NANO."""

    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class Timex(ctypes.Structure):
    """struct timex as on 64-bit Linux (208 bytes)."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


class ClockAdjtime(Protocol):
    """``int clock_adjtime(clockid_t, struct timex *)``."""

    def __call__(self, clock_id: int, timex: object, /) -> int: ...


def setoffset_timeval(offset_ns: int) -> tuple[int, int]:
    """(sec, nsec) for ADJ_SETOFFSET: nsec must lie in [0, 1e9), so -0.3 s is (-1, 700000000)."""
    sec, nsec = divmod(offset_ns, _NS_PER_S)
    return sec, nsec


class LinuxClock:
    """CLOCK_REALTIME, disciplined through clock_adjtime (needs CAP_SYS_TIME)."""

    mode = "system"

    def __init__(self, adjtime: ClockAdjtime | None = None) -> None:
        if adjtime is None:
            libc = ctypes.CDLL(None, use_errno=True)
            func = libc.clock_adjtime
            func.argtypes = (ctypes.c_int, ctypes.POINTER(Timex))
            func.restype = ctypes.c_int
            adjtime = func
        self._adjtime = adjtime

    def now_ns(self) -> int:
        """Unix nanoseconds from CLOCK_REALTIME."""
        return time.time_ns()

    def _call(self, tx: Timex) -> int:
        rc = self._adjtime(CLOCK_REALTIME, ctypes.byref(tx))
        if rc < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"clock_adjtime: {os.strerror(err)} (modes=0x{tx.modes:x})")
        return rc

    def correct(self, offset_ns: int, *, step_allowed: bool) -> str:
        """Step (when allowed) or slew the clock by ``offset_ns``."""
        tx = Timex()
        if step_allowed:
            tx.modes = ADJ_SETOFFSET | ADJ_NANO
            tx.time.tv_sec, tx.time.tv_usec = setoffset_timeval(offset_ns)
            self._call(tx)
            return "step"
        # The single-shot offset is in microseconds; the kernel clamps it to ±0.5 s.
        tx.modes = ADJ_OFFSET_SINGLESHOT
        tx.offset = max(-500_000, min(500_000, round(offset_ns / 1000)))
        self._call(tx)
        return "slew"

    def publish_state(self, state: ClockState) -> None:
        """Set maxerror/esterror and the STA_UNSYNC/INS/DEL bits."""
        tx = Timex()
        self._call(tx)  # read the current status word so unrelated bits survive
        status = tx.status & ~(STA_UNSYNC | STA_INS | STA_DEL)
        if not state.synchronized:
            status |= STA_UNSYNC
        elif state.leap == 1:
            status |= STA_INS
        elif state.leap == 2:
            status |= STA_DEL
        tx = Timex()
        tx.modes = ADJ_STATUS | ADJ_MAXERROR | ADJ_ESTERROR
        tx.status = status
        tx.maxerror = min(_MAX_ERROR_US, max(0, state.max_error_ns // 1000))
        tx.esterror = min(_MAX_ERROR_US, max(0, state.est_error_ns // 1000))
        self._call(tx)
