"""Broadcast mode on loopback (127.255.255.255 is lo's broadcast address): tsyncd as a
broadcast client of real chronyd's ``broadcast``, and of tsyncd's own broadcast server."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from peers import Peers, Tsyncd, ctl_fails, free_udp_port, wait_for


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
    # shifted a 0 into it; nine made 377 into 20, and the source unreachable).  With nothing
    # burst at all it fails, as chronyc's "513 No such source" (QA s19: exit 0 and "0
    # source(s)"), saying why, with the error of a selector that matches no source.
    name = row["name"]
    why = "a broadcast source only listens: it has no requests to send"
    error = f"burst: no source to burst (skipped {name}: {why})"
    wait_for("a full reach register", lambda: client.ctl("peers")[0]["reach"] == 0o377, 20)
    for _ in range(9):
        assert ctl_fails(client, "burst") == f"tsyncctl: {error}\n"
    reach = client.ctl("peers")[0]["reach"]
    assert bin(reach).count("1") >= 7, oct(reach)
    no_match = client.run_ctl("burst", "192.0.2.0/24", "--json")
    done = client.run_ctl("burst", name, "--json")
    assert done.returncode == no_match.returncode == 1
    assert json.loads(done.stdout) == {"error": {"code": -32602, "message": error}}
    assert json.loads(no_match.stdout)["error"]["code"] == -32602
    # With a source that polls beside it, the burst starts (exit 0), naming the skipped one.
    other = f"127.0.0.1:{free_udp_port()}"  # nothing answers there: a burst still sends
    assert client.ctl("add", other, "--min-poll", "6") == {"name": other}
    wait_for("the added source's association", lambda: len(client.ctl("peers")) == 2)
    done = client.run_ctl("burst")
    assert (done.returncode, done.stdout) == (
        0,
        f"burst started for 1 source(s)\nskipped {name}: {why}\n",
    )


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
