"""Named scenarios: chrony's simulation defaults (test/simulation/test.common) plus overrides.

chrony's defaults: client 0.1 s off and 100 ppm fast, frequency wander 1e-9 per second,
each way 100 µs of delay plus exponential jitter of mean 100 µs, one stratum-1 server, 10,000 s
simulated, statistics from 210 s (its ``max_sync_time``).  Our client polls 6..10 with iburst.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .engine import ClientSpec, Scenario
from .network import PathSpec
from .servers import ServerSpec

DEFAULT_DURATION_S = 10_000


def chrony_default(duration_s: int = DEFAULT_DURATION_S) -> Scenario:
    """chrony's default test: one server, default polling (64-1024 s), iburst."""
    return Scenario(
        name="chrony-default",
        description="0.1 s / 100 ppm off, 100 µs + exp(100 µs) each way, 1 server, poll 6..10",
        duration_s=duration_s,
    )


def chrony_2s(duration_s: int = DEFAULT_DURATION_S) -> Scenario:
    """The same at 2 s polling (minpoll = maxpoll = 1)."""
    return Scenario(
        name="chrony-2s-poll",
        description="as chrony-default, polling every 2 s (min = max poll 1)",
        duration_s=duration_s,
        client=ClientSpec(min_poll=1, max_poll=1),
    )


def falseticker(duration_s: int = DEFAULT_DURATION_S) -> Scenario:
    """Three good servers and one 0.5 s off: it must be voted out and never followed."""
    good = tuple(ServerSpec(name=f"good{i}") for i in range(1, 4))
    return Scenario(
        name="falseticker",
        description="3 good servers + 1 falseticker 0.5 s ahead",
        duration_s=duration_s,
        servers=(*good, ServerSpec(name="liar", offset_ns=500_000_000)),
    )


FAILOVER_DEATH_S = 3_000


def failover(duration_s: int = DEFAULT_DURATION_S) -> Scenario:
    """The system peer dies; the client must move to the other server and stay synchronized."""
    return Scenario(
        name="failover",
        description=f"2 servers, the first stops answering at {FAILOVER_DEATH_S} s",
        duration_s=duration_s,
        servers=(
            ServerSpec(name="dies", dies_at_s=FAILOVER_DEATH_S),
            ServerSpec(name="survives"),
        ),
    )


KOD_INTERVAL_S = 256.0


def kod_rate(duration_s: int = DEFAULT_DURATION_S) -> Scenario:
    """A server that answers faster polling with KoD RATE (a bucket of 4, one per 256 s)."""
    return Scenario(
        name="kod-rate",
        description=f"1 server rate-limiting to one request per {KOD_INTERVAL_S:.0f} s (KoD RATE)",
        duration_s=duration_s,
        stats_start_s=1000,  # polls of 256 s from ~200 s on: the frequency settles later
        servers=(ServerSpec(name="strict", rate_interval_s=KOD_INTERVAL_S, rate_burst=4),),
    )


def packet_loss(duration_s: int = DEFAULT_DURATION_S) -> Scenario:
    """chrony-default with 20 % of the packets lost in each direction."""
    return Scenario(
        name="loss-20%",
        description="as chrony-default, 20 % packet loss each way",
        duration_s=duration_s,
        stats_start_s=1000,  # three losses in a row make a source unusable for a while
        servers=(ServerSpec(name="ntp1", path=PathSpec(loss=0.2)),),
    )


def lan_first_sync(duration_s: int = 60) -> Scenario:
    """A LAN: 50 µs each way plus exp(10 µs); how soon does iburst make us synchronized?"""
    lan = PathSpec(base_delay_ns=50_000, jitter_mean_ns=10_000)
    return Scenario(
        name="lan-first-sync",
        description="LAN (50 µs + exp(10 µs) each way), iburst, default polling",
        duration_s=duration_s,
        stats_start_s=min(30, duration_s - 1),
        servers=(ServerSpec(name="lan", path=lan),),
    )


def with_duration(scenario: Scenario, duration_s: int) -> Scenario:
    """``scenario`` run for ``duration_s`` simulated seconds instead."""
    return dataclasses.replace(scenario, duration_s=duration_s)


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "chrony-default": chrony_default,
    "chrony-2s-poll": chrony_2s,
    "falseticker": falseticker,
    "failover": failover,
    "kod-rate": kod_rate,
    "loss-20%": packet_loss,
}
