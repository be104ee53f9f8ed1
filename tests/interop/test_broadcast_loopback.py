"""Broadcast mode on loopback (127.255.255.255 is lo's broadcast address): tsyncd as a
broadcast client of real chronyd's ``broadcast``, and of tsyncd's own broadcast server."""

from __future__ import annotations

import textwrap
from typing import Any

from peers import Peers, Tsyncd, free_udp_port, wait_for


def _broadcast_client(peers: Peers, port: int, min_poll: int) -> Tsyncd:
    return peers.tsyncd(
        "tsyncd-bclient",
        textwrap.dedent(
            f"""
            [[source]]
            mode = "broadcast"
            address = "127.0.0.1:{port}"
            broadcast-delay = 0.00005
            min-poll = {min_poll}
            max-poll = {min_poll}
            """
        ),
    )


def _selected(client: Tsyncd) -> dict[str, Any] | None:
    rows = [
        r for r in client.ctl("peers") if r["state"] == "selected" and r["packets_received"] >= 3
    ]
    return rows[0] if rows else None


def test_tsyncd_listens_to_chronyd_broadcasts(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd(
        "chronyd-bserver",
        f"port {free_udp_port()}\nlocal stratum 5\nbroadcast 1 127.255.255.255 {port}\n",
    )
    client = _broadcast_client(peers, port, 0)
    row = wait_for("tsyncd to select chronyd's broadcasts", lambda: _selected(client), 30)
    assert row["mode"] == "broadcast" and row["stratum"] == 5
    assert row["packets_dropped"] == 0
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
    assert client.ctl("status")["stratum"] == 6

    # tsyncctl burst: nothing to send, so skipped, and reach left alone (QA s19: each burst
    # shifted a 0 into it; nine made 377 into 20, and the source unreachable).
    name = row["name"]
    wait_for("a full reach register", lambda: client.ctl("peers")[0]["reach"] == 0o377, 20)
    for _ in range(9):
        answer = client.ctl("burst")
        assert answer["sources"] == 0 and answer["skipped"].keys() == {name}
    reach = client.ctl("peers")[0]["reach"]
    assert bin(reach).count("1") >= 7, oct(reach)
    text = client.run_ctl("burst", name).stdout
    assert text == f"burst started for 0 source(s)\nskipped {name}: {answer['skipped'][name]}\n"
    assert "broadcast" in answer["skipped"][name]


def test_tsyncd_broadcast_server_to_tsyncd_client(peers: Peers) -> None:
    port = free_udp_port()
    peers.tsyncd(
        "tsyncd-bserver",
        textwrap.dedent(
            f"""
            [synchronization]
            local-stratum = 7
            [[broadcast]]
            address = "127.255.255.255:{port}"
            interval = 0.25
            """
        ),
    )
    client = _broadcast_client(peers, port, -2)
    row = wait_for("tsyncd to select tsyncd's broadcasts", lambda: _selected(client), 30)
    assert row["stratum"] == 7 and row["reach"] != 0 and row["packets_dropped"] == 0
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
