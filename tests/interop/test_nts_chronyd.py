"""NTS (RFC 8915) between tsyncd and real chronyd, both ways, on loopback with a test CA.

chronyd always runs with ``-x`` (never touches the clock); tsyncd in measure mode.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import urllib.request
from typing import Any

import pytest
from nts_certs import make_pki, nts_server_toml, nts_source_toml
from peers import (
    NTPDATA_AUTHENTICATED,
    NTPDATA_INTERLEAVED,
    NTPDATA_VALID_RX,
    Peers,
    Tsyncd,
    chronyd_nts_client,
    chronyd_nts_server,
    free_tcp_port,
    free_udp_port,
    wait_for,
)


def test_chronyd_is_nts_client_of_tsyncd(peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    keys = peers.tmp / "nts-keys.json"
    server = peers.tsyncd(
        "tsyncd-nts-server",
        nts_server_toml(pki, ntp_port, ke_port, keys, stratum=8),
    )
    chrony = chronyd_nts_client(peers, "chronyd-nts-client", ntp_port, ke_port, pki.ca)

    def authdata() -> list[str] | None:
        # Name/IP, Mode, KeyID, Type, KLen, Last, Atmp, NAK, Cook, CLen
        rows = [r.split(",") for r in chrony.chronyc("authdata").splitlines() if r]
        good = [r for r in rows if r[1] == "NTS" and int(r[8]) >= 1 and r[7] == "0"]
        return good[0] if good else None

    row = wait_for("chronyd to hold NTS cookies from tsyncd", authdata, timeout=30)
    assert row[3] == "15"  # AEAD_AES_SIV_CMAC_256: all chrony 4.3 offers
    assert row[4] == "256"  # key length in bits
    assert row[9] == "104"  # our cookie length

    def selected() -> list[str] | None:
        rows = [r for r in chrony.sources() if r[2] == "127.0.0.1"]
        return rows[0] if rows and rows[0][1] == "*" and int(rows[0][5], 8) >= 0o17 else None

    source = wait_for("chronyd to select tsyncd over NTS", selected, timeout=30)
    assert source[3] == "8"
    row = authdata()
    # Every response refills the cookie jar: 8, or 7 while a request is in flight.
    assert row is not None and int(row[8]) >= 7
    stats = server.ctl("serverstats")
    assert stats["nts_ke_connections"] >= 1 and stats["nts_ke_completed"] >= 1
    assert stats["nts_requests"] >= 4
    assert stats["workers"] >= 1  # answered by the worker processes (counters gathered)
    assert stats["nts_cookies_issued"] >= 8 + 4
    assert stats["nts_naks"] == 0
    assert stats["nts_ke_group"]  # the TLS group was recorded
    assert keys.exists() and oct(keys.stat().st_mode & 0o777) == "0o600"
    # rekey with the same key file keeps the keys: chronyd's cookies keep working.
    assert server.ctl("rekey")["key_file"] == str(keys)
    # A new key (as a fleet's operator distributes one): chronyd's next request gets an NTS
    # NAK, then chronyd re-runs NTS-KE.  `clients` counts the NAK as a KoD, not an answer.
    data = json.loads(keys.read_text())
    data["key"] = secrets.token_hex(32)
    keys.write_text(json.dumps(data))
    server.ctl("rekey")
    wait_for("the NAK and a new NTS-KE", lambda: server.ctl("serverstats")["nts_ke_completed"] >= 2)
    wait_for("an NTS answer after it", lambda: authdata() is not None)
    chrony.proc.stop()  # counters hold still: the client's row must match the totals
    stats = server.ctl("serverstats")
    # Sessions per TLS group; each group logged once, not per session (QA s18 F5).
    [(group, sessions)] = stats["nts_ke_groups"].items()
    assert group == stats["nts_ke_group"] and sessions == stats["nts_ke_completed"] >= 2
    assert server.proc.output().count("negotiated TLS group") == 1
    [row] = server.ctl("clients")
    assert stats["nts_naks"] == stats["kod_sent"] == row["kod_sent"] >= 1
    for key in ("received", "answered", "dropped"):
        assert row[key] == stats[key], (key, row, stats)


@pytest.mark.parametrize("workers", [0, 2])
def test_chronyds_interleaved_nts_answers_are_counted_as_interleaved(
    peers: Peers, workers: int
) -> None:
    """QA s21 hunt-nts F2: serverstats and the metrics counted chronyd's NTS xleave answers as
    basic (the seal's reason replaced "interleaved") while ``clients`` counted them."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port, metrics_port = free_udp_port(), free_tcp_port(), free_tcp_port()
    toml = nts_server_toml(pki, ntp_port, ke_port, peers.tmp / "keys.json", stratum=8)
    server = peers.tsyncd(
        "tsyncd-nts-server",
        toml.replace("[[nts-ke-server]]", f"workers = {workers}\n[[nts-ke-server]]", 1)
        + f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n',
    )
    chrony = peers.chronyd(
        "chronyd-nts-xleave",
        f"server 127.0.0.1 port {ntp_port} nts ntsport {ke_port} iburst minpoll -2 maxpoll -2"
        f" xleave\nntstrustedcerts {pki.ca}\nport 0\n",
    )

    def chronyd_interleaved(more_than: int = 0) -> list[str] | None:
        row = chrony.ntpdata()
        good = row and row[NTPDATA_INTERLEAVED] == row[NTPDATA_AUTHENTICATED] == "Yes"
        return row if good and int(row[NTPDATA_VALID_RX]) > more_than else None

    row = wait_for("chronyd's authenticated interleaved samples", chronyd_interleaved, timeout=30)
    before = server.ctl("serverstats")["interleaved_answered"]
    assert before >= 1
    # Its answers from now on are interleaved (bar one a loaded machine delays): the count
    # grows with its samples, about one for one (before, read a moment after row, may hold
    # the next answer already).
    more = 8
    last = wait_for(
        f"{more} more samples", lambda: chronyd_interleaved(int(row[NTPDATA_VALID_RX]) + more)
    )
    chrony.proc.stop()  # counters hold still
    stats = server.ctl("serverstats")
    grown = int(last[NTPDATA_VALID_RX]) - int(row[NTPDATA_VALID_RX])
    assert stats["interleaved_answered"] - before >= grown // 2, (row, last, before, stats)
    assert stats["workers"] == workers and stats["nts_naks"] == 0
    [client] = server.ctl("clients")
    assert client["interleaved"] == stats["interleaved_answered"]
    assert client["answered"] == stats["answered"] == stats["nts_requests"]
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    line = 'tsyncd_server_answered_packets_total{mode="interleaved"} '
    assert float(metrics.split(line)[1].split()[0]) == stats["interleaved_answered"]


def test_tsyncd_is_nts_client_of_chronyd(peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    chrony, ntp_port, ke_port = chronyd_nts_server(peers, "chronyd-nts-server", pki.key, pki.chain)
    client = peers.tsyncd(
        "tsyncd-nts-client",
        nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-2, -1)),
    )

    def synced_peer() -> dict[str, object] | None:
        rows = client.ctl("peers")
        good = [r for r in rows if r["state"] == "selected" and r["reach"] >= 0o17]
        return good[0] if good else None

    row = wait_for("tsyncd to select chronyd over NTS", synced_peer, timeout=30)
    assert row["mode"] == "nts"
    assert row["address"] == f"127.0.0.1:{ntp_port}"  # from chronyd's Port Negotiation
    assert row["stratum"] == 5
    nts = row["nts"]
    assert isinstance(nts, dict)
    assert nts["aead"] == "AES-SIV-CMAC-256"  # chrony 4.3 has no AES-GCM-SIV
    assert nts["cookies"] >= 7  # refilled by each response (7 while a request is in flight)
    assert nts["authenticated"] >= 4 and nts["naks"] == 0 and nts["key_exchanges"] == 1
    assert nts["tls_group"] and nts["last_ke"] is not None
    auth = client.ctl("authdata")  # chronyc authdata's view of the same source
    assert [(a["name"], a["auth"]) for a in auth] == [(row["name"], "NTS")]
    assert auth[0]["nts"]["cookies"] >= 7 and auth[0]["nts"]["aead"] == "AES-SIV-CMAC-256"
    status = client.ctl("status")
    assert status["synchronized"] is True and status["stratum"] == 6
    # chronyd's own count of authenticated NTP packets (serverstats field 8 in chrony 4.3).
    stats = chrony.chronyc("serverstats").strip().split(",")
    assert int(stats[5]) >= 1  # NTS-KE connections accepted
    assert int(stats[7]) >= 4  # authenticated NTP packets


def test_tsyncd_resumes_nts_with_saved_cookies_without_ke(peers: Peers) -> None:
    """[nts-client] cookie-storage-path: a restart takes up the saved session, no NTS-KE."""
    pki = make_pki(peers.tmp)
    chrony, ntp_port, ke_port = chronyd_nts_server(peers, "chronyd-nts-resume", pki.key, pki.chain)
    store = peers.tmp / "nts-cookies"
    toml = nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-2, -1)) + (
        f'[nts-client]\ncookie-storage-path = "{store}"\n'
    )

    def nts_row(daemon: Tsyncd) -> dict[str, Any] | None:
        rows = daemon.ctl("peers")
        good = [r for r in rows if r["nts"] and r["nts"]["authenticated"] >= 2]
        return good[0] if good else None

    def ke_connections() -> int:
        return int(chrony.chronyc("serverstats").strip().split(",")[5])

    first = peers.tsyncd("tsyncd-nts-first", toml)
    made = wait_for("authenticated samples", lambda: nts_row(first), timeout=30)
    group = made["nts"]["tls_group"]
    assert ke_connections() == 1 and group
    assert first.proc.stop() == 0
    saved = list(store.iterdir())
    assert len(saved) == 1 and oct(saved[0].stat().st_mode & 0o777) == "0o600"
    held = len(json.loads(saved[0].read_text())["cookies"])
    assert held >= 7  # the session's unused cookies (8 held, minus one in flight)

    second = peers.tsyncd("tsyncd-nts-second", toml)
    row = wait_for("authenticated samples after restart", lambda: nts_row(second), timeout=30)
    nts = row["nts"]
    assert nts["key_exchanges"] == 0 and nts["naks"] == 0  # resumed: no NTS-KE at all
    # The first run's KE made the keys: its age and TLS group (QA s18 hunt-nts-client #7);
    # the counters are this process's, as chronyd's.
    assert nts["tls_group"] == group and nts["last_ke"] > 0
    assert ke_connections() == 1  # chronyd saw no second NTS-KE
    assert row["address"] == f"127.0.0.1:{ntp_port}"
    assert list(store.iterdir()) == []  # taken at start: never sent twice after a crash


def test_a_reload_restarting_an_nts_source_keeps_its_authdata(peers: Peers) -> None:
    """QA s18 hunt-nts-client #7: a reload restarting a changed NTS source that resumes its
    saved session showed KEs 0, TLS group - and NAKs 0, although its keys were still those of
    that handshake.  It keeps the TLS group, AEAD and KE time of the keys, and the counters go
    on (a reload is no restart), in authdata and in the Prometheus counters."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port, metrics_port = free_udp_port(), free_tcp_port(), free_tcp_port()
    conf = (
        f"port {ntp_port}\nntsport {ke_port}\nbindaddress 127.0.0.1\nlocal stratum 5\n"
        f"allow 127.0.0.1\nntsserverkey {pki.key}\nntsservercert {pki.chain}\n"
    )
    chrony = peers.chronyd("chronyd-nts-1", conf)
    store = peers.tmp / "nts-cookies"
    body = nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-3, -2))
    extra = (
        f'[nts-client]\ncookie-storage-path = "{store}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    )
    client = peers.tsyncd("tsyncd-nts-client", body + extra)

    def nts(key_exchanges: int, authenticated: int) -> dict[str, Any] | None:
        rows = client.ctl("authdata")
        n = rows[0]["nts"] if rows else None
        good = n and n["key_exchanges"] == key_exchanges and n["authenticated"] >= authenticated
        return dict(n) if good else None

    first = wait_for("authenticated samples", lambda: nts(1, 2), timeout=30)
    # chronyd restarted without ntsdumpdir: new cookie keys, so one NAK and a second NTS-KE.
    chrony.proc.stop()
    chrony = peers.chronyd("chronyd-nts-2", conf)
    before = wait_for("a NAK and a new NTS-KE", lambda: nts(2, first["authenticated"] + 2))
    assert before["naks"] == 1 and before["tls_group"] and before["aead"] == "AES-SIV-CMAC-256"
    counted = _nts_counters(metrics_port)
    assert counted["key_exchanges"] == 2 and counted["naks"] == 1

    client.config.write_text(client.config.read_text().replace("max-poll = -2", "max-poll = -1"))
    reloaded = client.ctl("reload")
    assert reloaded["sources_stopped"] == reloaded["sources_started"] == [f"127.0.0.1:{ke_port}"]
    after = wait_for("samples after the reload", lambda: nts(2, before["authenticated"] + 2))
    assert "resumes with" in client.proc.output()  # the same keys, no NTS-KE
    for key in ("tls_group", "aead", "naks", "ke_failures"):
        assert after[key] == before[key], key
    assert after["last_ke"] >= before["last_ke"]  # the same NTS-KE, not the reload
    again = _nts_counters(metrics_port)
    assert all(again[key] >= counted[key] for key in counted), (counted, again)
    assert again["authenticated_responses"] > counted["authenticated_responses"]
    assert chrony.chronyc("serverstats").strip().split(",")[5] == "1"  # no NTS-KE on reload


def _nts_counters(metrics_port: int) -> dict[str, float]:
    """The tsyncd_source_nts_* counters of the one NTS source, by name without the prefix."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        m[1]: float(m[2])
        for m in re.finditer(r"^tsyncd_source_nts_(\w+)_total\{[^}]*\} (\S+)$", text, re.M)
    }


@pytest.mark.parametrize("command", ["online", "onoffline"])
def test_an_offline_nts_source_does_no_key_exchange_until_online(
    peers: Peers, command: str
) -> None:
    """Released by ``online``, or by ``onoffline`` once its NTS-KE server has a route."""
    pki = make_pki(peers.tmp)
    chrony, _ntp_port, ke_port = chronyd_nts_server(peers, "chronyd-nts", pki.key, pki.chain)
    name = f"127.0.0.1:{ke_port}"
    client = peers.tsyncd(
        "tsyncd-nts-client", nts_source_toml(pki, name, (-2, -1)) + "offline = true\n"
    )
    row = wait_for("the source shown, waiting", lambda: client.ctl("peers"))[0]
    assert row["online"] is False and "waits for tsyncctl online" in row["state_reason"]
    assert row["select_code"] == "M"  # nothing measured yet
    assert client.ctl("activity")["unknown_address"] == 1
    assert int(chrony.chronyc("serverstats").strip().split(",")[5]) == 0  # no NTS-KE yet
    if command == "online":
        assert client.ctl("online", name) == {"changed": [name], "selected": [name]}
    else:
        assert client.ctl("onoffline") == {"online": [name], "offline": []}

    def authenticated() -> dict[str, Any] | None:
        rows = [r for r in client.ctl("peers") if r["nts"] and r["nts"]["authenticated"] >= 2]
        return rows[0] if rows else None

    row = wait_for("NTS samples once online", authenticated, timeout=30)
    assert row["online"] is True and row["nts"]["key_exchanges"] == 1
    assert int(chrony.chronyc("serverstats").strip().split(",")[5]) == 1


def test_nts_ke_rate_limit_closes_connections_over_it_before_tls(peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    toml = nts_server_toml(pki, ntp_port, ke_port, peers.tmp / "keys.json", stratum=8)
    toml = toml.replace("[keyset]", "rate-limit = { interval = 6, burst = 1, leak = 0 }\n[keyset]")
    server = peers.tsyncd("tsyncd-nts-server", toml)
    # The client's one connection in the burst: chronyd gets its cookies.
    chrony = chronyd_nts_client(peers, "chronyd-nts-client", ntp_port, ke_port, pki.ca)

    def cookies() -> bool:
        rows = [r.split(",") for r in chrony.chronyc("authdata").splitlines() if r]
        return any(r[1] == "NTS" and int(r[8]) >= 1 for r in rows)

    wait_for("chronyd to hold NTS cookies", cookies, timeout=30)
    # The next connection from 127.0.0.1 within 64 s is over the limit: closed at once, no TLS
    # (a connection that is let through waits 5 s for a ClientHello).
    with socket.create_connection(("127.0.0.1", ke_port), timeout=3) as conn:
        assert conn.recv(1) == b""
    stats = server.ctl("serverstats")
    assert stats["nts_ke_failures_by_reason"].get("rate_limited") == 1
    assert stats["nts_ke_completed"] == 1
    shown = server.run_ctl("serverstats")
    assert "  rate_limited" in shown.stdout
    # chronyc clients -k: per client IP, connections, those that gave cookies, those refused.
    [row] = server.ctl("clients", "--nts-ke")
    assert (row["address"], row["received"], row["answered"], row["dropped"]) == (
        "127.0.0.1",
        2,
        1,
        1,
    )
    assert server.ctl("clients", "-k", "-p", "3") == []
    shown = server.run_ctl("clients", "-k")
    assert shown.stdout.split("\n")[0].split() == [
        "Address",
        "NTS-KE",
        "Served",
        "Drop",
        "Int",
        "Last",
    ]
    assert shown.stdout.split("\n")[2].split()[:4] == ["127.0.0.1", "2", "1", "1"]
    # chronyd's NTS requests are the NTP server's clients, counted apart.
    [ntp] = wait_for("chronyd's NTP requests", lambda: server.ctl("clients") or None)
    assert ntp["address"] == "127.0.0.1" and ntp["answered"] >= 1


@pytest.mark.parametrize(
    ("valid_days", "trusted", "why"),
    [
        ((-30, -1), "own", "certificate has expired"),
        ((1, 30), "own", "certificate is not yet valid"),
        ((-1, 30), "other", "certificate signature failure"),  # another CA, the same name
    ],
)
def test_tsyncd_says_why_it_does_not_trust_chronyds_certificate(
    peers: Peers, valid_days: tuple[int, int], trusted: str, why: str
) -> None:
    pki = make_pki(peers.tmp / "pki", valid_days=valid_days)
    other = make_pki(peers.tmp / "other")
    _chrony, _ntp_port, ke_port = chronyd_nts_server(peers, "chronyd-nts", pki.key, pki.chain)
    client = peers.tsyncd(
        "tsyncd-nts-client",
        nts_source_toml(pki if trusted == "own" else other, f"127.0.0.1:{ke_port}", (-2, -1)),
    )

    def failed() -> dict[str, Any] | None:
        rows = client.ctl("peers")
        return rows[0] if rows and rows[0]["nts"]["ke_failures"] >= 1 else None

    row = wait_for("the failed NTS-KE in peers", failed, timeout=20)
    reason = str(row["state_reason"])  # OpenSSL's words may go on ("... or the system clock")
    assert reason.startswith(
        f"NTS-KE failed: NTS-KE with 127.0.0.1:{ke_port}: TLS handshake failed: certificate "
        f"not trusted: {why}"
    )
    assert reason.endswith(" (the server's certificate, CN=localhost)"), reason
