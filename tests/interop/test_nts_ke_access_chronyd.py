"""NTS-KE access control against a real chronyd NTS client, on loopback with a test CA.

chronyd checks its allow/deny rules right after accept(), before any TLS work, and one rule
set governs NTP and NTS-KE; tsyncd does the same with each [[nts-ke-server]]'s rules (its own
allow/deny, else its [[server]]'s) and ``tsyncctl allow``/``deny``.  chronyd runs with ``-x``
(never touches the clock); tsyncd in measure mode.
"""

from __future__ import annotations

import asyncio
import socket

from nts_certs import Pki, make_pki, nts_server_toml
from peers import (
    Chronyd,
    Peers,
    Tsyncd,
    chronyd_nts_client,
    free_tcp_port,
    free_udp_port,
    wait_for,
)

from tsyncd.sources.ntske import run_ke


def refused_chronyd(peers: Peers, where: str, rule: str) -> tuple[Pki, Tsyncd, Chronyd, int]:
    """tsyncd serving NTS with ``rule`` written before ``where`` in its config, and a chronyd
    NTS client whose NTS-KE it refused: checked refused before TLS, counted, not logged at
    info, no cookies."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    toml = nts_server_toml(pki, ntp_port, ke_port, peers.tmp / "keys.json", stratum=8)
    server = peers.tsyncd("tsyncd-nts-server", toml.replace(where, rule + where, 1))
    reason = "denied" if "deny" in rule else "restricted"
    chrony = chronyd_nts_client(peers, "chronyd-nts-client", ntp_port, ke_port, pki.ca)

    def refused() -> int:
        return int(server.ctl("serverstats")["nts_ke_failures_by_reason"].get(reason, 0))

    wait_for("chronyd's NTS-KE to be refused", lambda: refused() >= 1, timeout=30)
    # Closed before the handshake: chronyd sees no TLS server at all.
    wait_for("chronyd to log it", lambda: "TLS handshake" in chrony.proc.output())
    for line in chrony.chronyc("authdata").splitlines():
        # Name/IP, Mode, KeyID, Type, KLen, Last, Atmp, NAK, Cook, CLen: no cookies.
        row = line.split(",")
        assert row[1] == "NTS" and row[8] == "0", row
    stats = server.ctl("serverstats")
    assert stats["nts_ke_completed"] == 0 and stats["nts_cookies_issued"] == 0
    assert server.ctl("clients", "--nts-ke") == []  # refused before the client log
    # A plain TCP connection from 127.0.0.1 is closed at once, no TLS: one that is let through
    # waits 5 s for a ClientHello.
    before = refused()
    with socket.create_connection(("127.0.0.1", ke_port), timeout=3) as conn:
        assert conn.recv(1) == b""
    assert refused() == before + 1
    assert f"  {reason}" in server.run_ctl("serverstats").stdout
    assert "rejected connection" not in server.proc.output()  # DEBUG only: a scanner's noise
    return pki, server, chrony, ke_port


def allow_localhost(server: Tsyncd, ke_port: int) -> None:
    """chronyc allow 127.0.0.1: one rule set for NTP and NTS-KE."""
    [ke] = server.ctl("allow", "127.0.0.1")["nts_ke_servers"]
    assert ke["listen"] == f"127.0.0.1:{ke_port}" and "127.0.0.1/32" in ke["allow"]


def test_a_server_deny_keeps_chronyd_from_nts_ke_until_tsyncctl_allow(peers: Peers) -> None:
    # The [[nts-ke-server]] has no allow/deny: it takes its [[server]]'s, which denies chronyd.
    _pki, server, chrony, ke_port = refused_chronyd(
        peers, "[[nts-ke-server]]", 'deny = ["127.0.0.1"]\n'
    )
    allow_localhost(server, ke_port)

    def cookies() -> bool:
        rows = [r.split(",") for r in chrony.chronyc("authdata").splitlines() if r]
        return any(r[1] == "NTS" and int(r[8]) >= 1 for r in rows)

    # chronyd 4.3 tries NTS-KE again 16 s after a failed TLS handshake: no nudge shortens it.
    wait_for("chronyd to hold NTS cookies", cookies, timeout=40)
    assert server.ctl("serverstats")["nts_ke_completed"] == 1
    [row] = server.ctl("clients", "--nts-ke")
    assert (row["address"], row["answered"]) == ("127.0.0.1", 1)


def test_an_nts_ke_servers_own_allow_refuses_chronyd(peers: Peers) -> None:
    # The [[server]] serves everyone; the listener's own allow holds only 192.0.2.0/24.
    pki, server, _chrony, ke_port = refused_chronyd(peers, "[keyset]", 'allow = ["192.0.2.0/24"]\n')
    allow_localhost(server, ke_port)
    # The allowed-again half by a TLS client of the test's own (chronyd would wait 16 s).
    result = asyncio.run(run_ke("localhost", ke_port, pki.ca, connect_host="127.0.0.1"))
    assert len(result.outcome.cookies) == 8
    assert server.ctl("serverstats")["nts_ke_completed"] == 1
