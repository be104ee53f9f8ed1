"""The disciplined timescale and the virtual (measure-mode) clock over it."""

from __future__ import annotations

import pytest

from tsyncd.clock.measure import VirtualClock
from tsyncd.clock.timescale import Timescale

S = 1_000_000_000


def test_identity_until_commanded() -> None:
    ts = Timescale(5 * S)
    assert ts.time(5 * S) == 5 * S and ts.time(17 * S + 3) == 17 * S + 3


def test_step_and_frequency_are_piecewise_linear_and_continuous() -> None:
    ts = Timescale(0)
    ts.set_frequency(10 * S, 100.0)  # from u = 10 s, run 100 ppm fast
    assert ts.time(10 * S) == 10 * S  # continuous at the change
    assert ts.time(20 * S) == 20 * S + 1_000_000  # 10 s * 100 ppm = 1 ms
    ts.step(20 * S, -250)
    assert ts.time(20 * S) == 20 * S + 1_000_000 - 250
    ts.set_frequency(30 * S, 0.0)
    v30 = 30 * S + 2_000_000 - 250
    assert ts.time(30 * S) == v30 and ts.time(40 * S) == v30 + 10 * S
    assert ts.frequency_ppm == 0.0


def test_virtual_clock_never_touches_its_underlying_clock() -> None:
    now = [1_000 * S]
    clock = VirtualClock(lambda: now[0])
    clock.step(50_000)
    assert clock.set_frequency(-20.0) == -20.0
    now[0] += 100 * S
    assert clock.now_ns() == 1_100 * S + 50_000 - 2_000_000
    assert clock.host_offset_ns() == 50_000 - 2_000_000
    assert clock.from_kernel_ns(1_000 * S) == 1_000 * S + 50_000
    assert clock.set_frequency(1e9) == pytest.approx(83_333.0)
