"""NTS-KE access control against a real chronyd NTS client, on loopback with a test CA.

chronyd checks its allow/deny rules right after accept(), before any TLS work, and one rule
set governs NTP and NTS-KE; tsyncd does the same with each [[nts-ke-server]]'s rules (its own
allow/deny, else those of the [[server]] the client's NTP will reach) and ``tsyncctl
allow``/``deny``.  chronyd runs with ``-x`` (never touches the clock); tsyncd in measure mode.
"""

from __future__ import annotations

import asyncio
import functools
import socket

import pytest
from nts_certs import Pki, make_pki, nts_server_toml
from peers import (
    NTPDATA_AUTHENTICATED,
    NTPDATA_VALID_RX,
    Chronyd,
    Peers,
    Tsyncd,
    chronyd_nts_client,
    free_tcp_port,
    free_udp_port,
    wait_for,
)

from tsyncd.sources.ntske import KeFailure, run_ke


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


def free_dual_stack_port(kind: socket.SocketKind) -> int:
    """A port of ``kind`` free on every IPv4 and IPv6 address right now (a dual-stack bind
    on the IPv6 wildcard takes the port in both families)."""
    with socket.socket(socket.AF_INET6, kind) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        port: int = s.getsockname()[1]
        return port


def test_per_family_servers_give_chronyd_nts_over_ipv6_and_ipv4(peers: Peers) -> None:
    """QA s21 hunt-nts F1: with an IPv4 and an IPv6 [[server]] on one port, each with its own
    rules, the [[nts-ke-server]] on [::] judged every client by the first one's and refused
    every IPv6 client as restricted; now each by the server its NTP will reach."""
    pki = make_pki(peers.tmp)
    ntp_port = free_dual_stack_port(socket.SOCK_DGRAM)
    ke_port = free_dual_stack_port(socket.SOCK_STREAM)
    server = peers.tsyncd(
        "tsyncd-nts-server",
        "[synchronization]\nlocal-stratum = 8\n"
        f'[[server]]\nlisten = "0.0.0.0:{ntp_port}"\nallow = ["127.0.0.0/8"]\n'
        f'[[server]]\nlisten = "[::]:{ntp_port}"\nipv6-only = true\nallow = ["::1"]\n'
        f'[[nts-ke-server]]\nlisten = "[::]:{ke_port}"\n'
        f'certificate-chain-path = "{pki.chain}"\nprivate-key-path = "{pki.key}"\n'
        f'[keyset]\nkey-storage-path = "{peers.tmp / "keys.json"}"\n',
    )
    chrony6 = peers.chronyd(
        "chronyd-nts-ipv6",
        f"server ::1 port {ntp_port} nts ntsport {ke_port} iburst minpoll -2 maxpoll -2\n"
        f"ntstrustedcerts {pki.ca}\nport 0\n",
    )
    chrony4 = chronyd_nts_client(peers, "chronyd-nts-ipv4", ntp_port, ke_port, pki.ca)

    def authenticated(chrony: Chronyd, address: str) -> list[str] | None:
        row = chrony.ntpdata(address)
        good = row and row[NTPDATA_AUTHENTICATED] == "Yes" and int(row[NTPDATA_VALID_RX]) >= 2
        return row if good else None

    for chrony, address in ((chrony6, "::1"), (chrony4, "127.0.0.1")):
        row = wait_for(
            f"chronyd's authenticated NTP over {address}",
            functools.partial(authenticated, chrony, address),
            timeout=30,
        )
        assert row[8] == "8"  # stratum: tsyncd's answer
    stats = server.ctl("serverstats")
    assert stats["nts_ke_completed"] == 2 and stats["nts_ke_failures_by_reason"] == {}
    assert {r["address"] for r in server.ctl("clients", "--nts-ke")} == {"127.0.0.1", "::1"}
    # tsyncctl deny ::1: the IPv6 server's rules change, and with them the listener's for the
    # clients that server gets; its answer shows the rules per server the listener follows.
    rows = server.ctl("deny", "::1")["nts_ke_servers"]
    assert [(r["listen"], r["rules_of"]) for r in rows] == [
        (f"[::]:{ke_port}", f"0.0.0.0:{ntp_port}"),
        (f"[::]:{ke_port}", f"[::]:{ntp_port}"),
    ]
    assert rows[1]["deny"] == ["::1/128"]
    with pytest.raises(KeFailure):
        asyncio.run(run_ke("localhost", ke_port, pki.ca, connect_host="::1"))
    assert server.ctl("serverstats")["nts_ke_failures_by_reason"] == {"denied": 1}
    result = asyncio.run(run_ke("localhost", ke_port, pki.ca, connect_host="127.0.0.1"))
    assert len(result.outcome.cookies) == 8
