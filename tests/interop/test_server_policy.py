"""tsyncd's NTP server policy seen by real chronyd clients (issue 4): interleaved mode with
kernel timestamps, basic mode, KoD RATE from rate limiting, and dual-stack access control.

chronyd always runs with ``-x``; tsyncd in measure mode; all traffic on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from peers import Chronyd, Peers, ctl_fails, free_udp_port, wait_for

# `chronyc -c ntpdata` CSV columns we read (chrony 4.x order).
_NTPDATA_INTERLEAVED = 26
_NTPDATA_RX = 31
_NTPDATA_VALID_RX = 32


def client_conf(address: str, port: int, extra: str = "") -> str:
    return f"server {address} port {port} iburst minpoll -2 maxpoll -2 {extra}\nport 0\n"


def ntpdata(chrony: Chronyd) -> list[str] | None:
    rows = [line.split(",") for line in chrony.chronyc("ntpdata").splitlines() if line]
    return rows[0] if rows and len(rows[0]) > _NTPDATA_VALID_RX else None


@pytest.mark.parametrize("workers", [0, 2])
def test_chronyd_xleave_and_basic_clients(peers: Peers, workers: int) -> None:
    """Interleaved and basic chronyd clients, served by worker processes or the event loop."""
    port = free_udp_port()
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[[server]]\nlisten = "[::]:{port}"\n'
        f'allow = ["127.0.0.0/8"]\nworkers = {workers}\n',
    )
    xleave = peers.chronyd("chronyd-xleave", client_conf("127.0.0.1", port, "xleave"))
    basic = peers.chronyd("chronyd-basic", client_conf("127.0.0.1", port))

    def interleaved() -> list[str] | None:
        row = ntpdata(xleave)
        return row if row and row[_NTPDATA_INTERLEAVED] == "Yes" else None

    row = wait_for("chronyd (xleave) to see tsyncd as interleaved", interleaved)
    assert row[8] == "8" and row[7] == "Server"  # stratum, mode
    basic_row = wait_for("chronyd (basic) to get replies", lambda: ntpdata(basic))
    wait_for(
        "chronyd (basic) to get valid replies",
        lambda: (r := ntpdata(basic)) and int(r[_NTPDATA_VALID_RX]) >= 3,
    )
    assert basic_row[_NTPDATA_INTERLEAVED] == "No"
    stats = server.ctl("serverstats")
    assert stats["interleaved_answered"] > 0
    assert stats["answered"] > stats["interleaved_answered"]  # the basic client's too
    assert stats["kod_sent"] == 0 and stats["dropped"] == 0
    clients = server.ctl("clients")
    assert [c["address"] for c in clients] == ["127.0.0.1"]  # IPv4-mapped shown as IPv4
    assert clients[0]["interleaved"] >= stats["interleaved_answered"]  # read a moment later
    # Interleaved with kernel TX stamps: chronyd's offset of a loopback server is tiny.
    wait_for(
        "chronyd (xleave) offset under 50 us",
        lambda: (r := interleaved()) and abs(float(r[18])) < 50e-6,
    )


def test_rate_limit_kod_rate_seen_by_chronyd(peers: Peers) -> None:
    port = free_udp_port()
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
        "rate-limit = { interval = 0, burst = 2, leak = 0 }\nkod = true\n",
    )
    chrony = peers.chronyd("chronyd-client", client_conf("127.0.0.1", port))
    wait_for("chronyd to log a KoD RATE", lambda: "Received KoD RATE" in chrony.proc.output())
    clients = server.ctl("clients")
    assert len(clients) == 1 and clients[0]["kod_sent"] >= 1
    assert clients[0]["answered"] >= 2  # the first (burst) requests were answered
    stats = server.ctl("serverstats")
    assert stats["kod_sent"] == clients[0]["kod_sent"]


def test_dual_stack_acl_with_chronyd(peers: Peers) -> None:
    """One [::] socket: IPv4 clients arrive as ::ffff:a.b.c.d and must match IPv4 rules."""
    port = free_udp_port()
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[[server]]\nlisten = "[::]:{port}"\n'
        'allow = ["127.0.0.1/32", "::1/128"]\ndeny = ["::1"]\nkod = true\n',
    )
    v4 = peers.chronyd("chronyd-v4", client_conf("127.0.0.1", port))
    v6 = peers.chronyd("chronyd-v6", client_conf("::1", port))
    wait_for(
        "the IPv4 client to select tsyncd",
        lambda: any(r[1] == "*" for r in v4.sources()),
    )

    def denied_v6() -> dict[str, Any] | None:
        rows = [c for c in server.ctl("clients") if c["address"] == "::1"]
        return rows[0] if rows and rows[0]["kod_sent"] >= 1 else None

    v6_client = wait_for("tsyncd to send the IPv6 client a KoD DENY", denied_v6)
    assert v6_client["answered"] == 0
    # chronyd received the KoD (it counts the datagram) but has no time from us.
    row = wait_for("chronyd (IPv6) to count a reply", lambda: ntpdata(v6))
    assert int(row[_NTPDATA_RX]) >= 1
    assert not any(r[1] in "*+" for r in v6.sources())
    stats = server.ctl("serverstats")
    assert stats["kod_sent"] >= 1 and stats["answered"] >= 1
    v4_client = [c for c in server.ctl("clients") if c["address"] == "127.0.0.1"]
    assert v4_client[0]["answered"] >= 1 and v4_client[0]["kod_sent"] == 0
    # tsyncctl accheck agrees with what both clients just met, and says why.
    listen = f"[::]:{port}"

    def accheck(address: str) -> tuple[int, Any]:
        done = server.run_ctl("accheck", address, "--json")
        return done.returncode, json.loads(done.stdout)

    allowed = [{"listen": listen, "allowed": True, "reason": None}]
    assert accheck("127.0.0.1") == (0, allowed)
    assert accheck("::ffff:127.0.0.1") == (0, allowed)  # how the [::] socket sees it
    assert accheck("::1") == (1, [{"listen": listen, "allowed": False, "reason": "denied"}])
    assert accheck("127.0.0.2") == (
        1,
        [{"listen": listen, "allowed": False, "reason": "restricted"}],
    )
    shown = server.run_ctl("accheck", "::1")
    assert (shown.returncode, shown.stdout) == (1, f"{listen}: ::1 is denied (on the deny list)\n")
    # A name would be looked up (chronyc's accheck takes one): a word that is no host name.
    assert "'not_an_ip' is not an IP address or host name" in ctl_fails(
        server, "accheck", "not_an_ip"
    )
