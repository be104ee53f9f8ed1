"""The system backend's clock_adjtime arguments, checked against a recording stand-in.

The stand-in replaces only the libc function pointer, so no test here can reach the host clock.
"""

from __future__ import annotations

import ctypes

import pytest

from tsyncd.clock.base import ClockState
from tsyncd.clock.linux import (
    ADJ_ESTERROR,
    ADJ_FREQUENCY,
    ADJ_MAXERROR,
    ADJ_NANO,
    ADJ_SETOFFSET,
    ADJ_STATUS,
    ADJ_TICK,
    STA_INS,
    STA_PLL,
    STA_UNSYNC,
    LinuxClock,
    Timex,
    setoffset_timeval,
    split_frequency,
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


def test_step() -> None:
    rec = Recorder()
    LinuxClock(rec).step(-300_000_000)
    assert rec.calls[0].modes == ADJ_SETOFFSET | ADJ_NANO
    assert (rec.calls[0].time.tv_sec, rec.calls[0].time.tv_usec) == (-1, 700_000_000)


@pytest.mark.parametrize(
    ("ppm", "tick", "freq"),
    [(0.0, 10_000, 0.0), (123.5, 10_001, 23.5), (-480.0, 9_995, 20.0), (83_333.0, 10_833, 33.0)],
)
def test_frequency_splits_into_tick_and_freq(ppm: float, tick: int, freq: float) -> None:
    t, f = split_frequency(ppm, 10_000)
    assert t == tick and f == pytest.approx(freq)
    assert abs(f) <= 500  # the kernel's ADJ_FREQUENCY limit


def test_set_frequency_writes_scaled_ppm_and_clamps() -> None:
    rec = Recorder()
    clock = LinuxClock(rec)
    assert clock.set_frequency(-123.5) == -123.5
    call = rec.calls[-1]
    assert call.modes == ADJ_FREQUENCY | ADJ_TICK
    nominal = call.tick + 1  # -123.5 ppm = one tick unit (100 ppm) down and -23.5 ppm
    assert call.freq == round(-23.5 * 65536) and nominal * 100 == 1_000_000
    assert clock.set_frequency(1e6) == 83_333.0
    assert clock.frequency_ppm == 83_333.0
    assert clock.host_offset_ns() == 0 and clock.from_kernel_ns(42) == 42


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
        LinuxClock(Recorder(rc=-1)).step(1000)
