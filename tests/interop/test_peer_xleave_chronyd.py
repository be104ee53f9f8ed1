"""Symmetric interleaved mode (RFC 9769) against real chronyd on loopback: tsyncd's
``mode = "peer"`` with ``xleave = true`` and chronyd's ``peer ... xleave``, each measuring the
other with the other's kernel TX timestamps; and the fallback to basic symmetric mode against a
chronyd ``peer`` without ``xleave``.

As in test_peer_chronyd.py, tsyncd keeps ``min-sources = 2`` (``peer_source_toml``) and
chronyd's peer is ``noselect``, so neither follows the other and both keep measuring (each
refuses to measure a peer synchronized to it: chronyd's test D, tsyncd's loop test).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from peers import (
    NTPDATA_DELAY,
    NTPDATA_INTERLEAVED,
    NTPDATA_MODE,
    NTPDATA_OFFSET,
    NTPDATA_VALID_RX,
    Chronyd,
    Peers,
    Tsyncd,
    free_udp_port,
    peer_source_toml,
    wait_for,
)


def _pair(peers: Peers, chrony_xleave: bool) -> tuple[Chronyd, Tsyncd, int]:
    chrony_port, our_port = free_udp_port(), free_udp_port()
    chrony = peers.chronyd(
        "chronyd-peer",
        f"port {chrony_port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n"
        f"peer 127.0.0.1 port {our_port} minpoll -2 maxpoll -2 noselect"
        f"{' xleave' if chrony_xleave else ''}\n",
    )
    tsyncd = peers.tsyncd("tsyncd-peer", peer_source_toml(our_port, chrony_port, "xleave = true\n"))
    return chrony, tsyncd, chrony_port


def _our_row(tsyncd: Tsyncd, enough: int) -> dict[str, Any] | None:
    rows = [r for r in tsyncd.ctl("peers") if r["packets_received"] >= enough]
    return rows[0] if rows else None


def test_xleave_peers_interleave_both_ways(peers: Peers) -> None:
    chrony, tsyncd, chrony_port = _pair(peers, chrony_xleave=True)

    def interleaved_here() -> dict[str, Any] | None:
        row = _our_row(tsyncd, 8)
        return row if row and row["interleaved_replies"] >= 5 and row["interleaved"] else None

    row = wait_for("tsyncd to measure chronyd in interleaved mode", interleaved_here, 30)
    assert row["mode"] == "peer" and row["address"] == f"127.0.0.1:{chrony_port}"
    assert row["stratum"] in (10, 11)
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
    assert isinstance(row["delay"], float) and 0 < row["delay"] < 1e-3
    # Crossed or lost packets may cost a sample now and then, but most replies interleave.
    assert row["interleaved_replies"] * 2 >= row["packets_received"]

    def interleaved_there() -> list[str] | None:
        r = chrony.ntpdata()
        return r if r and r[NTPDATA_INTERLEAVED] == "Yes" and int(r[NTPDATA_VALID_RX]) else None

    theirs = wait_for("chronyd to see tsyncd's packets as interleaved", interleaved_there, 30)
    assert theirs[NTPDATA_MODE] == "Symmetric active"
    assert abs(float(theirs[NTPDATA_OFFSET])) < 1e-3  # chronyd's last offset of tsyncd, s
    assert 0 < float(theirs[NTPDATA_DELAY]) < 1e-3
    human = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(tsyncd.socket), "ntpdata"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    pairs = (line.split(" : ", 1) for line in human.stdout.splitlines() if " : " in line)
    fields = {key.strip(): value.strip() for key, value in pairs}
    assert fields["Mode"] == "peer"
    assert int(fields["Interleaved RX"]) >= row["interleaved_replies"]


def test_xleave_peer_falls_back_to_basic_without_chronyd_xleave(peers: Peers) -> None:
    chrony, tsyncd, _ = _pair(peers, chrony_xleave=False)

    def measured_both_ways() -> tuple[dict[str, Any], list[str]] | None:
        ours, theirs = _our_row(tsyncd, 8), chrony.ntpdata()
        if ours is None or theirs is None or int(theirs[NTPDATA_VALID_RX]) < 8:
            return None
        return ours, theirs

    ours, theirs = wait_for("both peers to measure in basic mode", measured_both_ways, 30)
    assert ours["interleaved"] is False and ours["interleaved_replies"] == 0
    assert isinstance(ours["offset"], float) and abs(ours["offset"]) < 1e-3
    assert theirs[NTPDATA_INTERLEAVED] == "No"
    assert abs(float(theirs[NTPDATA_OFFSET])) < 1e-3
    assert 0 < float(theirs[NTPDATA_DELAY]) < 1e-3


def test_two_tsyncd_xleave_peers_interleave(peers: Peers) -> None:
    """tsyncd against tsyncd: both interleave from their kernel TX stamps (real sockets)."""
    port_a, port_b = free_udp_port(), free_udp_port()
    a = peers.tsyncd("tsyncd-a", peer_source_toml(port_a, port_b, "xleave = true\n"))
    b = peers.tsyncd("tsyncd-b", peer_source_toml(port_b, port_a, "xleave = true\n"))
    for daemon in (a, b):

        def interleaved(d: Tsyncd = daemon) -> dict[str, Any] | None:
            row = _our_row(d, 8)
            return row if row and row["interleaved_replies"] >= 5 else None

        row = wait_for("both tsyncd peers to interleave", interleaved, 30)
        assert row["stratum"] == 9 and row["interleaved_replies"] * 2 >= row["packets_received"]
        assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
        assert isinstance(row["delay"], float) and 0 < row["delay"] < 1e-3
