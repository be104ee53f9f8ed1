"""Broadcast-delay calibration against real chronyd: chronyd broadcasts on loopback every
second and answers client requests; with ``broadcast-delay`` absurdly wrong (0.5 s), the
calibrating tsyncd measures the real round trip and finds the host clock near 0 from chronyd,
while the one that trusts the configured delay is off by half of it."""

from __future__ import annotations

from broadcast_clients import broadcast_client, chronyd_broadcaster, host_offset, selected
from peers import Peers, wait_for

from tsyncd.sync.broadcast import VOLLEY_GOOD_REPLIES

WRONG_DELAY_S = 0.5


def test_calibration_replaces_a_wrong_broadcast_delay_with_the_measured_round_trip(
    peers: Peers,
) -> None:
    chrony, bport, server_port = chronyd_broadcaster(
        peers, "chronyd-bserver", "127.0.0.1", "127.255.255.255"
    )
    calibrated, trusting = (
        broadcast_client(
            peers,
            name,
            f"127.0.0.1:{bport}",
            broadcast_server=f"127.0.0.1:{server_port}",  # chronyd's port for client requests
            broadcast_delay=WRONG_DELAY_S,
            broadcast_calibrate=calibrate,
            min_poll=0,
            max_poll=0,
        )
        for name, calibrate in (("tsyncd-calibrated", True), ("tsyncd-trusting", False))
    )

    row = wait_for("the calibrated client's first offset", lambda: selected(calibrated), 30)
    assert row["mode"] == "broadcast" and row["stratum"] == 5
    # The volley's best round trip on loopback: well under a few milliseconds, not 0.5 s.
    assert 0 < row["broadcast_delay"] < 0.005
    assert abs(row["offset"]) < 0.002, row
    assert abs(host_offset(calibrated)) < 0.002

    row = wait_for("the trusting client's first offset", lambda: selected(trusting), 30)
    assert row["broadcast_delay"] == WRONG_DELAY_S
    assert abs(host_offset(trusting) - WRONG_DELAY_S / 2) < 0.002

    # chronyd answered the calibration requests: at least VOLLEY_GOOD_REPLIES of them, and
    # the volley is over (the source is selected only after it).  Total TX counts them, not
    # the broadcast intervals (QA s19: 22 against chronyd's 4); the trusting client sends none.
    received = int(chrony.chronyc("serverstats").split(",")[0])
    assert received >= VOLLEY_GOOD_REPLIES, received
    assert calibrated.ctl("peers")[0]["packets_sent"] == received
    assert trusting.ctl("peers")[0]["packets_sent"] == 0
