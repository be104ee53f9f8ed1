"""The clock discipline in a closed loop with an exact simulated clock (no network, no noise
unless a test adds it): every action it returns is applied to a Timescale over an oscillator."""

from __future__ import annotations

import random

import pytest

from tsyncd.clock.timescale import Timescale
from tsyncd.sync.discipline import (
    ClockAction,
    Discipline,
    DisciplineConfig,
    Panic,
    SetFrequency,
    Step,
    seconds_text,
)

S = 1_000_000_000
T0 = 1_800_000_000 * S


class Loop:
    """True time, a free-running oscillator (offset, frequency error) and our clock over it."""

    def __init__(
        self,
        *,
        offset_ns: int = 0,
        freq_ppm: float = 0.0,
        config: DisciplineConfig | None = None,
        drift_ppm: float | None = None,
    ) -> None:
        self.true_ns = T0
        self.leap_ns = 0  # UTC minus the physical time that drives the oscillator
        self.offset_ns = offset_ns
        self.freq = freq_ppm * 1e-6
        self.clock = Timescale(self.osc())
        self.disc = Discipline(
            config or DisciplineConfig(), initial_frequency_ppm=drift_ppm, now_ns=self.now()
        )
        self.applied: list[ClockAction] = []
        self.run_timer()  # the start-up frequency

    def osc(self) -> int:
        return self.true_ns + self.offset_ns + round((self.true_ns - T0) * self.freq)

    def now(self) -> int:
        return self.clock.time(self.osc())

    def theta(self) -> int:
        """True time (UTC) minus our clock: what a perfect measurement gives."""
        return self.true_ns + self.leap_ns - self.now()

    def apply(self, actions: list[ClockAction]) -> list[ClockAction]:
        for a in actions:
            if isinstance(a, Step):
                self.clock.step(self.osc(), a.offset_ns)
            elif isinstance(a, SetFrequency):
                self.clock.set_frequency(self.osc(), a.ppm)
        self.applied.extend(actions)
        return actions

    def run_timer(self) -> list[ClockAction]:
        deadline = self.disc.next_deadline_ns()
        if deadline is None or deadline > self.now():
            return []
        return self.apply(self.disc.handle_timer(self.now()))

    def advance(self, seconds: float) -> None:
        """Let true time pass, running the discipline's timer when it is due."""
        end = self.true_ns + round(seconds * S)
        while True:
            deadline = self.disc.next_deadline_ns()
            if deadline is None:
                break
            # The clock runs at about the true rate: close enough to find the due time.
            due = self.true_ns + max(0, deadline - self.now())
            if due > end:
                break
            self.true_ns = due
            while self.now() < deadline:
                self.true_ns += max(1, (deadline - self.now()) // 2)
            self.run_timer()
        self.true_ns = end

    def update(self, *, noise_ns: int = 0, poll: int = 6, **kw: int) -> list[ClockAction]:
        return self.apply(
            self.disc.handle_offset(
                self.now(), self.theta() + noise_ns, error_ns=1000, poll_log2=poll, **kw
            )
        )


def test_first_timer_applies_the_drift_file_frequency() -> None:
    assert Loop(drift_ppm=12.5).applied == [SetFrequency(ppm=12.5)]
    assert Loop().applied == [SetFrequency(ppm=0.0)]
    loop = Loop()
    assert loop.disc.next_deadline_ns() is None
    assert loop.disc.handle_timer(loop.now()) == []


def test_large_first_offset_is_stepped_and_later_ones_are_not() -> None:
    loop = Loop(offset_ns=-2 * S)
    actions = loop.update()
    assert isinstance(actions[0], Step) and actions[0].offset_ns == 2 * S
    assert isinstance(actions[1], SetFrequency)
    assert abs(loop.theta()) < 1000
    snap = loop.disc.snapshot()
    assert snap.updates == 1 and snap.last_offset_ns == 2 * S


def test_offset_below_threshold_is_slewed_then_the_timer_ends_the_slew() -> None:
    loop = Loop(offset_ns=50_000_000)  # 50 ms: below chrony's 128 ms
    actions = loop.update()
    assert len(actions) == 1 and isinstance(actions[0], SetFrequency)
    assert actions[0].ppm < 0  # we are ahead: run slow
    assert abs(actions[0].ppm) <= DisciplineConfig().max_slew_ppm
    assert loop.disc.snapshot().residual_offset_ns != 0
    end = loop.disc.next_deadline_ns()
    assert end is not None
    loop.advance(600)
    assert loop.disc.next_deadline_ns() is None
    assert loop.applied[-1] == SetFrequency(ppm=loop.disc.frequency_ppm)
    # The slew corrected exactly what was asked, to the nanosecond or so.
    assert abs(loop.theta()) < 100


def test_step_limit_counts_updates() -> None:
    loop = Loop(config=DisciplineConfig(step_limit=1))
    loop.update()
    loop.offset_ns += S  # the oscillator jumps: 1 s off now, beyond the threshold
    assert loop.update() == []  # the first such offset is taken for a spike
    actions = loop.update()
    assert not any(isinstance(a, Step) for a in actions)
    assert isinstance(actions[0], SetFrequency) and actions[0].ppm == pytest.approx(
        -DisciplineConfig().max_slew_ppm
    )


def test_step_limit_minus_one_always_steps() -> None:
    loop = Loop(config=DisciplineConfig(step_limit=-1))
    for _ in range(5):
        loop.update()
        loop.advance(64)
    loop.offset_ns -= S
    assert loop.update() == []  # a spike, until the next offset confirms it
    loop.advance(64)
    actions = loop.update()
    assert isinstance(actions[0], Step) and actions[0].offset_ns == pytest.approx(S, abs=10_000)


def test_panic_refuses_huge_offsets_except_a_first_update_that_may_step() -> None:
    cfg = DisciplineConfig(panic_threshold_ns=1000 * S)
    loop = Loop(offset_ns=-5000 * S, config=cfg)
    actions = loop.update()
    assert isinstance(actions[0], Step) and actions[0].offset_ns == 5000 * S
    loop.advance(64)
    loop.offset_ns += 2000 * S
    actions = loop.update()
    assert len(actions) == 1 and isinstance(actions[0], Panic)
    assert "panic threshold" in actions[0].reason
    assert loop.disc.snapshot().state == "panic"
    # Without start-up steps even the first huge offset is refused.
    loop2 = Loop(offset_ns=-5000 * S, config=DisciplineConfig(step_limit=0))
    assert isinstance(loop2.update()[0], Panic)
    # No panic threshold: slew whatever it is.
    loop3 = Loop(
        offset_ns=-5000 * S, config=DisciplineConfig(step_limit=0, panic_threshold_ns=None)
    )
    assert isinstance(loop3.update()[0], SetFrequency)


def test_panic_names_the_threshold_as_configured() -> None:
    """0.3 s, not "0 s" (QA s16 hunt-sync F4); makestep (an external step) ends the panic."""
    loop = Loop(config=DisciplineConfig(panic_threshold_ns=300_000_000, step_limit=0))
    for _ in range(4):
        loop.update()
        loop.advance(16)
    loop.offset_ns -= 500_000_000
    (panic,) = loop.update()
    assert isinstance(panic, Panic) and loop.disc.panic == panic
    assert panic.reason == "offset +0.500 s exceeds the panic threshold 0.3 s"
    loop.disc.handle_external_step(loop.now(), 500_000_000)
    assert loop.disc.panic is None and loop.disc.snapshot().state != "panic"


@pytest.mark.parametrize(
    ("ns", "text"),
    [(300_000_000, "0.3"), (1000 * S, "1000"), (125_000, "0.000125"), (-1_500_000_000, "-1.5")],
)
def test_seconds_text_keeps_every_decimal_it_has(ns: int, text: str) -> None:
    assert seconds_text(ns) == text


@pytest.mark.parametrize("freq_ppm", [100.0, -37.5, 0.0])
def test_frequency_error_is_learned_and_offsets_vanish(freq_ppm: float) -> None:
    loop = Loop(offset_ns=3_000_000, freq_ppm=freq_ppm)
    for _ in range(20):
        loop.update()
        loop.advance(64)
    expected = -freq_ppm / (1 + freq_ppm * 1e-6)  # the correction that cancels the error
    assert loop.disc.frequency_ppm == pytest.approx(expected, abs=1e-3)
    assert abs(loop.theta()) < 1_000
    assert loop.disc.snapshot().state == "sync"
    assert loop.disc.skew_ppm < 0.01


def test_drift_estimate_is_limited() -> None:
    loop = Loop(freq_ppm=-800.0)
    for _ in range(10):
        loop.update()
        loop.advance(16)
    assert loop.disc.frequency_ppm == DisciplineConfig().max_frequency_ppm


def test_noisy_offsets_are_averaged() -> None:
    rng = random.Random(7)
    loop = Loop(freq_ppm=20.0)
    errors = []
    for i in range(200):
        loop.update(noise_ns=round(rng.gauss(0, 100_000)))
        loop.advance(16)
        if i >= 100:
            errors.append(loop.theta())
    rms = (sum(e * e for e in errors) / len(errors)) ** 0.5
    assert rms < 30_000  # well under the 100 µs noise of one sample
    assert loop.disc.frequency_ppm == pytest.approx(-20.0, abs=0.05)


def test_history_survives_a_step() -> None:
    loop = Loop(offset_ns=-10 * S, freq_ppm=50.0)
    loop.update()  # step
    for _ in range(6):
        loop.advance(16)
        loop.update()
    before = loop.disc.frequency_ppm
    assert before == pytest.approx(-50.0, abs=0.01)
    # An operator's makestep: the discipline is told and keeps its estimate.
    loop.offset_ns += 500_000_000
    stepped = loop.theta()
    loop.disc.handle_external_step(loop.now(), stepped)
    loop.clock.step(loop.osc(), stepped)
    loop.advance(16)
    loop.update()
    assert loop.disc.frequency_ppm == pytest.approx(before, abs=0.01)


def test_stale_sample_lands_where_it_was_measured() -> None:
    """A sample measured 200 s before it is handed on gives the same estimate as on time."""
    fresh = Loop(freq_ppm=30.0)
    stale = Loop(freq_ppm=30.0)
    for _ in range(8):
        fresh.update()
        stale.update()
        fresh.advance(64)
        stale.advance(64)
    measured_at = stale.now()
    theta = stale.theta()
    fresh.update()
    stale.advance(200)
    stale.apply(
        stale.disc.handle_offset(
            stale.now(), theta, error_ns=1000, poll_log2=6, measured_ns=measured_at
        )
    )
    assert stale.disc.frequency_ppm == pytest.approx(fresh.disc.frequency_ppm, abs=1e-4)


def test_leap_second_is_not_an_offset() -> None:
    loop = Loop(freq_ppm=10.0)
    for _ in range(8):
        loop.update()
        loop.advance(64)
    freq = loop.disc.frequency_ppm
    # The kernel inserts a second: our clock and UTC both go back by one second.
    loop.disc.handle_leap(loop.now(), -1)
    loop.clock.step(loop.osc(), -S)
    loop.leap_ns -= S
    loop.advance(64)
    actions = loop.update()
    assert not any(isinstance(a, (Step, Panic)) for a in actions)
    assert loop.disc.frequency_ppm == pytest.approx(freq, abs=1e-3)
    assert abs(loop.theta()) < 1_000


def test_poll_goes_up_when_steady_and_down_on_a_surprise() -> None:
    rng = random.Random(5)
    loop = Loop(freq_ppm=5.0)
    poll = 6
    for _ in range(120):
        loop.update(poll=poll, noise_ns=round(rng.gauss(0, 10_000)))
        poll = max(6, min(10, loop.disc.poll_log2))
        loop.advance(2**poll)
    assert poll > 6
    assert loop.disc.poll_log2 <= poll + 1  # never more than a step beyond what runs
    loop.offset_ns += 20_000_000  # the oscillator jumps: twice in a row, so not a spike
    loop.update(poll=poll)
    loop.advance(2**poll)
    loop.update(poll=poll)
    assert loop.disc.poll_log2 < poll


def test_one_outlier_is_ignored_two_agreeing_ones_restart() -> None:
    loop = Loop(freq_ppm=5.0)
    for _ in range(10):
        loop.update()
        loop.advance(64)
    freq = loop.disc.frequency_ppm
    updates = loop.disc.snapshot().updates
    assert loop.update(noise_ns=5_000_000) == []  # one 5 ms outlier: ignored
    assert loop.disc.snapshot().updates == updates
    loop.advance(64)
    loop.update()  # back to normal: the outlier is forgotten
    loop.advance(64)
    loop.offset_ns -= 5_000_000  # now the reference really moved
    assert loop.update() == []
    loop.advance(64)
    actions = loop.update()
    assert actions and isinstance(actions[0], SetFrequency)
    assert loop.disc.frequency_ppm == pytest.approx(freq, abs=0.01)  # kept as the prior
    loop.advance(600)
    assert abs(loop.theta()) < 10_000


def test_delay_weights_trust_the_fast_exchanges() -> None:
    """Offsets from slow exchanges (long queues) count less than those from fast ones."""
    rng = random.Random(3)
    loop = Loop()
    for _ in range(60):
        slow = rng.random() < 0.5
        # A slow exchange queued 2 ms more on the way out: its offset is off by ~1 ms.
        loop.update(noise_ns=-1_000_000 if slow else 0, delay_ns=2_200_000 if slow else 200_000)
        loop.advance(16)
    assert abs(loop.theta()) < 150_000


def test_snapshot_describes_the_state() -> None:
    loop = Loop(drift_ppm=3.0)
    snap = loop.disc.snapshot()
    assert snap.state == "fset" and snap.updates == 0 and snap.frequency_ppm == 3.0
    loop.update()
    loop.advance(64)
    loop.update()
    snap = loop.disc.snapshot()
    assert snap.updates == 2 and snap.state == "sync"
    assert snap.rms_offset_ns >= 0 and snap.poll_log2 in range(5, 8)


def test_forgotten_offsets_take_the_next_one_at_once_and_keep_the_frequency() -> None:
    """tsyncctl reset sources: after a resume the old offsets say nothing about the new one."""
    loop = Loop(freq_ppm=5.0)
    for _ in range(10):
        loop.update()
        loop.advance(64)
    freq = loop.disc.frequency_ppm
    loop.offset_ns -= 5_000_000  # the clock jumped while we slept
    loop.disc.forget_offsets(loop.now())
    actions = loop.update()  # no history to call it a spike: used at once
    assert actions and loop.disc.snapshot().updates == 11
    assert loop.disc.frequency_ppm == pytest.approx(freq, abs=0.01)  # kept as the prior
    loop.advance(600)
    assert abs(loop.theta()) < 10_000
