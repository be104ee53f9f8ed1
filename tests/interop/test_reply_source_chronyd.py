"""chronyd reaches a tsyncd on a wildcard address through an address the kernel does not reply
from (QA s18 hunt-server-policy F1): chronyd's client drops a reply whose source is not the
address it asked, so before the fix its reach stayed 0 (Total RX 0) for 127.0.0.77.

chronyd runs with ``-x``; tsyncd in measure mode; all traffic on loopback.
"""

from __future__ import annotations

import pytest
from peers import NTPDATA_INTERLEAVED, Peers, free_udp_port, wait_for


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("xleave", ["", "xleave"])
def test_chronyd_reaches_a_wildcard_server_at_another_address(
    peers: Peers, workers: int, xleave: str
) -> None:
    port = free_udp_port()
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[[server]]\nlisten = "0.0.0.0:{port}"\n'
        f"workers = {workers}\n",
    )
    chrony = peers.chronyd(
        "chronyd-client",
        f"server 127.0.0.77 port {port} minpoll -2 maxpoll -2 iburst {xleave}\nport 0\n",
    )

    def reached() -> list[str] | None:
        rows = [r for r in chrony.sources() if r[2] == "127.0.0.77"]
        return rows[0] if rows and int(rows[0][5], 8) >= 0o17 else None

    row = wait_for("chronyd to reach tsyncd at 127.0.0.77 (reach >= 17)", reached, timeout=30)
    assert row[3] == "8"  # tsyncd's stratum
    if xleave:
        wait_for(
            "chronyd to see tsyncd as interleaved",
            lambda: (r := chrony.ntpdata("127.0.0.77")) and r[NTPDATA_INTERLEAVED] == "Yes",
        )
        assert server.ctl("serverstats")["interleaved_answered"] > 0
