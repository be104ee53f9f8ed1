"""``tsyncctl allow``/``deny`` on a running tsyncd, seen by a real chronyd client (issue 4):
refused, then served, then refused again, on a dual-stack socket (the IPv4 client arrives as
::ffff:127.0.0.1), with worker processes and with the event loop; ``accheck`` agrees.

chronyd always runs with ``-x``; tsyncd in measure mode; all traffic on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from peers import NTPDATA_VALID_RX, Chronyd, Peers, Tsyncd, free_udp_port, wait_for

_REACH = 5  # `chronyc -c sources` column: the reach register, octal


def client_conf(port: int) -> str:
    return f"server 127.0.0.1 port {port} iburst minpoll -2 maxpoll -2\nport 0\n"


def accheck(server: Tsyncd, address: str) -> str:
    """The one row's verdict: "allowed", or the reason."""
    done = server.run_ctl("accheck", address, "--json")
    (row,) = json.loads(done.stdout)
    assert done.returncode == (0 if row["allowed"] else 1)
    return "allowed" if row["allowed"] else str(row["reason"])


def valid_replies(chrony: Chronyd) -> int:
    row = chrony.ntpdata()
    return int(row[NTPDATA_VALID_RX]) if row else 0


def reach(chrony: Chronyd) -> int | None:
    rows = chrony.sources()
    return int(rows[0][_REACH], 8) if rows else None


def client_row(server: Tsyncd) -> dict[str, Any] | None:
    rows = [c for c in server.ctl("clients") if c["address"] == "127.0.0.1"]
    return rows[0] if rows else None


@pytest.mark.parametrize("workers", [None, 0])
def test_allow_and_deny_at_run_time_seen_by_chronyd(peers: Peers, workers: int | None) -> None:
    port = free_udp_port()
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[[server]]\nlisten = "[::]:{port}"\n'
        'allow = ["all"]\ndeny = ["127.0.0.0/8"]\n'
        + ("" if workers is None else f"workers = {workers}\n"),  # None: the default
    )
    chrony = peers.chronyd("chronyd-client", client_conf(port))

    # Refused as the config says: its requests come and are dropped.
    refused = wait_for(
        "tsyncd to drop the client's requests",
        lambda: (row := client_row(server)) and row["dropped"] >= 2 and row,
    )
    assert refused["answered"] == 0 and valid_replies(chrony) == 0
    assert accheck(server, "127.0.0.1") == "denied"

    # An exception inside the denied network: served.
    listen = f"[::]:{port}"
    assert server.ctl("allow", "127.0.0.1") == {
        "servers": [
            {
                "listen": listen,
                "allow": ["0.0.0.0/0", "127.0.0.1/32", "::/0"],
                "deny": ["127.0.0.0/8"],
            }
        ],
        "nts_ke_servers": [],  # none here (tests/interop/test_nts_ke_access_chronyd.py)
    }
    assert [accheck(server, a) for a in ("127.0.0.1", "::ffff:127.0.0.1", "127.0.0.2")] == [
        "allowed",
        "allowed",
        "denied",
    ]
    wait_for("chronyd to get valid replies", lambda: valid_replies(chrony) >= 2)
    wait_for("chronyd to select tsyncd", lambda: any(r[1] == "*" for r in chrony.sources()))

    # `deny all 127/8`: the exception goes with the rules inside it; chronyd's next 8 polls
    # go unanswered.
    server.ctl("deny", "all", "127")  # chronyc's short form of 127.0.0.0/8 (hunt-new #5)
    assert accheck(server, "127.0.0.1") == "denied"
    wait_for("chronyd to find tsyncd unreachable", lambda: reach(chrony) == 0)
    # `allow` alone: every address, yet the more specific deny still decides for 127/8.
    shown = server.run_ctl("allow")
    assert shown.returncode == 0
    assert shown.stdout == f"{listen}: allow 0.0.0.0/0, ::/0; deny 127.0.0.0/8\n"  # no other
    assert [accheck(server, a) for a in ("127.0.0.1", "::1")] == ["denied", "allowed"]

    # `allow all`: every rule replaced, so served again; a reload keeps the running rules.
    server.ctl("allow", "all")
    before = valid_replies(chrony)
    wait_for("chronyd to be served again", lambda: valid_replies(chrony) > before + 1)
    server.ctl("reload")
    assert accheck(server, "127.0.0.1") == "allowed"
    row = client_row(server)
    assert row is not None and row["answered"] >= 3 and row["dropped"] >= 10
