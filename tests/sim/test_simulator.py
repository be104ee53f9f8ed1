"""The simulator's own parts: oscillator, network, servers, time inversion and determinism."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import statistics

import pytest

from tsyncd.servers.responder import AccessList, NtpResponder
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, kiss_code

from .engine import START_NS, Simulation, simulate
from .network import Path, PathSpec
from .oscillator import Oscillator
from .scenarios import chrony_2s, chrony_default, with_duration
from .servers import ServerSpec, SimServer

S = 1_000_000_000


def test_oscillator_without_wander_is_a_straight_line() -> None:
    osc = Oscillator(start_ns=0, offset_ns=5_000, freq_ppm=100.0, wander=0.0, rng=random.Random(1))
    assert osc.read(0) == 5_000
    assert osc.read(10 * S) == 10 * S + 5_000 + 1_000_000
    assert osc.read(10 * S + S // 2) == 10 * S + S // 2 + 5_000 + 1_050_000
    assert osc.frequency(123 * S) == pytest.approx(1e-4)


def test_oscillator_wander_is_a_random_walk_of_the_frequency() -> None:
    osc = Oscillator(start_ns=0, offset_ns=0, freq_ppm=0.0, wander=1e-9, rng=random.Random(2))
    steps = [osc.frequency((k + 1) * S) - osc.frequency(k * S) for k in range(20_000)]
    assert statistics.pstdev(steps) == pytest.approx(1e-9, rel=0.05)
    assert abs(statistics.fmean(steps)) < 3e-11
    # Continuous: the phase has no jumps at whole seconds.
    t = 777 * S
    assert abs(osc.read(t) - osc.read(t - 1) - 1) <= 1
    # Monotone and exactly linear inside a second.
    a, b, c = osc.read(t + 100), osc.read(t + S // 2), osc.read(t + S - 100)
    assert a < b < c
    assert abs((b - a) * (S - 200) - (c - a) * (S // 2 - 100)) <= 2 * S  # rounding: 1 ns


def test_path_delays_and_loss() -> None:
    path = Path(PathSpec(base_delay_ns=100_000, jitter_mean_ns=100_000, loss=0.2), random.Random(3))
    outs = [path.to_server() for _ in range(20_000)]
    delays = [d for d in outs if d is not None]
    assert len(delays) / len(outs) == pytest.approx(0.8, abs=0.02)
    assert min(delays) >= 100_000
    assert statistics.fmean(delays) == pytest.approx(200_000, rel=0.03)
    skewed = Path(PathSpec(jitter_mean_ns=0, asymmetry_ns=30_000), random.Random(4))
    assert (skewed.to_server(), skewed.to_client()) == (130_000, 70_000)


def request(transmit_ts: int = 0x1234_5678_9ABC_DEF0) -> bytes:
    return encode_ntp(
        NtpPacket(leap=Leap.NONE, version=4, mode=Mode.CLIENT, transmit_ts=transmit_ts)
    )


def test_server_answers_with_the_real_responder_on_its_own_clock() -> None:
    spec = ServerSpec(name="liar", offset_ns=250_000_000, processing_ns=1_000)
    server = SimServer(spec, START_NS)
    reply = decode_ntp(server.handle(request(), START_NS + 5 * S) or b"")
    assert reply.mode == Mode.SERVER and reply.stratum == 1 and reply.leap == Leap.NONE
    assert reply.origin_ts == 0x1234_5678_9ABC_DEF0
    # Its receive timestamp reads true time + 250 ms.
    expected = decode_ntp(
        NtpResponder(AccessList((), ())).handle_request(
            request(), ipaddress.ip_address("192.0.2.1"), START_NS + 5 * S + 250_000_000, 0
        )[1]
        or b""
    )
    assert reply.receive_ts == expected.receive_ts
    assert server.responder.sent == 1


def test_dead_server_is_silent_and_rate_limiter_kisses() -> None:
    dead = SimServer(ServerSpec(name="d", dies_at_s=10), START_NS)
    assert dead.handle(request(), START_NS + 9 * S) is not None
    assert dead.handle(request(), START_NS + 10 * S) is None
    strict = SimServer(ServerSpec(name="k", rate_interval_s=100, rate_burst=2), START_NS)
    answers = [strict.handle(request(i + 1), START_NS + i * S) for i in range(3)]
    kod = decode_ntp(answers[2] or b"")
    assert kiss_code(decode_ntp(answers[0] or b"")) is None
    assert kiss_code(kod) == "RATE" and kod.origin_ts == 3 and strict.kods_sent == 1
    # A token comes back after the interval.
    assert kiss_code(decode_ntp(strict.handle(request(9), START_NS + 200 * S) or b"")) is None


def test_client_deadlines_map_to_the_earliest_true_time() -> None:
    sim = Simulation(with_duration(chrony_default(), 100), seed=1)
    sim.clock.set_frequency(-50_000.0)  # a fast slew: client time runs 5 % slow
    target = sim.clock.now_ns() + 7 * S
    at = sim._true_time(target)
    assert sim._client_time(at) >= target > sim._client_time(at - 1)
    assert at - sim.now == pytest.approx(7 * S / 0.95 / 1.0001, rel=1e-3)


def test_same_seed_same_run_other_seed_other_run() -> None:
    scenario = with_duration(chrony_default(), 2_000)
    a, b, c = simulate(scenario, 11), simulate(scenario, 11), simulate(scenario, 12)
    assert a.offsets_ns == b.offsets_ns and a.freq_errors == b.freq_errors
    assert a.requests == b.requests and a.steps == b.steps
    assert a.offsets_ns != c.offsets_ns
    assert len(a.offsets_ns) == 2_001  # one record per simulated second, both ends included


def test_sourcestats_of_a_disciplined_clock_see_its_source_at_zero_frequency() -> None:
    """The source's sample history as the core keeps it (tsyncctl sourcestats): a client
    100 ppm fast, polling every 2 s.  The discipline runs the clock at
    -100 ppm; the source's frequency relative to it is 0 within the skew."""
    sim = Simulation(chrony_2s(120), 1)
    sim.run()
    history = sim.core.sources["ntp1"].history
    r = history.regression(sim.clock.now_ns())
    assert r.samples >= 32 and 0 < r.skew_ppm < 1.0
    assert abs(r.frequency_ppm) <= r.skew_ppm


def test_sourcestats_take_out_the_slew_of_the_first_offset() -> None:
    """Ten seconds in, the discipline is still slewing out the client's first 100 ms (at
    thousands of ppm): none of that may show as the source's frequency."""
    sim = Simulation(chrony_2s(10), 1)
    sim.run()
    r = sim.core.sources["ntp1"].history.regression(sim.clock.now_ns())
    assert r.samples >= 4 and abs(r.frequency_ppm) < 5.0


def test_sourcestats_move_their_samples_with_a_step() -> None:
    """A client 1 s off steps at its first update, with a sample of the source already held:
    that sample moves with the clock, or it would look like a second of frequency."""
    scenario = chrony_2s(10)
    scenario = dataclasses.replace(
        scenario, client=dataclasses.replace(scenario.client, offset_ns=S)
    )
    sim = Simulation(scenario, 1)
    sim.run()
    assert len(sim.trace.steps) == 1
    r = sim.core.sources["ntp1"].history.regression(sim.clock.now_ns())
    assert r.samples >= 4 and abs(r.frequency_ppm) < 5.0
    assert r.std_dev_ns is not None and r.std_dev_ns < 1_000_000
