"""Glue between the config, the responders and the snapshots: policy in, counters out.

Counters come as plain dicts (``NtpResponder.counters``) so that worker processes can ship
them over a pipe; here they are summed into the one ``ServerStatsSnapshot`` control and
metrics read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tsyncd.config import ServerConfig
from tsyncd.servers.responder import ServerPolicy
from tsyncd.snapshots import ServerStatsSnapshot

if TYPE_CHECKING:
    from tsyncd.symkey import SymmetricKey

_SUMMED = (
    "received",
    "sent",
    "answered",
    "interleaved_answered",
    "kod_sent",
    "dropped",
    "clients",
    "clients_evicted",
)
NTS_SUMMED = ("nts_requests", "nts_naks", "nts_cookies_issued")


def server_policy(
    cfg: ServerConfig, symmetric_keys: Mapping[int, SymmetricKey] | None = None
) -> ServerPolicy:
    """The responder policy a ``[[server]]`` table asks for, with the ``[keys]`` keys."""
    return ServerPolicy(
        rate_limit=cfg.rate_limit,
        kod=cfg.kod,
        interleaved=cfg.interleaved,
        max_clients=cfg.max_clients,
        symmetric_keys=symmetric_keys,
    )


def sum_counters(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add up counter dicts (one per socket or worker), drops merged by reason."""
    total: dict[str, Any] = {key: 0 for key in _SUMMED}
    drops: dict[str, int] = {}
    extra: dict[str, int] = {"workers": 0, "worker_restarts": 0}
    extra.update(dict.fromkeys(NTS_SUMMED, 0))  # NTS on the workers' packet path
    for part in parts:
        for key in _SUMMED:
            total[key] += int(part.get(key, 0))
        for key in extra:
            extra[key] += int(part.get(key, 0))
        for reason, count in dict(part.get("dropped_by_reason", {})).items():
            drops[reason] = drops.get(reason, 0) + int(count)
    total["dropped_by_reason"] = drops
    total.update(extra)
    return total


def server_stats(listen: list[str], parts: Iterable[Mapping[str, Any]]) -> ServerStatsSnapshot:
    """One snapshot over every server socket."""
    total = sum_counters(parts)
    return ServerStatsSnapshot(listen=listen, **total)


def distinct_clients(logs: Iterable[tuple[Iterable[str], int]]) -> int:
    """How many different clients several client logs hold, each given as (its keys, how
    many more clients whose keys are not known): a client met on two sockets counts once.

    Keys are the address texts sockets report; an IPv4 client on a dual-stack socket
    (``::ffff:192.0.2.1``) is the same as on an IPv4 one (``192.0.2.1``).
    """
    seen: set[str] = set()
    unknown = 0
    for keys, more in logs:
        seen.update(k[7:] if k.startswith("::ffff:") and "." in k else k for k in keys)
        unknown += more
    return len(seen) + unknown


def merge_client_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per client address, busiest first.

    The same address can appear in several workers (or sockets): counts add up, the last
    request is the latest, and request rates add (intervals combine harmonically).
    """
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        address = str(row["address"])
        into = merged.get(address)
        if into is None:
            merged[address] = dict(row)
            continue
        for key in ("received", "answered", "interleaved", "dropped", "kod_sent"):
            into[key] = int(into[key]) + int(row[key])
        into["last_rx"] = min(float(into["last_rx"]), float(row["last_rx"]))
        rates = [1.0 / float(i) for i in (into["interval"], row["interval"]) if i]
        into["interval"] = 1.0 / sum(rates) if rates else None
    return sorted(merged.values(), key=lambda r: -int(r["received"]))
