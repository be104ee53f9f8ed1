"""A calibrating broadcast client of real chronyd when chronyd goes away and comes back: the
client must not use its samples from before the outage (QA s19 #1: it was selected at the
first broadcast after the return, on those, then unusable for five intervals once its
calibration volley ended, then selected again: a flap at every return of the server)."""

from __future__ import annotations

import time
from typing import Any

from broadcast_clients import broadcast_client, chronyd_broadcaster, selected
from peers import Peers, Tsyncd, wait_for

from tsyncd.sync.broadcast import FIRST_BROADCASTS, VOLLEY_GOOD_REPLIES


def _row(client: Tsyncd) -> dict[str, Any]:
    row: dict[str, Any] = client.ctl("peers")[0]
    return row


def test_a_returning_broadcast_server_is_selected_once_after_calibration_and_new_samples(
    peers: Peers,
) -> None:
    chrony, bport, server_port = chronyd_broadcaster(
        peers, "chronyd-bserver", "127.0.0.1", "127.255.255.255"
    )
    client = broadcast_client(
        peers,
        "tsyncd-bclient",
        f"127.0.0.1:{bport}",
        broadcast_server=f"127.0.0.1:{server_port}",
        broadcast_calibrate=True,
        min_poll=0,
        max_poll=0,
    )
    wait_for("the client to select chronyd", lambda: selected(client), 30)

    chrony.proc.stop()
    wait_for("the source to turn unreachable", lambda: _row(client)["reach"] == 0, 20)
    chronyd_broadcaster(
        peers,
        "chronyd-bserver-again",
        "127.0.0.1",
        "127.255.255.255",
        ports=(bport, server_port),
    )

    seen: list[tuple[float, int, str, str | None]] = []  # (when, reach, state, reason)

    def settled() -> bool:
        """Selected without a break for the last 3 s (of broadcasts every second)."""
        row = _row(client)
        seen.append((time.monotonic(), row["reach"], row["state"], row["state_reason"]))
        since = [s for s in seen if s[0] >= seen[-1][0] - 3]
        return seen[0][0] <= seen[-1][0] - 3 and all(s[2] == "selected" for s in since)

    wait_for("the client to select chronyd again, for good", settled, 40)
    heard = next(s for s in seen if s[1] != 0)
    first = next(s for s in seen if s[2] == "selected")
    after = seen[seen.index(first) :]
    assert all(s[2] == "selected" for s in after), [s[1:] for s in seen]  # no flap
    # Out while the volley measured the round trip, and for the samples after it: at one
    # broadcast a second, about VOLLEY_GOOD_REPLIES + FIRST_BROADCASTS seconds.
    assert first[0] - heard[0] > VOLLEY_GOOD_REPLIES + FIRST_BROADCASTS - 3, seen
    assert any((s[3] or "").startswith("measuring the round trip") for s in seen), seen
