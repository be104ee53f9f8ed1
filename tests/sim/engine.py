"""The event loop: true time, the client's virtual clock, packets in flight, per-second records.

Everything runs on one integer true-time axis (Unix ns).  The client is the real
``SyncCore`` with the real ``Discipline`` over a ``VirtualClock`` whose underlying clock is the
simulated oscillator, so every step and frequency the discipline orders changes what the client
reads, exactly as on a host.  The core's deadlines are client-clock times; they are turned into
true times by inverting oscillator and timescale (both monotone and piecewise linear).

Before each event the loop records every whole simulated second that has passed: the true offset
of the client clock (client minus true time) and its frequency error (client rate minus one).
Between events the clock's state is fixed, so those records are exact.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Final

from tsyncd.clock.measure import VirtualClock
from tsyncd.sync.core import SyncCore
from tsyncd.sync.discipline import ClockAction, Discipline, DisciplineConfig, Panic, Step
from tsyncd.wire.ntp import refid_for_address

from .network import Path, PathSpec
from .oscillator import Oscillator
from .servers import ServerSpec, SimServer

NS_PER_S: Final = 1_000_000_000
START_NS: Final = 1_800_000_000 * NS_PER_S  # 2027-01-15, an arbitrary Unix time


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSpec:
    """The simulated client: its oscillator and its tsyncd configuration."""

    offset_ns: int = 100_000_000  # client clock minus true time at start
    freq_ppm: float = 100.0  # oscillator frequency error (positive: runs fast)
    wander: float = 1e-9  # random-walk step of the frequency error per second
    min_poll: int = 6
    max_poll: int = 10
    iburst: bool = True
    min_sources: int = 1
    drift_ppm: float | None = None  # drift file contents (None: no drift file)
    discipline: DisciplineConfig = field(default_factory=DisciplineConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A named simulated setup (chrony's test.common defaults plus overrides)."""

    name: str
    description: str
    duration_s: int = 10_000
    stats_start_s: int = 210  # statistics from here on (chrony's max_sync_time)
    client: ClientSpec = field(default_factory=ClientSpec)
    servers: tuple[ServerSpec, ...] = (ServerSpec(name="ntp1"),)


@dataclass(slots=True)
class Trace:
    """Everything a run recorded."""

    scenario: Scenario
    seed: int
    offsets_ns: list[float] = field(default_factory=list)  # per second: client - true
    freq_errors: list[float] = field(default_factory=list)  # per second: rate - 1
    first_synchronized_s: float | None = None  # core reported synchronized
    selected: list[tuple[float, str | None]] = field(default_factory=list)  # changes
    polls: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # changes
    steps: list[tuple[float, int]] = field(default_factory=list)
    panics: list[tuple[float, str]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # requests the client sent
    requests: dict[str, list[float]] = field(default_factory=dict)  # arrival times at servers
    kods: dict[str, int] = field(default_factory=dict)
    updates: int = 0


class Simulation:
    """One run of a scenario with one seed."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        master = random.Random(seed)

        def sub() -> random.Random:
            return random.Random(master.getrandbits(64))

        self.now = START_NS
        c = scenario.client
        self.osc = Oscillator(
            start_ns=START_NS,
            offset_ns=c.offset_ns,
            freq_ppm=c.freq_ppm,
            wander=c.wander,
            rng=sub(),
        )
        self.clock = VirtualClock(lambda: self.osc.read(self.now))
        now_v = self.clock.now_ns()
        self.discipline = Discipline(c.discipline, initial_frequency_ppm=c.drift_ppm, now_ns=now_v)
        self.core = SyncCore(
            local_stratum=None,
            min_sources=c.min_sources,
            precision_log2=-20,
            discipline=self.discipline,
            now_ns=now_v,
        )
        self.servers: dict[str, SimServer] = {}
        self.paths: dict[str, Path] = {}
        for i, spec in enumerate(scenario.servers):
            self.core.add_source(
                spec.name,
                reference_id=refid_for_address(f"192.0.2.{100 + i}"),
                min_poll=c.min_poll,
                max_poll=c.max_poll,
                iburst=c.iburst,
                rng=sub(),
                now_ns=now_v,
            )
            self.servers[spec.name] = SimServer(spec, START_NS)
            self.paths[spec.name] = Path(spec.path, sub())
        self.trace = Trace(scenario=scenario, seed=seed)
        self._events: list[tuple[int, int, str, object]] = []
        self._seq = 0
        self._timer_gen = 0
        self._next_second = 0
        self._same_time_timers = 0

    # ---------------------------------------------------------------- time

    def _client_time(self, true_ns: int) -> int:
        return self.clock.timescale.time(self.osc.read(true_ns))

    def _true_time(self, client_ns: int) -> int:
        """Earliest true time (>= now) at which the client clock reads ``client_ns``."""
        t = self.now + (client_ns - self._client_time(self.now))
        for _ in range(6):
            err = client_ns - self._client_time(t)
            if err == 0:
                break
            t += err
        while self._client_time(t) < client_ns:
            t += 1
        while t - 1 >= self.now and self._client_time(t - 1) >= client_ns:
            t -= 1
        return max(t, self.now)

    def _record_until(self, true_ns: int) -> None:
        """Record every whole second strictly before ``true_ns``."""
        tr = self.trace
        while START_NS + self._next_second * NS_PER_S < true_ns:
            t = START_NS + self._next_second * NS_PER_S
            tr.offsets_ns.append(float(self._client_time(t) - t))
            rate = (1.0 + self.osc.frequency(t)) * (1.0 + self.clock.frequency_ppm * 1e-6)
            tr.freq_errors.append(rate - 1.0)
            self._next_second += 1

    # ---------------------------------------------------------------- events

    def _push(self, at_ns: int, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at_ns, self._seq, kind, payload))

    def _elapsed_s(self) -> float:
        return (self.now - START_NS) / NS_PER_S

    def run(self) -> Trace:
        """Run to the end of the scenario and return the trace."""
        end = START_NS + self.scenario.duration_s * NS_PER_S
        self._reschedule()
        while self._events and self._events[0][0] <= end:
            at, _, kind, payload = heapq.heappop(self._events)
            self._record_until(at)
            self.now = at
            if kind == "timer":
                if payload == self._timer_gen:
                    self._on_timer()
            elif kind == "to_server":
                self._on_server(*payload)  # type: ignore[misc]
            else:
                self._on_reply(*payload)  # type: ignore[misc]
        self._record_until(end + 1)
        tr = self.trace
        for name, server in self.servers.items():
            tr.requests[name] = [(t - START_NS) / NS_PER_S for t in server.request_times_ns]
            tr.kods[name] = server.kods_sent
        return tr

    def _reschedule(self) -> None:
        self._timer_gen += 1
        deadline = self.core.next_deadline_ns()
        if deadline is None:
            return
        at = self._true_time(deadline)
        if at <= self.now:
            self._same_time_timers += 1
            if self._same_time_timers > 1000:
                raise RuntimeError(f"sync core deadline {deadline} never advances")
        else:
            self._same_time_timers = 0
        self._push(at, "timer", self._timer_gen)

    def _on_timer(self) -> None:
        requests, actions = self.core.handle_timer(self.clock.now_ns())
        self._apply(actions)
        for name, data in requests:
            self.trace.sent[name] = self.trace.sent.get(name, 0) + 1
            self.core.handle_sent(name, self.clock.now_ns())
            delay = self.paths[name].to_server()
            if delay is not None:
                self._push(self.now + delay, "to_server", (name, data))
        self._observe()
        self._reschedule()

    def _on_server(self, name: str, data: bytes) -> None:
        server = self.servers[name]
        response = server.handle(data, self.now)
        if response is None:
            return
        delay = self.paths[name].to_client()
        if delay is not None:
            self._push(self.now + server.spec.processing_ns + delay, "to_client", (name, response))

    def _on_reply(self, name: str, data: bytes) -> None:
        actions = self.core.handle_reply(name, data, self.clock.now_ns())
        self._apply(actions)
        self._observe()
        self._reschedule()

    def _apply(self, actions: list[ClockAction]) -> None:
        for action in actions:
            if isinstance(action, Step):
                self.clock.step(action.offset_ns)
                self.trace.steps.append((self._elapsed_s(), action.offset_ns))
            elif isinstance(action, Panic):
                self.trace.panics.append((self._elapsed_s(), action.reason))
            else:
                self.clock.set_frequency(action.ppm)

    def _observe(self) -> None:
        tr = self.trace
        d = self.core.decision
        if d.synchronized and tr.first_synchronized_s is None:
            tr.first_synchronized_s = self._elapsed_s()
        if not tr.selected or tr.selected[-1][1] != d.selected:
            tr.selected.append((self._elapsed_s(), d.selected))
        for name, state in self.core.sources.items():
            hist = tr.polls.setdefault(name, [])
            poll = state.association.poll
            if not hist or hist[-1][1] != poll:
                hist.append((self._elapsed_s(), poll))
        tr.updates = self.discipline.snapshot().updates


def simulate(scenario: Scenario, seed: int) -> Trace:
    """Run ``scenario`` with ``seed``; deterministic."""
    return Simulation(scenario, seed).run()


__all__ = ["ClientSpec", "PathSpec", "Scenario", "ServerSpec", "Simulation", "Trace", "simulate"]
