"""``noselect`` and ``prefer`` (chrony's source options) against real chronyd servers (``-x``)
at 127.0.0.1, .2, .3 with local strata 5, 6 and 7."""

from __future__ import annotations

from typing import Any

from peers import Peers, fast_sources_toml, free_udp_port, wait_for


def test_noselect_is_measured_never_selected_and_prefer_wins(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (1, 2, 3))
    best, plain, preferred = (f"127.0.0.{i}:{port}" for i in (1, 2, 3))
    client = peers.tsyncd(
        "tsyncd",
        fast_sources_toml(plain) + fast_sources_toml(preferred, extra="prefer = true\n"),
    )
    # The lowest stratum, which would be the system peer, only watched:
    assert client.ctl("add", best, "--noselect", "--min-poll", "-3", "--max-poll", "-3") == {
        "name": best
    }

    def settled() -> dict[str, dict[str, Any]] | None:
        rows = {r["name"]: r for r in client.ctl("peers")}
        ready = len(rows) == 3 and all(r["reach"] & 0o17 == 0o17 for r in rows.values())
        return rows if ready and rows[preferred]["state"] == "selected" else None

    rows = wait_for("the prefer source selected, all reached", settled)
    assert rows[best]["state"] == "noselect" and rows[best]["stratum"] == 5
    assert isinstance(rows[best]["offset"], float)  # measured all the same
    assert [rows[n]["options"] for n in (best, plain, preferred)] == [["noselect"], [], ["prefer"]]
    assert rows[plain]["state"] == "outlier"
    assert rows[plain]["state_reason"] == "not combined: a prefer source survives"
    status = client.ctl("status")
    assert status["stratum"] == 8  # the stratum-7 prefer source's, not 5 or 6
