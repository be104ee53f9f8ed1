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

        # The peer's packets reach the peer's association, none the server socket.  One may
        # have landed there at start-up, in the moment between the daemon binding its server
        # socket and its peer's: counted from now, the drops must not grow over 4 packets.
        def drops(d: Tsyncd = daemon) -> int:
            return int(d.ctl("serverstats")["dropped_by_reason"].get("not_client_mode", 0))

        before, heard = drops(), row["packets_received"]

        def four_more(d: Tsyncd = daemon, heard: int = heard) -> bool | None:
            rows = d.ctl("peers")
            return (rows and rows[0]["packets_received"] >= heard + 4) or None

        wait_for("four more packets from the peer", four_more, timeout=20)
        assert drops() == before
