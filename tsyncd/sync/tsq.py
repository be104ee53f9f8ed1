"""TSQ measurements, sans-IO: a reply and our T1/T4 in, a checked sample out; and how a
one-shot tool combines several samples.

Theory of operation
-------------------
The reference clients check nothing (shared/specs/tsq.md §6, §11.1 items 2 and 7).  We run the
draft's checks (§6.6) in a fixed order, each with a stable reason a counter can carry:

1. ``error_reply``: the server answered with an Error TLV;
2. ``bad_nonce``: the echoed nonce is not the one we sent (a stale or forged reply);
3. ``t3_before_t2``: the server claims to have sent before it received;
4. ``negative_delay``: the round trip minus the server's time is below zero, beyond the
   clock's precision -- the timestamps are not consistent, so the offset cannot be trusted.

Offsets and delays are the NTP formulas (RFC 5905 §8) on raw 64-bit timestamps subtracted
first, so they are right across the 2036 era boundary (spec §3.3: the reference ignores eras).

Combining (``combine``): the reference takes a plain median of every offset pooled across
servers, or a plain mean.  A sample's offset error is bounded by half its delay, and queueing
only ever adds delay, so we keep the samples whose delay is within twice the minimum (plus
the precision floor) and take their delay-weighted mean (weights 1/delay²): the shortest,
least-queued round trips dominate, and a slow outlier cannot pull the result as it pulls a
median of few samples.

Several servers (``select_servers``): pooling every server's samples into one mean lets a
server whose clock is wrong (a falseticker) pull the result to a time no server gave, by far
more than it pulls a median.  So, as chronyd and ntpd (and ntpdate) do, each server is first
estimated on its own (``combine`` of its samples), then only the servers that agree are kept:
RFC 5905 §11.2.1's interval intersection (Marzullo's algorithm), the daemon's own
``sync/select.intersect``, where a majority must agree.  Each server's correctness interval is
its offset ± (half the longest round trip ``combine`` kept, which bounds the offset's error
from path asymmetry, plus ``SERVER_ERROR_NS`` for the server's own error).  Then the agreeing
servers' samples are combined as above.  With no majority there is no offset to give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from tsyncd.sync.select import Contender, intersect
from tsyncd.wire.timestamps import ntp64_diff_ns, ntp64_from_unix_ns
from tsyncd.wire.tsq import TsqErrorReply, TsqResponse

__all__ = [
    "SERVER_ERROR_NS",
    "Agreement",
    "Combined",
    "Rejected",
    "ServerEstimate",
    "TsqSample",
    "combine",
    "evaluate",
    "select_servers",
]

_DELAY_FLOOR_NS: Final = 1_000  # 1 µs: below this, delays are clock-reading noise
# The allowance for a server's own error in its correctness interval.  A basic TSQ reply
# carries no root delay or dispersion (only the optional Clock Quality TLV would), so we
# cannot know how far the server is from UTC.  1 ms is ntpd's default ``tos mindist``, the
# smallest correctness-interval half-width its selection uses, chosen for the same reason:
# servers that differ by less than this on a fast LAN (or loopback, delays of tens of µs)
# are honest and must not be called falsetickers for their own small errors, while a
# server wrong by tens of ms stays far outside.  Over the Internet half the round trip
# (milliseconds) dominates it.
SERVER_ERROR_NS: Final = 1_000_000


class Rejected(Exception):
    """A reply that cannot give a sample; ``reason`` is a stable snake_case label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class TsqSample:
    """One checked TSQ exchange; integer ns."""

    offset_ns: int  # theta: server minus us (positive: we are behind)
    delay_ns: int  # delta: round trip minus the server's processing time
    t1_ns: int  # our Unix ns when the request left
    t4_ns: int  # our Unix ns when the reply arrived
    t2: int  # server receive, raw NTP 64-bit
    t3: int  # server send, raw NTP 64-bit


def evaluate(
    reply: TsqResponse | TsqErrorReply,
    *,
    nonce: bytes,
    t1_ns: int,
    t4_ns: int,
    precision_ns: int = _DELAY_FLOOR_NS,
) -> TsqSample:
    """Check ``reply`` against the request we sent (``nonce``, T1) and T4; raise ``Rejected``."""
    if isinstance(reply, TsqErrorReply):
        raise Rejected("error_reply", f"server error {reply.code}: {reply.reason}")
    if reply.nonce != nonce:
        raise Rejected("bad_nonce", "the reply echoes another nonce than the one we sent")
    t1 = ntp64_from_unix_ns(t1_ns)
    t4 = ntp64_from_unix_ns(t4_ns)
    busy = ntp64_diff_ns(reply.send_ts, reply.receive_ts)
    if busy < 0:
        raise Rejected("t3_before_t2", f"server send time is {-busy} ns before its receive time")
    delay = (t4_ns - t1_ns) - busy
    if delay < -precision_ns:
        raise Rejected("negative_delay", f"round trip minus server time is {delay} ns")
    offset = (ntp64_diff_ns(reply.receive_ts, t1) + ntp64_diff_ns(reply.send_ts, t4)) // 2
    return TsqSample(
        offset_ns=offset,
        delay_ns=max(delay, 0),
        t1_ns=t1_ns,
        t4_ns=t4_ns,
        t2=reply.receive_ts,
        t3=reply.send_ts,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Combined:
    """Several samples made into one offset."""

    offset_ns: int
    delay_ns: int  # the smallest delay seen
    used: int  # samples that passed the delay filter
    total: int  # samples offered
    # the most the offset can be off the server's clock through path asymmetry: half the
    # longest kept round trip (each sample is within half its delay, so is their mean)
    error_ns: int


def combine(samples: Sequence[TsqSample]) -> Combined:
    """Delay-filtered, 1/delay²-weighted mean of the offsets (see the module docstring)."""
    if not samples:
        raise ValueError("no samples to combine")
    floor = max(min(s.delay_ns for s in samples), _DELAY_FLOOR_NS)
    kept = [s for s in samples if s.delay_ns <= 2 * floor]
    weights = [1.0 / max(s.delay_ns, _DELAY_FLOOR_NS) ** 2 for s in kept]
    offset = sum(w * s.offset_ns for w, s in zip(weights, kept, strict=True)) / sum(weights)
    return Combined(
        offset_ns=round(offset),
        delay_ns=min(s.delay_ns for s in samples),
        used=len(kept),
        total=len(samples),
        error_ns=-(-max(max(s.delay_ns for s in kept), _DELAY_FLOOR_NS) // 2),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerEstimate:
    """One server's samples combined on their own, and its correctness interval."""

    name: str
    combined: Combined
    distance_ns: int  # half-width of the interval: combined.error_ns + the server allowance
    used: bool  # its samples went into the result
    falseticker: bool  # left out: its offset is outside the interval the majority shares


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """The servers that agree, and their samples combined into one offset."""

    servers: tuple[ServerEstimate, ...]  # every server with samples, in input order
    combined: Combined | None  # the agreeing servers' samples; None: no majority agrees
    low_ns: int  # the interval the majority shares (0 when there is none)
    high_ns: int

    @property
    def agreeing(self) -> tuple[ServerEstimate, ...]:
        return tuple(e for e in self.servers if e.used)


def select_servers(
    samples: Sequence[tuple[str, Sequence[TsqSample]]], *, server_error_ns: int = SERVER_ERROR_NS
) -> Agreement:
    """Keep the servers that agree (RFC 5905 §11.2.1), then combine their samples.

    ``samples`` pairs each server's name with its samples; servers without samples are
    skipped.  A majority of the servers left must share a stretch of their correctness
    intervals [offset - distance, offset + distance] with their offsets inside it (see the
    module docstring); those outside are falsetickers.  With no majority (two servers that
    disagree, say) no server is used and ``combined`` is None: the caller must not adjust a
    clock to any mean of them.
    """
    answered = [(name, list(s)) for name, s in samples if s]
    if not answered:
        raise ValueError("no samples to select from")
    estimates = [combine(s) for _, s in answered]
    # Contenders are named by position: the same server may be given twice.
    contenders = [
        Contender(
            name=str(i),
            offset_ns=c.offset_ns,
            root_distance_ns=c.error_ns + server_error_ns,
            stratum=0,
            jitter_ns=0,
        )
        for i, c in enumerate(estimates)
    ]
    found = intersect(contenders)
    agree = set(found.truechimers) if found else set()
    servers = tuple(
        ServerEstimate(
            name=name,
            combined=c,
            distance_ns=k.root_distance_ns,
            used=k.name in agree,
            falseticker=found is not None and k.name not in agree,
        )
        for (name, _), c, k in zip(answered, estimates, contenders, strict=True)
    )
    pooled = [
        x for (_, s), k in zip(answered, contenders, strict=True) if k.name in agree for x in s
    ]
    return Agreement(
        servers=servers,
        combined=combine(pooled) if pooled else None,
        low_ns=found.low_ns if found else 0,
        high_ns=found.high_ns if found else 0,
    )
