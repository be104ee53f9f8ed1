"""A broadcast server that kisses its listener's calibration requests: a tsyncd broadcasting
on loopback whose ``[[server]]`` (``kod = true``) denies the listener, or rate-limits it, as
RFC 5905 §7.4 lets it (chronyd 4.3 never sends KoDs).  The listener logs the kiss as a unicast
source's (QA s19: nothing was logged), stops asking, and still uses the broadcasts."""

from __future__ import annotations

import pytest
from broadcast_clients import broadcast_client, selected
from peers import Peers, free_udp_port, wait_for

WRONG_DELAY_S = 0.5


@pytest.mark.parametrize(
    ("code", "limit", "sent"),
    [
        ("DENY", 'deny = ["127.0.0.1"]', 1),  # the first request is refused
        # One request per 4 s: the first is answered, the next (0.25 s later) kissed.
        ("RATE", "rate-limit = { interval = 2, burst = 1, leak = 0 }", 2),
    ],
)
def test_a_broadcast_listeners_kiss_is_logged_and_ends_its_calibration(
    peers: Peers, code: str, limit: str, sent: int
) -> None:
    bport, sport = free_udp_port(), free_udp_port()
    server = peers.tsyncd(
        "tsyncd-bserver",
        "[synchronization]\nlocal-stratum = 7\n"
        f'[[server]]\nlisten = "127.0.0.1:{sport}"\nkod = true\nworkers = 0\n{limit}\n'
        f'[[broadcast]]\naddress = "127.255.255.255:{bport}"\ninterval = 0.25\n',
    )
    client = broadcast_client(
        peers,
        "tsyncd-bclient",
        f"127.0.0.1:{bport}",
        broadcast_server=f"127.0.0.1:{sport}",
        broadcast_delay=WRONG_DELAY_S,
        broadcast_calibrate=True,
        min_poll=-2,
        max_poll=-2,
    )
    row = wait_for("the listener to select the broadcasts", lambda: selected(client, 3), 30)
    assert row["stratum"] == 7 and row["kiss_code"] == code
    assert row["drops_by_reason"] == {"kiss_of_death": 1}
    assert server.ctl("serverstats")["kod_sent"] == 1
    assert row["packets_sent"] == sent  # no more requests after the kiss
    if code == "DENY":  # nothing measured: the configured delay stays
        assert row["broadcast_delay"] == WRONG_DELAY_S
    else:  # the answered request's round trip
        assert 0 < row["broadcast_delay"] < 0.005
    warnings = [line for line in client.proc.output().splitlines() if "kiss-o'-death" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], warnings
    assert (
        f"127.0.0.1:{bport}: server sent kiss-o'-death {code}"
        f"{' (access denied)' if code == 'DENY' else ''}: no more calibration requests until it"
        " is heard anew after an outage; its broadcasts are still used" in warnings[0]
    ), warnings
