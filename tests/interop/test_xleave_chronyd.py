"""tsyncd's client in interleaved mode (RFC 9769) against real chronyd servers on loopback.

chronyd (``-x``: never touches the clock) serves interleaved replies to clients that ask for
them, with its kernel TX timestamps; with ``noclientlog`` it keeps no per-client state and so
cannot interleave, and tsyncd must fall back to basic mode.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

from peers import Peers, Tsyncd, free_udp_port, wait_for


def _client(peers: Peers, port: int) -> Tsyncd:
    return peers.tsyncd(
        "tsyncd-client",
        textwrap.dedent(
            f"""
            [[source]]
            mode = "server"
            address = "127.0.0.1:{port}"
            iburst = true
            xleave = true
            min-poll = -3
            max-poll = -3
            """
        ),
    )


def _chronyd_server(peers: Peers, port: int, extra: str = "") -> None:
    peers.chronyd(
        "chronyd-server",
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n{extra}",
    )


def test_tsyncd_interleaves_with_chronyd(peers: Peers) -> None:
    port = free_udp_port()
    _chronyd_server(peers, port)
    client = _client(peers, port)

    def interleaved_and_selected() -> dict[str, Any] | None:
        rows = client.ctl("peers")
        good = [
            r
            for r in rows
            if r["state"] == "selected" and r["interleaved"] and r["reach"] & 0o17 == 0o17
        ]
        return good[0] if good else None

    row = wait_for("tsyncd to select chronyd in interleaved mode", interleaved_and_selected)
    assert row["stratum"] == 10
    # Interleaved replies match our Receive cookie; only a reply late enough to cross our next
    # request (a loaded machine) may be dropped as bogus.
    assert row["packets_dropped"] * 4 <= row["packets_received"]
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
    assert isinstance(row["delay"], float) and 0 < row["delay"] < 1e-3
    status = client.ctl("status")
    assert status["synchronized"] is True and status["stratum"] == 11
    human = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(client.socket), "peers"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert "interleaved" in human.stdout.splitlines()[2]


def test_tsyncd_falls_back_to_basic_without_server_interleaving(peers: Peers) -> None:
    port = free_udp_port()
    _chronyd_server(peers, port, "noclientlog\n")
    client = _client(peers, port)

    def synced_after_many() -> dict[str, Any] | None:
        rows = client.ctl("peers")
        good = [r for r in rows if r["state"] == "selected" and r["packets_received"] >= 8]
        return good[0] if good else None

    row = wait_for("tsyncd to select chronyd (basic replies)", synced_after_many)
    assert row["interleaved"] is False
    # Basic replies to interleaved requests are accepted (see above for the late-reply slack).
    assert row["packets_dropped"] * 4 <= row["packets_received"]
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
    assert client.ctl("status")["synchronized"] is True
