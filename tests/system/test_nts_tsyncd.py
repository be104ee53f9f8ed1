"""tsyncd as NTS client of tsyncd: AES-128-GCM-SIV with chrony's record 1024, the
post-quantum TLS group, and a fleet key change (new key file + ``tsyncctl rekey``) that makes
the server NAK old cookies and the client re-run NTS-KE on its own."""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nts_certs import make_pki, nts_server_toml, nts_source_toml
from peers import (
    Peers,
    Tsyncd,
    ctl_fails,
    free_tcp_port,
    free_udp_port,
    tsyncd_start_fails,
    wait_for,
)


def test_nts_between_two_tsyncds_with_rekey(peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    keys = peers.tmp / "fleet-keys.json"
    server = peers.tsyncd(
        "tsyncd-nts-server",
        nts_server_toml(pki, ntp_port, ke_port, keys, stratum=7),
    )
    client = peers.tsyncd(
        "tsyncd-nts-client",
        nts_source_toml(pki, f"localhost:{ke_port}", (-3, -3)),
    )

    def nts_state(min_auth: int, min_ke: int = 1) -> dict[str, object] | None:
        rows = client.ctl("peers")
        nts = rows[0]["nts"] if rows else None
        ok = nts and nts["authenticated"] >= min_auth and nts["key_exchanges"] >= min_ke
        return nts if ok and rows[0]["state"] == "selected" else None

    nts = wait_for("tsyncd to sync to tsyncd over NTS", lambda: nts_state(4), timeout=30)
    assert nts["aead"] == "AES-128-GCM-SIV"
    assert nts["tls_group"] == "X25519MLKEM768"  # the hybrid, both ends on OpenSSL >= 3.5
    assert nts["cookies"] >= 7  # 8, or 7 while a request is in flight
    assert server.ctl("serverstats")["nts_ke_group"] == "X25519MLKEM768"
    human = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(client.socket), "peers"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert "NTS source" in human and "AES-128-GCM-SIV" in human and "X25519MLKEM768" in human
    # An operator distributes a new fleet key; the server reloads it and NAKs old cookies.
    data = json.loads(keys.read_text())
    data["key"] = secrets.token_bytes(32).hex()
    keys.write_text(json.dumps(data))
    assert server.ctl("rekey")["epoch"] == data["epoch"]
    seen = int(nts["authenticated"])  # type: ignore[call-overload]
    nts = wait_for("the client to re-key after a NAK", lambda: nts_state(seen + 2, 2), timeout=30)
    assert int(nts["naks"]) >= 1  # type: ignore[call-overload]
    stats = server.ctl("serverstats")
    assert stats["nts_naks"] >= 1 and stats["nts_ke_completed"] >= 2
    assert stats["workers"] >= 1  # the rekey reached the worker processes, which NAKed


def test_nts_source_without_ke_server_shows_why(peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    closed = free_tcp_port()  # nothing listens here
    client = peers.tsyncd(
        "tsyncd-nts-lonely", nts_source_toml(pki, f"127.0.0.1:{closed}", (-3, -3))
    )

    def failed() -> dict[str, object] | None:
        rows = client.ctl("peers")
        return rows[0] if rows and rows[0]["nts"]["ke_failures"] >= 1 else None

    row = wait_for("the failed NTS-KE to show in peers", failed, timeout=20)
    assert row["mode"] == "nts" and row["state"] == "init" and row["reach"] == 0
    assert "NTS-KE failed: cannot connect" in str(row["state_reason"])
    assert row["packets_sent"] == 0  # never plain NTP instead
    assert row["select_code"] == "?"  # out for its own reason, as the README's legend says
    table = client.run_ctl("peers").stdout.splitlines()
    assert next(line for line in table if "NTS-KE failed" in line).startswith(
        "^?"
    )  # mode, then state


def test_client_follows_a_later_ke_to_another_ntp_server(peers: Peers) -> None:
    """A new NTS-KE (after an NTS NAK) that names another NTP port moves the association."""
    pki = make_pki(peers.tmp)
    old_port, new_port, ke_port = free_udp_port(), free_udp_port(), free_tcp_port()
    first = peers.tsyncd(
        "tsyncd-nts-old",
        nts_server_toml(pki, old_port, ke_port, peers.tmp / "old-keys.json", stratum=7),
    )
    client = peers.tsyncd(
        "tsyncd-nts-mover", nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-3, -3))
    )

    def row_at(port: int) -> dict[str, Any] | None:
        rows = client.ctl("peers")
        good = rows and rows[0]["address"] == f"127.0.0.1:{port}" and rows[0]["nts"]
        return rows[0] if good and rows[0]["nts"]["authenticated"] >= 2 else None

    wait_for("authenticated samples from the first server", lambda: row_at(old_port), timeout=30)
    assert first.proc.stop() == 0
    # The replacement has new cookie keys (the old cookies get NAKs on the old port, which it
    # still serves) and sends NTS-KE clients to a second port.
    peers.tsyncd(
        "tsyncd-nts-new",
        nts_server_toml(pki, old_port, ke_port, peers.tmp / "new-keys.json", 7, send_to=new_port),
    )
    row = wait_for("the client to move to the new port", lambda: row_at(new_port), timeout=30)
    assert row["nts"]["key_exchanges"] == 2 and row["nts"]["naks"] >= 1


def test_an_ntp_server_that_naks_every_cookie_gets_ntske_with_back_off(peers: Peers) -> None:
    """A KE server whose NTP server does not share its cookie keys (a real misconfiguration:
    every request gets an NTS NAK).  An NTS-KE counts as good only once an authenticated
    response follows it (chrony's nke_attempts), so the client re-keys 10 s, 15 s, ... apart
    instead of every 4 s, sends no NAKed cookie again, and peers says why it waits."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port, unused = free_udp_port(), free_tcp_port(), free_tcp_port()
    peers.tsyncd(  # NTP with keys of its own; its NTS-KE listener is not used
        "tsyncd-nts-ntp", nts_server_toml(pki, ntp_port, unused, peers.tmp / "ntp.json", 7)
    )
    peers.tsyncd(
        "tsyncd-nts-ke",
        f'[[nts-ke-server]]\nlisten = "127.0.0.1:{ke_port}"\nntp-port = {ntp_port}\n'
        f'ntp-server = "127.0.0.1"\ncertificate-chain-path = "{pki.chain}"\n'
        f'private-key-path = "{pki.key}"\n[keyset]\nkey-storage-path = "{peers.tmp / "ke.json"}"\n',
    )
    client = peers.tsyncd(
        "tsyncd-nts-naked", nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-3, -3))
    )

    def nts_row(key_exchanges: int, backing_off: bool = False) -> dict[str, Any] | None:
        rows = client.ctl("peers")
        row = rows[0] if rows and rows[0]["nts"]["key_exchanges"] >= key_exchanges else None
        return row if row and (row["nts"].get("next_ke") or not backing_off) else None

    wait_for("the first NTS-KE", lambda: nts_row(1), timeout=20)
    first = time.monotonic()
    wait_for("a second NTS-KE", lambda: nts_row(2), timeout=30)
    # The first NTS-KE was followed by a NAK only: the second waits 10 s (it used to come
    # 4 s later, and each KE's cookies all went out to be NAKed).
    assert time.monotonic() - first > 9
    row = wait_for("the back-off after it", lambda: nts_row(2, backing_off=True), timeout=5)
    nts = row["nts"]
    assert nts["key_exchanges"] == 2 and nts["naks"] == 2, nts
    assert nts["ke_backoff"] == "NAKed after NTS-KE" and 10 < nts["next_ke"] <= 15, nts
    assert row["packets_sent"] == 2  # one request per NTS-KE: the NAKed cookies are dropped
    table = client.run_ctl("peers").stdout
    assert "NAKed after NTS-KE: next NTS-KE in" in table


def test_bad_or_missing_key_files_are_named_and_keep_the_running_keys(peers: Peers) -> None:
    """A malformed key file: one line at start-up; ``tsyncctl rekey`` exits 1 naming the file
    and the field, keeping the running keys.  A missing file is refused too (a fleet member
    must not draw a key of its own), and so is rekey without NTS."""
    pki = make_pki(peers.tmp)
    keys = peers.tmp / "keys.json"
    toml = nts_server_toml(pki, free_udp_port(), free_tcp_port(), keys, stratum=7)
    # Start-up: no traceback, the file and what it should hold.
    keys.write_text("[]")
    refused = tsyncd_start_fails(peers.tmp, toml, status=1)  # refused with the config
    assert (
        f'keyset.key-storage-path = "{keys}": expected a usable NTS key file, or none yet (NTS '
        f"key file {keys}: expected a JSON object" in refused
    )
    keys.unlink()
    server = peers.tsyncd("tsyncd-nts-server", toml)
    good = keys.read_text()
    stats = server.ctl("serverstats")
    epoch, key_id = stats["nts_key_epoch"], stats["nts_key_id"]
    for content, problem in (
        ("[]", "expected a JSON object"),
        (json.dumps({**json.loads(good), "epoch": "x"}), '"epoch" is "x": expected an integer'),
        (None, "does not exist"),
    ):
        if content is None:
            keys.unlink()
        else:
            keys.write_text(content)
        done = server.run_ctl("rekey")
        assert done.returncode == 1 and "internal error" not in done.stderr
        assert f"NTS key file {keys}" in done.stderr and problem in done.stderr
        assert f"keeping the running NTS keys (epoch {epoch})" in done.stderr
    assert not keys.exists()  # rekey never draws a key of its own
    assert "Traceback" not in server.proc.output()
    keys.write_text(good)
    assert server.ctl("rekey") == {"epoch": epoch, "key_id": key_id, "key_file": str(keys)}
    plain = peers.tsyncd("tsyncd-plain", f'[[server]]\nlisten = "127.0.0.1:{free_udp_port()}"\n')
    done = plain.run_ctl("rekey")
    assert done.returncode == 1 and "NTS is not configured" in done.stderr


def test_an_ntp_server_name_that_does_not_resolve_is_shown_after_the_ke(peers: Peers) -> None:
    """NTS-KE works, but the NTP server it names (RFC 8915 §4.1.7) is not in the DNS: peers
    says so, not "waiting for NTS-KE"."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port, dns_port = free_udp_port(), free_tcp_port(), free_udp_port()
    server_toml = nts_server_toml(pki, ntp_port, ke_port, peers.tmp / "keys.json", stratum=7)
    server_toml = server_toml.replace("[keyset]", 'ntp-server = "ntp.invalid"\n[keyset]')
    peers.tsyncd("tsyncd-nts-server", server_toml)
    hosts = peers.tmp / "hosts"
    hosts.write_text("")
    peers.dnsmasq("dnsmasq", dns_port, hosts)  # knows no name: ntp.invalid gets no address
    client = peers.tsyncd(
        "tsyncd-nts-client",
        nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-3, -3))
        + f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n',
    )

    def unresolved() -> dict[str, Any] | None:
        rows = client.ctl("peers")
        return rows[0] if rows and "cannot resolve" in str(rows[0]["state_reason"]) else None

    row = wait_for("the unresolved NTP server in peers", unresolved, timeout=20)
    assert str(row["state_reason"]).startswith(
        "NTS-KE done; cannot resolve the NTP server ntp.invalid it named: "
    )
    assert row["state"] == "init" and row["nts"]["key_exchanges"] == 1
    assert row["nts"]["cookies"] == 8 and row["packets_sent"] == 0


def test_wildcard_listeners_take_ipv4_and_ipv6_clients(peers: Peers) -> None:
    """``[::]`` is dual-stack for the NTS-KE server and the metrics exporter too, as for the
    NTP server (asyncio's own listeners would be IPv6-only)."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port, metrics_port = free_udp_port(), free_tcp_port(), free_tcp_port()
    toml = nts_server_toml(pki, ntp_port, ke_port, peers.tmp / "keys.json", stratum=7)
    for port in (ntp_port, ke_port):  # NTS-KE sends each client to NTP at the address it used
        toml = toml.replace(f'listen = "127.0.0.1:{port}"', f'listen = "[::]:{port}"')
    server = peers.tsyncd("tsyncd-nts-wild", toml + f'[metrics]\nlisten = "[::]:{metrics_port}"\n')

    def scrape(host: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=10) as r:
                return bytes(r.read())
        except urllib.error.URLError:
            return None  # the exporter starts a moment after the control socket

    for host in ("127.0.0.1", "[::1]"):
        assert b"tsyncd_server" in wait_for(f"metrics over {host}", lambda h=host: scrape(h))
    clients = [
        peers.tsyncd(f"tsyncd-nts-{family}", nts_source_toml(pki, f"{host}:{ke_port}", (-3, -3)))
        for family, host in (("v4", "127.0.0.1"), ("v6", "[::1]"))
    ]
    for client in clients:
        wait_for(
            "an authenticated sample over each family's NTS-KE",
            lambda c=client: (rows := c.ctl("peers")) and rows[0]["nts"]["authenticated"] >= 1,
            timeout=30,
        )
    assert server.ctl("serverstats")["nts_ke_completed"] >= 2


def _handshake(port: int, ca: Path) -> str | None:
    """A TLS 1.3 handshake with the NTS-KE server at 127.0.0.1:``port`` trusting only ``ca``:
    None if it verified, else why not."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["ntske/1"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost"),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)


def test_reload_serves_a_renewed_certificate(peers: Peers) -> None:
    """A renewed certificate (new files at the same paths) serves the next NTS-KE after
    ``tsyncctl reload``, as a certbot deploy hook running ``systemctl reload`` expects; a
    broken renewal is refused and the running certificate kept."""
    old, new = make_pki(peers.tmp / "old"), make_pki(peers.tmp / "new")
    live = peers.tmp / "live"
    live.mkdir()
    chain, key = live / "chain.pem", live / "key.pem"
    chain.write_bytes(old.chain.read_bytes())
    key.write_bytes(old.key.read_bytes())
    ke_port = free_tcp_port()
    toml = nts_server_toml(old, free_udp_port(), ke_port, peers.tmp / "keys.json", stratum=7)
    toml = toml.replace(str(old.chain), str(chain)).replace(str(old.key), str(key))
    server = peers.tsyncd("tsyncd-nts-renew", toml)
    assert wait_for("the NTS-KE listener", lambda: _handshake(ke_port, old.ca) is None or None)
    assert _handshake(ke_port, new.ca) is not None  # the new CA does not know the old one
    assert server.ctl("reload")["certificates_reloaded"] == []  # nothing changed yet
    chain.write_bytes(new.chain.read_bytes())
    key.write_bytes(new.key.read_bytes())
    reloaded = server.ctl("reload")
    assert reloaded["certificates_reloaded"] == ["nts-ke-server[0]"]
    assert reloaded["certificate_errors"] == [] and reloaded["restart_needed"] == []
    assert _handshake(ke_port, new.ca) is None and _handshake(ke_port, old.ca) is not None
    # A half-written renewal (the old key with the new chain) fails the config check: the
    # reload is refused as a whole and the renewed certificate serves on.
    key.write_bytes(old.key.read_bytes())
    refused = server.run_ctl("reload")
    assert refused.returncode == 1 and "private-key-path" in refused.stderr
    assert _handshake(ke_port, new.ca) is None


def test_saved_keys_are_refreshed_when_old_and_not_resumed_under_another_ca(peers: Peers) -> None:
    """QA s18 hunt-nts-client #1: a session saved in cookie-storage-path is taken up with its
    age, and keys older than key-refresh-interval get a new NTS-KE (the old cookies serving
    meanwhile); one twice key-refresh-interval old is not taken up (QA s21 hunt-nts #3: a
    365-day-old one was, and selected), nor one whose certificate-authority's contents changed
    since."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    server = peers.tsyncd(
        "tsyncd-nts-server",
        nts_server_toml(pki, ntp_port, ke_port, peers.tmp / "keys.json", stratum=7),
    )
    ca, store = peers.tmp / "client-ca.pem", peers.tmp / "nts-cookies"
    ca.write_bytes(pki.ca.read_bytes())
    toml = nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-3, -3)).replace(str(pki.ca), str(ca))
    toml += f'[nts-client]\ncookie-storage-path = "{store}"\nkey-refresh-interval = 3600\n'

    def nts_row(client: Tsyncd, key_exchanges: int) -> dict[str, Any] | None:
        rows = client.ctl("peers")
        nts = rows[0]["nts"] if rows else None
        good = nts and nts["key_exchanges"] == key_exchanges and nts["authenticated"] >= 2
        return rows[0] if good else None

    first = peers.tsyncd("tsyncd-nts-first", toml)
    wait_for("authenticated samples", lambda: nts_row(first, 1), timeout=30)
    assert first.proc.stop() == 0
    (saved,) = store.iterdir()
    body = json.loads(saved.read_text())
    assert body["trust"].startswith("sha256:")
    # An hour and a half old: past the interval set (not the default, 4 weeks), not twice it.
    body["ke-time"] = time.time() - 5400
    saved.write_text(json.dumps(body))
    second = peers.tsyncd("tsyncd-nts-second", toml)
    row = wait_for("the refreshed keys in use", lambda: nts_row(second, 1), timeout=30)
    assert row["nts"]["naks"] == 0 and row["nts"]["last_ke"] < 60
    log = second.proc.output()
    assert "resumes with" in log and "keys 5400 s old" in log
    assert "keys are 5400 s old (key-refresh-interval 3600 s); NTS-KE to refresh them" in log
    assert second.proc.stop() == 0
    assert len(list(store.iterdir())) == 1

    # Three hours old: twice the interval and more, so the keys would be dropped at once.
    (saved,) = store.iterdir()
    body = json.loads(saved.read_text())
    body["ke-time"] = time.time() - 3 * 3600
    saved.write_text(json.dumps(body))
    stale = peers.tsyncd("tsyncd-nts-stale", toml)
    wait_for("samples after a new NTS-KE", lambda: nts_row(stale, 1), timeout=30)
    log = stale.proc.output()
    assert "resumes with" not in log and "does not resume the session saved in" in log
    assert "its keys are 10800 s old, twice key-refresh-interval (3600 s) or more" in log
    assert stale.proc.stop() == 0

    ca.write_bytes(pki.ca.read_bytes() + b"\n")  # the same CA, but not the same file
    third = peers.tsyncd("tsyncd-nts-third", toml)
    wait_for("samples after a new NTS-KE", lambda: nts_row(third, 1), timeout=30)
    log = third.proc.output()
    assert "does not resume the session saved in" in log and "resumes with" not in log
    assert "the source now trusts a CA file with SHA-256" in log
    assert server.ctl("serverstats")["nts_ke_completed"] == 4


def test_an_ntp_server_another_source_polls_is_not_polled_twice(peers: Peers) -> None:
    """QA s18 hunt-nts-client #2: NTS-KE names an NTP server that a plain server source (or
    another NTS source) polls already.  As chrony, the NTS source does not poll it too (one
    server must not count twice toward min-sources), says why in peers, and retries NTS-KE
    later with the usual back-off.  A saved session is no exception: the configured server
    listed after it keeps its address."""
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    peers.tsyncd(
        "tsyncd-nts-server",
        nts_server_toml(pki, ntp_port, ke_port, peers.tmp / "keys.json", stratum=7),
    )
    store = peers.tmp / "nts-cookies"
    nts = nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-3, -3)) + 'name = "nts"\n'
    plain = (
        f'[[source]]\nmode = "server"\naddress = "127.0.0.1:{ntp_port}"\nname = "plain"\n'
        "min-poll = -3\nmax-poll = -3\n"
    )
    storage = f'[nts-client]\ncookie-storage-path = "{store}"\n'

    def refused(client: Tsyncd) -> dict[str, Any] | None:
        rows = {r["name"]: r for r in client.ctl("peers")}
        row = rows.get("nts")
        ok = row and "polled by another source" in str(row["state_reason"]) and "plain" in rows
        return row if ok and row["nts"]["next_ke"] else None

    # The server source polls the address first; the NTS source's NTS-KE names it.
    first = peers.tsyncd("tsyncd-twice", "[synchronization]\nmin-sources = 2\n" + plain + nts)
    row = wait_for("the NTS source to refuse the address", lambda: refused(first), timeout=30)
    assert row["state_reason"] == (
        f"NTS-KE done; its NTP server is polled by another source (127.0.0.1:{ntp_port} by plain)"
    )
    assert row["select_code"] == "?" and row["packets_sent"] == 0
    # QA s21 hunt-nts #5: an NTS-KE whose keys are never used is a failed one, of no key age.
    assert row["nts"]["key_exchanges"] == 0 and row["nts"]["ke_failures"] >= 1
    assert row["nts"]["cookies"] == 0 and row["nts"]["last_ke"] is None
    assert row["nts"]["ke_backoff"] == "its NTP server is polled by another source"
    assert 5 < row["nts"]["next_ke"] <= 10
    assert [r["address"] for r in first.ctl("peers")].count(f"127.0.0.1:{ntp_port}") == 1
    note = next(line for line in first.run_ctl("peers").stdout.splitlines() if "NTS-KE" in line)
    assert f"(127.0.0.1:{ntp_port} by plain); next NTS-KE in " in note
    assert first.ctl("tracking")["synchronized"] is False  # min-sources = 2: one server only
    log = first.proc.output()
    assert f"nts: NTS-KE named 127.0.0.1:{ntp_port} for NTP, which another source polls" in log
    assert first.proc.stop() == 0

    # Two NTS sources whose NTS-KEs name the same server: one polls it, the other waits.
    by_name = nts_source_toml(pki, f"localhost:{ke_port}", (-3, -3)) + 'name = "n2"\n'
    pair = peers.tsyncd("tsyncd-nts-pair", nts + by_name)

    def one_refused() -> list[dict[str, Any]] | None:
        rows = sorted(pair.ctl("peers"), key=lambda r: bool(r["address"]))
        reasons = [str(r["state_reason"]) for r in rows]
        return rows if len(rows) == 2 and "polled by another source" in reasons[0] else None

    waiting, polling = wait_for("one NTS source to wait", one_refused, timeout=30)
    assert polling["address"] == f"127.0.0.1:{ntp_port}" and not waiting["address"]
    assert f"(127.0.0.1:{ntp_port} by {polling['name']})" in waiting["state_reason"]
    assert pair.proc.stop() == 0

    # A pool's member there is taken over (the pool, finding no other address, has none).
    pool = f'[[source]]\nmode = "pool"\naddress = "127.0.0.1:{ntp_port}"\nname = "p"\n'
    pooled = peers.tsyncd("tsyncd-nts-pooled", pool + nts)

    def nts_polls() -> list[dict[str, Any]] | None:
        rows = [r for r in pooled.ctl("peers") if r["address"] == f"127.0.0.1:{ntp_port}"]
        return rows if [r["name"] for r in rows] == ["nts"] and rows[0]["reach"] else None

    wait_for("the NTS source to take the pool's member over", nts_polls, timeout=30)
    assert f"nts: 127.0.0.1:{ntp_port} of p polls it; taking it over" in pooled.proc.output()
    assert pooled.proc.stop() == 0

    # A saved session naming it, in a file where the NTS source comes first.
    alone = peers.tsyncd("tsyncd-nts-alone", nts + storage)
    wait_for("an authenticated sample", lambda: alone.ctl("peers")[0]["nts"]["authenticated"] >= 1)
    # Nor does tsyncctl add a server there (as for an address a server name resolved to).
    error = ctl_fails(alone, "add", f"127.0.0.1:{ntp_port}")
    assert "(same as source nts, which polls it as the NTP server its NTS-KE named)" in error
    assert alone.proc.stop() == 0
    second = peers.tsyncd("tsyncd-resumed", nts + plain + storage)
    row = wait_for("the resumed session to refuse it", lambda: refused(second), timeout=30)
    assert "resumes with" in second.proc.output()
    assert [r["name"] for r in second.ctl("peers") if r["address"]] == ["plain"]
