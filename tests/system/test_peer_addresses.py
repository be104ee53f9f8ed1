"""Two tsyncd peers, each on the port of its own [[server]] listening on its own loopback
address: each peer's packets leave from that address, where the other one sends, so both hear
each other (QA s16 hunt-sync F3: sent from the routed 127.0.0.1, neither ever got a valid
packet, and the servers dropped the other's as ``not_client_mode``)."""

from __future__ import annotations

from typing import Any

from peers import Peers, Tsyncd, free_udp_port, wait_for


def peer_toml(our_ip: str, our_port: int, peer_ip: str, peer_port: int) -> str:
    return (
        "[synchronization]\nlocal-stratum = 8\nmin-sources = 2\n"
        f'[[server]]\nlisten = "{our_ip}:{our_port}"\n'
        f'[[source]]\nmode = "peer"\naddress = "{peer_ip}:{peer_port}"\n'
        f"local-port = {our_port}\nmin-poll = -3\nmax-poll = -3\n"
    )


def test_peers_on_their_servers_addresses_hear_each_other(peers: Peers) -> None:
    pa, pb = free_udp_port(), free_udp_port()
    a = peers.tsyncd("peer-a", peer_toml("127.0.0.7", pa, "127.0.0.8", pb))
    b = peers.tsyncd("peer-b", peer_toml("127.0.0.8", pb, "127.0.0.7", pa))
    for daemon in (a, b):

        def measured(d: Tsyncd = daemon) -> dict[str, Any] | None:
            rows = [r for r in d.ctl("peers") if r["packets_received"] >= 4]
            return rows[0] if rows else None

        row = wait_for("both peers to measure each other", measured, timeout=20)
        assert row["stratum"] == 8 and abs(row["offset"]) < 1e-3
        assert "not_client_mode" not in daemon.ctl("serverstats")["dropped_by_reason"]
