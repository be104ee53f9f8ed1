"""Per-client server state: a bounded log with chrony-style rate limiting, sans-IO.

Theory of operation
-------------------
Each client IP gets one ``ClientRecord`` the first time it sends us anything.  The record holds
what the server must remember about that client: a token bucket for rate limiting, whether the
access list lets it in (decided once, when the record is made, so the per-packet path never
parses an address; judged again only when the rules change, ``NtpResponder.set_access``), and
counters for ``tsyncctl clients``.

Rate limiting follows RFC 8633 §5 as chrony does it (``ratelimit interval burst leak``):

* the bucket fills at one token per ``2**interval_log2`` seconds, up to ``burst`` tokens, and
  starts full, so a client's first ``burst`` requests are never punished;
* each request takes a token; a request finding the bucket empty is *limited*;
* a limited request is still answered with probability ``2**-leak`` (chrony's "leak"): a
  spoofed flood from a victim's address then cannot cut the victim off completely.  ``leak =
  0`` answers none (tsyncd's own: chrony's smallest leak is 1, one in two).

The log is bounded: at ``max_clients`` the oldest record (by creation) is forgotten.  A
forgotten heavy client starts again with a full bucket; that is the price of a fixed memory
bound, and it is the same trade chrony's fixed-size client table makes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

NS_PER_S: Final = 1_000_000_000
# chronyd's default client log (clientloglimit 524288 bytes) holds "about four thousand
# clients"; ours costs about 240 bytes each (1 MB per worker when full), where 65,536 per worker
# let a public server's workers grow by 16 MB each.
DEFAULT_MAX_CLIENTS: Final = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """chrony's ``ratelimit``: a bucket of ``burst`` tokens refilled every 2**interval s."""

    interval_log2: int = 3  # log2 s between requests a client may send on average
    burst: int = 8  # requests a client may send at once (also its first requests)
    leak_log2: int = 2  # a limited request is still answered with probability 2**-leak; 0: never

    @property
    def interval_ns(self) -> int:
        """Refill period of one token, ns."""
        return round(NS_PER_S * 2.0**self.interval_log2)


class ClientRecord:
    """What the server remembers about one client IP (mutable state, not a message)."""

    __slots__ = (
        "address",
        "answered",
        "dropped",
        "first_ns",
        "interleaved",
        "kod_ns",
        "kod_sent",
        "last_ns",
        "pairs",
        "permitted",
        "received",
        "tokens_ns",
    )

    def __init__(self, address: str, permitted: str, now_ns: int, burst_ns: int) -> None:
        self.address = address  # the key: the address text as the socket reported it
        self.permitted = permitted  # "" if served, else the drop reason ("denied"/"restricted")
        self.first_ns = now_ns
        self.last_ns = now_ns
        self.tokens_ns = burst_ns  # bucket level in ns of credit (interval_ns per request)
        self.kod_ns: int | None = None  # when we last sent this client a KoD
        self.received = 0
        self.answered = 0  # responses with time (basic or interleaved)
        self.interleaved = 0  # of which interleaved
        self.dropped = 0
        self.kod_sent = 0
        # The RX stamps naming its interleaved-mode pairs, oldest first (responder.py), once
        # it interleaves.
        self.pairs: list[int] | None = None


class ClientLog:
    """Bounded map from client address text to ``ClientRecord``."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be positive, not {max_clients}")
        self.max_clients = max_clients
        self.records: dict[str, ClientRecord] = {}
        self.evicted = 0

    def add(self, record: ClientRecord) -> ClientRecord:
        """Insert a new record, forgetting the oldest one when full."""
        records = self.records
        if len(records) >= self.max_clients:
            del records[next(iter(records))]
            self.evicted += 1
        records[record.address] = record
        return record

    def __len__(self) -> int:
        return len(self.records)


def client_rows(
    log: ClientLog, now_ns: int, limit: int = 1000, show: Callable[[str], str] = str
) -> list[dict[str, Any]]:
    """The busiest ``limit`` clients as plain data, for ``tsyncctl clients``; ``show`` turns
    a record's address key into what is shown."""
    records = heapq.nlargest(limit, log.records.values(), key=lambda r: r.received)
    return [
        {
            "address": show(r.address),
            "received": r.received,
            "answered": r.answered,
            "interleaved": r.interleaved,
            "dropped": r.dropped,
            "kod_sent": r.kod_sent,
            "last_rx": max(0, now_ns - r.last_ns) * 1e-9,
            "interval": (r.last_ns - r.first_ns) * 1e-9 / (r.received - 1)
            if r.received > 1
            else None,
        }
        for r in records
    ]


def refill(record: ClientRecord, limit: RateLimit, now_ns: int) -> int:
    """Credit ``record``'s bucket with the time since its last packet, up to the burst, and
    move that mark to ``now_ns``; the tokens (ns) it holds now.

    Every packet from the client's address moves the mark (``last_ns`` is also its last
    request for ``tsyncctl clients``), so every packet credits the time first: a dropped one
    (ntpq's mode 6, junk) moving it without credit took the client's refill away, and
    probes every few seconds kept a client limited for good (QA s18 hunt-server-policy F4).
    """
    cap = limit.interval_ns * limit.burst
    tokens = record.tokens_ns + max(0, now_ns - record.last_ns)
    record.tokens_ns = tokens = min(tokens, cap)
    record.last_ns = now_ns
    return tokens


def take_token(record: ClientRecord, limit: RateLimit, now_ns: int) -> bool:
    """Refill ``record``'s bucket up to ``now_ns`` and take one token; False if it was empty."""
    interval = limit.interval_ns
    # refill(), inlined: this is on the per-packet path of a rate-limited server.
    tokens = record.tokens_ns + max(0, now_ns - record.last_ns)
    cap = interval * limit.burst
    if tokens > cap:
        tokens = cap
    record.last_ns = now_ns
    if tokens >= interval:
        record.tokens_ns = tokens - interval
        return True
    record.tokens_ns = tokens
    return False
