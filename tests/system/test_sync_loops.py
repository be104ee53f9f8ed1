"""Two tsyncd on their local clocks that poll each other (the usual "local stratum" fallback
pair): the loop test keeps one on its own clock and the other synchronized to it, as two
chronyds do with their test D, instead of both taking the other's time back and forth with
the stratum climbing to 16 (QA s16 hunt-sync F2)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from peers import Peers, Tsyncd, free_udp_port, wait_for

LOCAL_REFID = "127.127.1.1"  # what a tsyncd on its local clock announces (chrony's too)


def pair_toml(local_stratum: int, our_port: int, other_port: int, mode: str) -> str:
    """A server on its local clock at ``local_stratum`` polling the other one every 1/8 s."""
    peer = f"local-port = {our_port}\n" if mode == "peer" else ""
    return (
        f"[synchronization]\nlocal-stratum = {local_stratum}\n"
        f'[[server]]\nlisten = "127.0.0.1:{our_port}"\n'
        f'[[source]]\nmode = "{mode}"\naddress = "127.0.0.1:{other_port}"\n'
        f"min-poll = -3\nmax-poll = -3\n{peer}"
    )


def view(daemon: Tsyncd) -> tuple[int, bool, str]:
    """(stratum, synchronized, reference ID) as ``tsyncctl status`` gives them."""
    status = daemon.ctl("status")
    return status["stratum"], status["synchronized"], status["reference_id"]


def settled(a: Tsyncd, b: Tsyncd) -> tuple[Any, ...] | None:
    """The pair's views once one serves its local clock and the other follows it."""
    va, vb = view(a), view(b)
    if va == (5, False, LOCAL_REFID) and vb == (6, True, "127.0.0.1"):
        return va, vb
    if vb == (7, False, LOCAL_REFID) and va == (8, True, "127.0.0.1"):
        return va, vb
    return None


@pytest.mark.parametrize("mode", ["server", "peer"])
def test_two_local_servers_polling_each_other_settle_without_a_loop(
    peers: Peers, mode: str
) -> None:
    pa, pb = free_udp_port(), free_udp_port()
    a = peers.tsyncd("la", pair_toml(5, pa, pb, mode))
    b = peers.tsyncd("lb", pair_toml(7, pb, pa, mode))
    first = wait_for("one to follow the other's local clock", lambda: settled(a, b), timeout=30)
    # Stable: over 24 polls each, nobody takes the other's time back (no stratum climbing).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert settled(a, b) == first
        time.sleep(0.1)
    local, follower = (a, b) if first[0][1] is False else (b, a)
    row = local.ctl("peers")[0]
    assert row["state"] == "unusable" and row["select_code"] == "s"
    assert row["state_reason"] == (
        "synchronization loop: synchronized to us (its reference ID 127.0.0.1 is ours)"
    )
    assert row["drops_by_reason"]["loop"] >= 8
    # It answers: reachable, just not usable.  Most polls, not all: under load two peers at
    # 1/8 s now and then cross packets in flight, and since a packet that fails the origin test
    # no longer sets our next Origin (the spoofing fix, as chrony), that exchange is lost.
    assert bin(row["reach"]).count("1") >= 4
    assert follower.ctl("peers")[0]["state"] == "selected"
