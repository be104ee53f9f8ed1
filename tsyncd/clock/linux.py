"""The system clock backend: Linux ``clock_adjtime(CLOCK_REALTIME, ...)`` through ctypes.

Calls go through ``ctypes.CDLL(None)``, the process's own symbols, never ``libc.so.6`` by name:
a simulator or sandbox that interposes the clock functions must see every call
(ARCHITECTURE.md, "One libc").  ``struct timex`` offsets are from specs/ntpv4.md §14.

Steps use ADJ_SETOFFSET; frequency uses ADJ_FREQUENCY (fine, ±500 ppm) plus ADJ_TICK (coarse,
±10 %) so that phase can be slewed as fast as chrony does (its maxslewrate, 83333 ppm).  The
kernel PLL stays off (STA_PLL clear).  maxerror/esterror/STA_UNSYNC are published so that other
programs see whether the clock is synchronized.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Final, Protocol

from tsyncd.clock.base import MAX_SLEW_PPM, ClockState

CLOCK_REALTIME: Final = 0
ADJ_FREQUENCY: Final = 0x0002
ADJ_MAXERROR: Final = 0x0004
ADJ_ESTERROR: Final = 0x0008
ADJ_STATUS: Final = 0x0010
ADJ_SETOFFSET: Final = 0x0100
ADJ_NANO: Final = 0x2000
ADJ_TICK: Final = 0x4000
STA_PLL: Final = 0x0001
STA_INS: Final = 0x0010
STA_DEL: Final = 0x0020
STA_UNSYNC: Final = 0x0040
_NS_PER_S: Final = 1_000_000_000
_MAX_ERROR_US: Final = 16_000_000  # kernel treats > 16 s as unsynchronized
_SCALED_PPM: Final = 65536  # timex.freq unit: ppm * 2**16


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
        self._nominal_tick_us = 1_000_000 // os.sysconf("SC_CLK_TCK")
        self._freq_ppm = 0.0

    def now_ns(self) -> int:
        """Unix nanoseconds from CLOCK_REALTIME."""
        return time.time_ns()

    def from_kernel_ns(self, kernel_ns: int) -> int:
        """Kernel timestamps are this clock's own readings."""
        return kernel_ns

    def _call(self, tx: Timex) -> int:
        rc = self._adjtime(CLOCK_REALTIME, ctypes.byref(tx))
        if rc < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"clock_adjtime: {os.strerror(err)} (modes=0x{tx.modes:x})")
        return rc

    def read_frequency_ppm(self) -> float:
        """The kernel's current frequency correction (tick and freq), e.g. at start-up."""
        tx = Timex()
        self._call(tx)
        tick_ppm = (tx.tick - self._nominal_tick_us) * 1e6 / self._nominal_tick_us
        self._freq_ppm = tick_ppm + tx.freq / _SCALED_PPM
        return self._freq_ppm

    def step(self, offset_ns: int) -> None:
        """Jump the clock atomically with ADJ_SETOFFSET."""
        tx = Timex()
        tx.modes = ADJ_SETOFFSET | ADJ_NANO
        tx.time.tv_sec, tx.time.tv_usec = setoffset_timeval(offset_ns)
        self._call(tx)

    def set_frequency(self, ppm: float) -> float:
        """Set tick (coarse: 100 ppm a unit at HZ 100) and freq (fine, ±500 ppm)."""
        ppm = max(-MAX_SLEW_PPM, min(MAX_SLEW_PPM, ppm))
        tick, freq = split_frequency(ppm, self._nominal_tick_us)
        tx = Timex()
        tx.modes = ADJ_FREQUENCY | ADJ_TICK
        tx.tick = tick
        tx.freq = round(freq * _SCALED_PPM)
        self._call(tx)
        self._freq_ppm = ppm
        return ppm

    @property
    def frequency_ppm(self) -> float:
        """The frequency correction we last set (or read)."""
        return self._freq_ppm

    def host_offset_ns(self) -> int:
        """We are the host clock."""
        return 0

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


def split_frequency(ppm: float, nominal_tick_us: int) -> tuple[int, float]:
    """(tick in µs, freq in ppm) with freq inside ±500 ppm, the kernel's limit for ADJ_FREQUENCY.

    One tick unit changes the rate by 1e6/nominal_tick ppm (100 ppm at HZ = 100).
    """
    ppm_per_tick = 1e6 / nominal_tick_us
    ticks = round(ppm / ppm_per_tick)
    freq = ppm - ticks * ppm_per_tick
    return nominal_tick_us + ticks, freq
