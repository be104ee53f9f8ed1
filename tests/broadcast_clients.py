"""chronyd as a broadcast server, tsyncd as its broadcast client, and what it measured."""

from __future__ import annotations

import json
from typing import Any

from peers import Chronyd, Peers, Tsyncd, free_udp_port, wait_for


def chronyd_broadcaster(
    peers: Peers, name: str, allow: str, *addresses: str, ports: tuple[int, int] | None = None
) -> tuple[Chronyd, int, int]:
    """chronyd at stratum 5 broadcasting every second to each of ``addresses`` and answering
    client requests from ``allow``: (chronyd, the broadcasts' port, its NTP port); ``ports``
    gives those two (the server started again), else they are free ones."""
    bport, server_port = ports or (free_udp_port(), free_udp_port())
    lines = [f"port {server_port}", f"allow {allow}", "local stratum 5"]
    lines += [f"broadcast 1 {address} {bport}" for address in addresses]
    return peers.chronyd(name, "\n".join(lines) + "\n"), bport, server_port


def broadcast_client(peers: Peers, name: str, address: str, **keys: object) -> Tsyncd:
    """tsyncd with one ``mode = "broadcast"`` source at ``address``; ``keys`` are more of its
    keys, snake_case for kebab-case (``broadcast_delay=0.5``)."""
    lines = ["[[source]]", 'mode = "broadcast"', f"address = {json.dumps(address)}"]
    for key, value in keys.items():
        text = str(value).lower() if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{key.replace('_', '-')} = {text}")
    return peers.tsyncd(name, "\n".join(lines) + "\n")


def selected(client: Tsyncd, received: int = 1) -> dict[str, Any] | None:
    """The client's selected source row once it has an offset from ``received`` packets."""
    rows = [
        r
        for r in client.ctl("peers")
        if r["state"] == "selected"
        and r["offset"] is not None
        and r["packets_received"] >= received
    ]
    return rows[0] if rows else None


def host_offset(client: Tsyncd) -> float:
    """The host clock's offset from the source as the client measured it, s.

    In measure mode the virtual clock follows the source (it steps by the first offset), so
    the peers row's offset shrinks; ``tracking``'s ``host_clock_offset`` keeps what was found.
    """
    tracking = wait_for(
        "a clock update", lambda: (t := client.ctl("tracking"))["clock_updates"] and t
    )
    offset: float = tracking["host_clock_offset"]
    return offset
