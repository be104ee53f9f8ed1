"""TSQ through the daemon: tsyncd serving both variants, tsyncd syncing to each over QUIC."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from peers import Peers, free_udp_port, wait_for
from tsqcerts import make_pki, tsq_servers_toml

from tsyncd.net.quic import client_configuration
from tsyncd.net.tsq import TsqClient, TsqClientError


def tsq_source_toml(port: int, transport: str, ca: Path) -> str:
    return textwrap.dedent(
        f"""
        [[source]]
        mode = "tsq"
        address = "127.0.0.1:{port}"
        transport = "{transport}"
        certificate-authority = "{ca}"
        iburst = true
        min-poll = -3
        max-poll = -2
        """
    )


def test_daemon_syncs_over_both_tsq_variants(peers: Peers, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    stream, datagram = free_udp_port(), free_udp_port()
    server = peers.tsyncd(
        "server",
        "[synchronization]\nlocal-stratum = 4\n"
        + tsq_servers_toml(tmp_path / "pki", stream, datagram),
    )
    client = peers.tsyncd(
        "client",
        tsq_source_toml(stream, "stream", pki.ca) + tsq_source_toml(datagram, "datagram", pki.ca),
    )
    status = wait_for(
        "the client to sync over TSQ",
        lambda: (s := client.ctl("status"))["synchronized"] and s,
    )
    # The server described itself (Time Source Info): local stratum 4, so we are at 5.
    # Loopback: the offset is ~0; 10 ms leaves room for a loaded 2-core machine, where the
    # first samples after a handshake can have asymmetric delays of a few ms.
    assert status["stratum"] == 5 and abs(status["offset"]) < 0.01

    def both_reached() -> list[dict[str, object]] | None:
        rows: list[dict[str, object]] = client.ctl("peers")
        return rows if all(int(str(r["reach"])) & 3 == 3 for r in rows) else None

    rows = wait_for("both TSQ sources to be reached", both_reached)
    assert {r["mode"] for r in rows} == {"tsq"} and len(rows) == 2
    assert all(r["stratum"] == 4 and float(str(r["delay"])) < 0.05 for r in rows)
    stats = server.ctl("serverstats")["tsq"]
    assert [s["transport"] for s in stats] == ["stream", "datagram"]
    for s in stats:
        assert s["sent"] >= 2 and s["dropped"] == 0
        # One connection reused across polls, not one per query.
        assert s["connections_accepted"] == 1 and s["connections"] == 1
    assert "TSQ query from 127.0.0.1:" in server.proc.output()
    text = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(server.socket), "serverstats"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert "TSQ datagram" in text and "Responses sent" in text


def test_wrong_ca_never_syncs_and_bad_key_refuses_to_start(peers: Peers, tmp_path: Path) -> None:
    make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other")
    stream, datagram = free_udp_port(), free_udp_port()
    server = peers.tsyncd(
        "server",
        "[synchronization]\nlocal-stratum = 4\n"
        + tsq_servers_toml(tmp_path / "pki", stream, datagram),
    )
    client = peers.tsyncd("client", tsq_source_toml(datagram, "datagram", other.ca))
    wait_for(
        "the client to log the failed verification",
        lambda: (
            "TSQ source 127.0.0.1:" in client.proc.output() and "handshake" in client.proc.output()
        ),
    )
    assert client.ctl("status")["synchronized"] is False
    assert client.ctl("peers")[0]["reach"] == 0
    # A new connection fails at every poll: aioquic's own line about it is said once, not at
    # every poll (tsyncd's own is said once until it changes).
    wait_for("more polls", lambda: client.ctl("peers")[0]["packets_sent"] >= 6)
    assert client.proc.output().count("certificate signature failure") == 2
    # tsyncctl peers says why, not "no valid reply yet".
    assert client.ctl("peers")[0]["state_reason"] == (
        f"TSQ failed: QUIC handshake with 127.0.0.1:{datagram}: certificate signature failure"
    )
    assert server.ctl("serverstats")["tsq"][1]["sent"] == 0
    # A key file that is not PEM: the config check refuses it, naming the key and the file.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "chain.pem").write_bytes((tmp_path / "pki" / "chain.pem").read_bytes())
    (bad / "key.pem").write_text("not a key\n")
    conf = tmp_path / "broken.toml"
    conf.write_text(
        '[clock]\nmode = "measure"\n'
        f'[control]\nsocket = "{tmp_path / "broken.sock"}"\n'
        + tsq_servers_toml(bad, free_udp_port(), free_udp_port())
    )
    done = subprocess.run(
        [sys.executable, "-m", "tsyncd", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 1
    assert (
        f'{conf}: tsq-server[0].private-key-path = "{bad / "key.pem"}": expected a readable PEM '
        "private key (no PEM private key in it)"
    ) in done.stderr


def test_tsq_source_reconnects_after_the_server_restarts(peers: Peers, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    stream, datagram = free_udp_port(), free_udp_port()
    servers = "[synchronization]\nlocal-stratum = 4\n" + tsq_servers_toml(
        tmp_path / "pki", stream, datagram
    )
    first = peers.tsyncd("first", servers)
    client = peers.tsyncd(
        "client",
        tsq_source_toml(stream, "stream", pki.ca) + tsq_source_toml(datagram, "datagram", pki.ca),
    )
    wait_for("the client to sync", lambda: client.ctl("status")["synchronized"])
    # Both sources connected to the first server (syncing needs only one of them).
    wait_for(
        "both sources answered",
        lambda: all(s["sent"] >= 1 for s in first.ctl("serverstats")["tsq"]),
    )
    first.proc.stop()  # closes its connections (CONNECTION_CLOSE)
    second = peers.tsyncd("second", servers)

    def both_answered() -> bool:
        return all(s["sent"] >= 2 for s in second.ctl("serverstats")["tsq"])

    wait_for("the client to reconnect to the restarted server", both_answered)
    assert all(s["connections_accepted"] == 1 for s in second.ctl("serverstats")["tsq"])
    assert client.proc.output().count("connected (stream)") == 2


def test_unsynchronized_server_keeps_the_connection(peers: Peers, tmp_path: Path) -> None:
    """A server that says it is not synchronized answers fine: each reply is a bad sample
    (dropped, with a Note saying why), not a reason for a new handshake at every poll, and
    the log says "connected" once per source, not at every poll."""
    pki = make_pki(tmp_path / "pki")
    stream, datagram = free_udp_port(), free_udp_port()
    server = peers.tsyncd("server", tsq_servers_toml(tmp_path / "pki", stream, datagram))
    client = peers.tsyncd(
        "client",
        tsq_source_toml(stream, "stream", pki.ca) + tsq_source_toml(datagram, "datagram", pki.ca),
    )
    wait_for(
        "five answered polls of each source",
        lambda: all(s["sent"] >= 5 for s in server.ctl("serverstats")["tsq"]),
    )
    assert [s["connections_accepted"] for s in server.ctl("serverstats")["tsq"]] == [1, 1]
    for row in client.ctl("peers"):
        assert row["reach"] == 0
        assert str(row["state_reason"]).startswith(
            "TSQ failed: the server says it is not synchronized"
        )
    log = client.proc.output()
    assert log.count("connected (stream)") == 1 and log.count("connected (datagram)") == 1
    assert log.count("the server says it is not synchronized") == 2  # once per source


def _tsq_handshake(port: int, ca: Path) -> str | None:
    """A QUIC handshake with the TSQ datagram server at 127.0.0.1:``port`` trusting only
    ``ca``: None if it verified, else why not."""

    async def go() -> str | None:
        config = client_configuration("datagram", server_name="localhost", ca_file=ca)
        try:
            client = await TsqClient.connect(
                "127.0.0.1", port, config, now_ns=time.time_ns, timeout_s=5
            )
        except TsqClientError as exc:
            return str(exc)
        client.close()
        return None

    return asyncio.run(go())


def test_reload_serves_a_renewed_tsq_certificate(peers: Peers, tmp_path: Path) -> None:
    """A renewed certificate (new files at the same paths) serves the next TSQ connection
    after ``tsyncctl reload``, as for NTS-KE; a broken renewal is refused and the running
    certificate kept."""
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    chain, key = live / "chain.pem", live / "key.pem"
    chain.write_bytes(old.chain.read_bytes())
    key.write_bytes(old.key.read_bytes())
    stream, datagram = free_udp_port(), free_udp_port()
    server = peers.tsyncd("server", tsq_servers_toml(live, stream, datagram))
    assert wait_for("the TSQ server", lambda: _tsq_handshake(datagram, old.ca) is None or None)
    assert "certificate" in str(_tsq_handshake(datagram, new.ca))
    assert server.ctl("reload")["certificates_reloaded"] == []  # nothing changed yet
    chain.write_bytes(new.chain.read_bytes())
    key.write_bytes(new.key.read_bytes())
    reloaded = server.ctl("reload")
    assert reloaded["certificates_reloaded"] == ["tsq-server[0]", "tsq-server[1]"]
    assert reloaded["certificate_errors"] == [] and reloaded["restart_needed"] == []
    assert _tsq_handshake(datagram, new.ca) is None
    assert _tsq_handshake(datagram, old.ca) is not None
    # A half-written renewal (the old key with the new chain) fails the config check: the
    # reload is refused as a whole and the renewed certificate serves on.
    key.write_bytes(old.key.read_bytes())
    refused = server.run_ctl("reload")
    assert refused.returncode == 1 and "private-key-path" in refused.stderr
    assert _tsq_handshake(datagram, new.ca) is None
