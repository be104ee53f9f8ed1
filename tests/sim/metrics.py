"""Figures of merit of a run, as chrony's simulation tests compute them (test.common)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

from .engine import Trace

TIME_MAX_LIMIT_NS: Final = 1_000_000  # chrony: |offset| <= 1 ms once synchronized ...
FREQ_MAX_LIMIT: Final = 500e-6  # ... and |frequency error| <= 500 ppm


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """One run's figures (seconds, and ppm for frequencies)."""

    sync_time_s: float | None  # from then on always within the limits above; None: never
    first_synchronized_s: float | None  # when the sync core first reported synchronized
    rms_offset_s: float  # over [stats_start, end]
    max_offset_s: float
    rms_freq_ppm: float
    max_freq_ppm: float
    requests: int  # requests that reached the servers
    mean_interval_s: float  # mean interval between requests to one server


def sync_time_s(trace: Trace) -> float | None:
    """First whole second after which offset and frequency stay within chrony's limits."""
    last_bad = -1
    for i, (off, freq) in enumerate(zip(trace.offsets_ns, trace.freq_errors, strict=True)):
        if abs(off) > TIME_MAX_LIMIT_NS or abs(freq) > FREQ_MAX_LIMIT:
            last_bad = i
    if last_bad == len(trace.offsets_ns) - 1:
        return None
    return float(last_bad + 1)


def stats(trace: Trace, stats_start_s: int | None = None) -> Stats:
    """Figures of ``trace`` with statistics from ``stats_start_s`` (default: the scenario's)."""
    start = trace.scenario.stats_start_s if stats_start_s is None else stats_start_s
    offsets = trace.offsets_ns[start:]
    freqs = trace.freq_errors[start:]
    if not offsets:
        raise ValueError(f"the run is shorter than the statistics start ({start} s)")
    n = len(offsets)
    requests = sum(len(times) for times in trace.requests.values())
    servers = max(1, len(trace.requests))
    duration = len(trace.offsets_ns)
    return Stats(
        sync_time_s=sync_time_s(trace),
        first_synchronized_s=trace.first_synchronized_s,
        rms_offset_s=math.sqrt(sum(o * o for o in offsets) / n) * 1e-9,
        max_offset_s=max(abs(o) for o in offsets) * 1e-9,
        rms_freq_ppm=math.sqrt(sum(f * f for f in freqs) / n) * 1e6,
        max_freq_ppm=max(abs(f) for f in freqs) * 1e6,
        requests=requests,
        mean_interval_s=duration * servers / max(1, requests),
    )


def intervals_s(times_s: list[float]) -> list[float]:
    """Gaps between consecutive request arrival times."""
    return [b - a for a, b in itertools.pairwise(times_s)]
