"""Broadcast-delay calibration against real chronyd: chronyd broadcasts on loopback every
second and answers client requests; with ``broadcast-delay`` absurdly wrong (0.5 s), the
calibrating tsyncd measures the real round trip and reports offsets near 0, while the one that
trusts the configured delay is off by half of it.  Both run in measure mode, whose virtual clock
follows the source (it steps by the first offset): what they found is ``tracking``'s
``host_clock_offset``, the host clock's offset from the source by their measurements."""

from __future__ import annotations

import textwrap
from typing import Any

from peers import Peers, Tsyncd, free_udp_port, wait_for

from tsyncd.sync.broadcast import VOLLEY_GOOD_REPLIES

WRONG_DELAY_S = 0.5


def _client(peers: Peers, name: str, bport: int, server_port: int, calibrate: bool) -> Tsyncd:
    return peers.tsyncd(
        name,
        textwrap.dedent(
            f"""
            [[source]]
            mode = "broadcast"
            address = "127.0.0.1:{bport}"
            broadcast-server = "127.0.0.1:{server_port}"
            broadcast-delay = {WRONG_DELAY_S}
            broadcast-calibrate = {"true" if calibrate else "false"}
            min-poll = 0
            max-poll = 0
            """
        ),
    )


def _host_offset(client: Tsyncd) -> float:
    tracking = wait_for(
        "a clock update", lambda: (t := client.ctl("tracking"))["clock_updates"] and t
    )
    offset: float = tracking["host_clock_offset"]
    return offset


def _measured(client: Tsyncd) -> dict[str, Any] | None:
    rows = [r for r in client.ctl("peers") if r["state"] == "selected" and r["offset"] is not None]
    return rows[0] if rows else None


def test_calibration_replaces_a_wrong_broadcast_delay_with_the_measured_round_trip(
    peers: Peers,
) -> None:
    bport, server_port = free_udp_port(), free_udp_port()
    chrony = peers.chronyd(
        "chronyd-bserver",
        f"port {server_port}\nallow 127.0.0.1\nlocal stratum 5\n"
        f"broadcast 1 127.255.255.255 {bport}\n",
    )
    calibrated = _client(peers, "tsyncd-calibrated", bport, server_port, calibrate=True)
    trusting = _client(peers, "tsyncd-trusting", bport, server_port, calibrate=False)

    row = wait_for("the calibrated client's first offset", lambda: _measured(calibrated), 30)
    assert row["mode"] == "broadcast" and row["stratum"] == 5
    # The volley's best round trip on loopback: well under a few milliseconds, not 0.5 s.
    assert 0 < row["broadcast_delay"] < 0.005
    assert abs(row["offset"]) < 0.002, row
    assert abs(_host_offset(calibrated)) < 0.002

    row = wait_for("the trusting client's first offset", lambda: _measured(trusting), 30)
    assert row["broadcast_delay"] == WRONG_DELAY_S
    assert abs(_host_offset(trusting) - WRONG_DELAY_S / 2) < 0.002

    # chronyd answered the calibration requests: at least VOLLEY_GOOD_REPLIES of them.
    received = int(chrony.chronyc("serverstats").split(",")[0])
    assert received >= VOLLEY_GOOD_REPLIES, received
