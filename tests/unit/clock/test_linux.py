"""The system backend's clock_adjtime arguments, checked against a recording stand-in.

The stand-in replaces only the libc function pointer, so no test here can reach the host clock.
"""

from __future__ import annotations

import ctypes

import pytest

from tsyncd.clock.base import ClockState
from tsyncd.clock.linux import (
    ADJ_ESTERROR,
    ADJ_MAXERROR,
    ADJ_NANO,
    ADJ_OFFSET_SINGLESHOT,
    ADJ_SETOFFSET,
    ADJ_STATUS,
    STA_INS,
    STA_PLL,
    STA_UNSYNC,
    LinuxClock,
    Timex,
    setoffset_timeval,
)


class Recorder:
    def __init__(self, status: int = 0, rc: int = 0) -> None:
        self.calls: list[Timex] = []
        self.status = status
        self.rc = rc

    def __call__(self, clock_id: int, ref: object) -> int:
        assert clock_id == 0
        tx = ctypes.cast(ref, ctypes.POINTER(Timex)).contents  # type: ignore[call-overload]
        copy = Timex.from_buffer_copy(tx)
        self.calls.append(copy)
        if tx.modes == 0:
            tx.status = self.status
        return self.rc


def test_timex_layout_matches_the_kernel() -> None:
    assert ctypes.sizeof(Timex) == 208
    assert Timex.time.offset == 72 and Timex.tick.offset == 88 and Timex.tai.offset == 160


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(1_500_000_000, (1, 500_000_000)), (-300_000_000, (-1, 700_000_000)), (0, (0, 0))],
)
def test_setoffset_normalises_nanoseconds(offset: int, expected: tuple[int, int]) -> None:
    assert setoffset_timeval(offset) == expected


def test_step_and_slew() -> None:
    rec = Recorder()
    clock = LinuxClock(rec)
    assert clock.correct(-300_000_000, step_allowed=True) == "step"
    assert rec.calls[0].modes == ADJ_SETOFFSET | ADJ_NANO
    assert (rec.calls[0].time.tv_sec, rec.calls[0].time.tv_usec) == (-1, 700_000_000)
    assert clock.correct(2_000_000_000, step_allowed=False) == "slew"
    assert rec.calls[1].modes == ADJ_OFFSET_SINGLESHOT
    assert rec.calls[1].offset == 500_000  # clamped to the kernel's ±0.5 s


def test_publish_state_keeps_unrelated_status_bits() -> None:
    rec = Recorder(status=STA_PLL | STA_UNSYNC)
    LinuxClock(rec).publish_state(
        ClockState(synchronized=True, max_error_ns=3_000_000, est_error_ns=20_000, leap=1)
    )
    write = rec.calls[-1]
    assert write.modes == ADJ_STATUS | ADJ_MAXERROR | ADJ_ESTERROR
    assert write.status == STA_PLL | STA_INS
    assert (write.maxerror, write.esterror) == (3000, 20)


def test_errors_raise_oserror() -> None:
    with pytest.raises(OSError, match="clock_adjtime"):
        LinuxClock(Recorder(rc=-1)).correct(1000, step_allowed=False)
