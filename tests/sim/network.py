"""One-way network paths: base delay plus exponential jitter, asymmetry and loss."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class PathSpec:
    """Delay model of a client-server pair (both directions), as chrony's clknetsim tests use."""

    base_delay_ns: int = 100_000  # each direction
    jitter_mean_ns: int = 100_000  # mean of the exponential part, each direction
    asymmetry_ns: int = 0  # added to client->server, subtracted from server->client base
    loss: float = 0.0  # probability that a packet (either direction) is lost
    popcorn: float = 0.0  # probability that a packet is queued ``popcorn_delay_ns`` longer
    popcorn_delay_ns: int = 200_000_000


class Path:
    """Draws delays and losses for one client-server pair from a seeded generator."""

    def __init__(self, spec: PathSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng

    def _delay(self, base_ns: int) -> int | None:
        spec = self.spec
        if spec.loss and self._rng.random() < spec.loss:
            return None
        jitter = (
            round(self._rng.expovariate(1.0 / spec.jitter_mean_ns)) if spec.jitter_mean_ns else 0
        )
        if spec.popcorn and self._rng.random() < spec.popcorn:
            jitter += spec.popcorn_delay_ns
        return max(1, base_ns + jitter)

    def to_server(self) -> int | None:
        """Delay of a request (ns), or None when it is lost."""
        return self._delay(self.spec.base_delay_ns + self.spec.asymmetry_ns)

    def to_client(self) -> int | None:
        """Delay of a response (ns), or None when it is lost."""
        return self._delay(self.spec.base_delay_ns - self.spec.asymmetry_ns)
