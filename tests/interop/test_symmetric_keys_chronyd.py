"""Symmetric-key authentication (RFC 5905 MAC; chrony's ``keyfile`` and ``key``) against real
chronyd with the same key file: tsyncd as client (MD5, SHA256 and AES128 keys, and a key whose
secret differs), chronyd as client of tsyncd's server, and signed symmetric peers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from peers import (
    NTPDATA_AUTHENTICATED,
    NTPDATA_MODE,
    NTPDATA_VALID_RX,
    Chronyd,
    Peers,
    fast_sources_toml,
    free_udp_port,
    peer_source_toml,
    wait_for,
)

KEYS = """\
1 MD5 HEX:00112233445566778899AABBCCDDEEFF
2 SHA256 HEX:000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F
3 AES128 HEX:000102030405060708090A0B0C0D0E0F
4 SHA1 ASCII:the-servers-secret
"""


def key_file(peers: Peers, name: str, text: str = KEYS) -> Path:
    path = peers.tmp / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def rows(client: Any) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in client.ctl("peers")}


def test_tsyncd_signs_requests_to_chronyd_and_demands_signed_replies(peers: Peers) -> None:
    port = free_udp_port()
    theirs = key_file(peers, "chrony.keys")
    for i in (1, 2, 3, 4):
        peers.chronyd(
            f"chronyd-{i}",
            f"port {port}\nbindaddress 127.0.0.{i}\nlocal stratum {i + 4}\n"
            f"allow 127.0.0.1\nkeyfile {theirs}\n",
        )
    ours = key_file(peers, "tsyncd.keys", KEYS.replace("the-servers-secret", "another-secret"))
    names = [f"127.0.0.{i}:{port}" for i in (1, 2, 3, 4)]
    client = peers.tsyncd(
        "tsyncd",
        f'[keys]\nfile = "{ours}"\n'
        + "".join(fast_sources_toml(n, extra=f"key = {i}\n") for i, n in enumerate(names, 1)),
    )

    def three_reached() -> dict[str, dict[str, Any]] | None:
        now = rows(client)
        good = all(now[n]["reach"] & 0o17 == 0o17 for n in names[:3]) if len(now) == 4 else False
        return now if good and now[names[3]]["packets_sent"] >= 8 else None

    now = wait_for("the three keys' servers reached", three_reached)
    assert [now[n]["stratum"] for n in names[:3]] == [5, 6, 7]
    # Key 4's secret differs: chronyd cannot verify our requests and drops them, as it would
    # drop a reply signed wrongly; the source never reaches.
    assert now[names[3]]["reach"] == 0 and now[names[3]]["packets_received"] == 0
    auth = {r["name"]: r for r in client.ctl("authdata")}
    assert [(auth[n]["auth"], auth[n]["key_id"], auth[n]["key_type"]) for n in names] == [
        ("SK", 1, "MD5"),
        ("SK", 2, "SHA256"),
        ("SK", 3, "AES128"),
        ("SK", 4, "SHA1"),
    ]


def chronyd_client_of(peers: Peers, name: str, port: int, key: int, keys: Path) -> Chronyd:
    return peers.chronyd(
        name,
        f"port 0\nkeyfile {keys}\n"
        f"server 127.0.0.1 port {port} key {key} minpoll -3 maxpoll -3 iburst noselect\n",
    )


def test_chronyd_signs_to_tsyncd_server_and_gets_signed_answers(peers: Peers) -> None:
    port = free_udp_port()
    ours = key_file(peers, "tsyncd.keys")
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[keys]\nfile = "{ours}"\n'
        f'[[server]]\nlisten = "127.0.0.1:{port}"\n',
    )
    good = chronyd_client_of(peers, "chronyd-sha256", port, 2, key_file(peers, "c.keys"))
    wrong = key_file(peers, "wrong.keys", "2 SHA256 HEX:" + "55" * 32 + "\n")
    bad = chronyd_client_of(peers, "chronyd-wrong", port, 2, wrong)

    def authenticated(chrony: Chronyd) -> list[str] | None:
        row = chrony.ntpdata()
        return row if row is not None and int(row[NTPDATA_VALID_RX]) >= 4 else None

    row = wait_for("chronyd to get 4 valid signed answers", lambda: authenticated(good))
    assert row[NTPDATA_MODE] == "Server" and row[NTPDATA_AUTHENTICATED] == "Yes"
    stats = wait_for(
        "tsyncd to drop the wrongly signed requests",
        lambda: (s := server.ctl("serverstats"))["dropped_by_reason"].get("bad_mac", 0) >= 4 and s,
    )
    assert stats["answered"] >= 4
    assert bad.ntpdata() is None or int(bad.ntpdata()[NTPDATA_VALID_RX]) == 0  # type: ignore[index]


def test_signed_symmetric_peers(peers: Peers) -> None:
    """SHA256: chronyd sends NTPv3 with the whole 32-byte digest, tsyncd NTPv4 with 20."""
    chrony_port, our_port = free_udp_port(), free_udp_port()
    # The key made by tsyncctl keygen: chronyd reads its line as tsyncd does.
    line = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "keygen", "2", "SHA256", "256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keys = key_file(peers, "peer.keys", line)
    chrony = peers.chronyd(
        "chronyd-peer",
        f"port {chrony_port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n"
        f"keyfile {keys}\npeer 127.0.0.1 port {our_port} key 2 minpoll -2 maxpoll -2 noselect\n",
    )
    tsyncd = peers.tsyncd(
        "tsyncd-peer",
        peer_source_toml(our_port, chrony_port, "key = 2\n") + f'[keys]\nfile = "{keys}"\n',
    )
    row = wait_for(
        "tsyncd to measure its signed peer",
        lambda: [r for r in tsyncd.ctl("peers") if r["reach"] & 0o17 == 0o17],
        timeout=30,
    )[0]
    assert row["mode"] == "peer" and row["key_id"] == 2 and row["stratum"] in (10, 11)

    def theirs() -> list[str] | None:
        r = chrony.ntpdata()
        return r if r is not None and int(r[NTPDATA_VALID_RX]) >= 4 else None

    ntpdata = wait_for("chronyd to take tsyncd's signed packets", theirs, timeout=30)
    assert ntpdata[NTPDATA_AUTHENTICATED] == "Yes"


def test_unsigned_answers_to_signed_requests_are_dropped(peers: Peers) -> None:
    """A server without keys (tsyncd's, which ignores MACs and answers unsigned) never gets
    to set a keyed source's clock."""
    port = free_udp_port()
    peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[[server]]\nlisten = "127.0.0.1:{port}"\n',
    )
    keys = key_file(peers, "tsyncd.keys")
    name = f"127.0.0.1:{port}"
    client = peers.tsyncd(
        "tsyncd-client", f'[keys]\nfile = "{keys}"\n' + fast_sources_toml(name, extra="key = 1\n")
    )
    row = wait_for(
        "8 answers dropped",
        lambda: (r := rows(client).get(name)) and r["packets_dropped"] >= 8 and r,
    )
    assert row["reach"] == 0 and row["packets_received"] == 0 and row["state"] != "selected"
    ntpdata = client.ctl("ntpdata", name)[0]
    assert ntpdata["packets_dropped"] >= 8
    # Why is shown (QA s16 hunt-sync F6): by reason, and in the Note while no reply is valid.
    assert set(ntpdata["drops_by_reason"]) == {"no_mac"}
    assert re.fullmatch(r"no valid reply yet: \d+ dropped, no_mac", ntpdata["state_reason"])
    assert "dropped, no_mac" in client.run_ctl("peers").stdout
    assert re.search(r"^\s+no_mac\s+: \d+$", client.run_ctl("ntpdata").stdout, re.M)
    # A reload takes a new key into use for sources; the server keeps its keys to a restart.
    keys.write_text(KEYS + "9 SHA512 HEX:" + "42" * 64 + "\n")
    assert client.ctl("reload")["restart_needed"] == ["keys"]
    assert client.ctl("add", "127.0.0.9:123", "--key", "9") == {"name": "127.0.0.9:123"}
    wait_for("the added source signing with key 9", lambda: rows(client).get("127.0.0.9:123"))
    assert {r["name"]: r["key_id"] for r in client.ctl("authdata")}["127.0.0.9:123"] == 9
