"""NTP between tsyncd and real chronyd / ntpsec ntpdig, on loopback (or a private netns).

Every chronyd runs with ``-x``, so it never touches the host clock; tsyncd runs in measure mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from peers import Peers, free_udp_port, require, wait_for


def test_chronyd_selects_tsyncd_server(peers: Peers) -> None:
    port = free_udp_port()
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\n[[server]]\nlisten = "127.0.0.1:{port}"\n',
    )
    chrony = peers.chronyd(
        "chronyd-client",
        f"server 127.0.0.1 port {port} iburst minpoll -2 maxpoll -2\nport 0\n",
    )

    def selected() -> list[str] | None:
        rows = [r for r in chrony.sources() if r[2] == "127.0.0.1"]
        return rows[0] if rows and rows[0][1] == "*" else None

    row = wait_for("chronyd to select tsyncd (state '*')", selected, timeout=30)
    assert row[3] == "8"  # the stratum tsyncd serves from its local clock
    # chronyd's own measurement of us: offset of a loopback server is tiny.
    stats = chrony.chronyc("sourcestats")
    assert "127.0.0.1" in stats
    tracking = chrony.chronyc("tracking").split(",")
    assert tracking[2] == "9", tracking  # chronyd is stratum 9 behind tsyncd's 8
    assert abs(float(tracking[4])) < 1e-3, tracking  # last offset, s
    counters = server.ctl("serverstats")
    assert counters["received"] >= 4 and counters["sent"] == counters["received"]


def test_tsyncd_syncs_from_chronyd(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd(
        "chronyd-server",
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 5\nallow 127.0.0.1\n",
    )
    client = peers.tsyncd(
        "tsyncd-client",
        textwrap.dedent(
            f"""
            [[source]]
            mode = "server"
            address = "127.0.0.1:{port}"
            iburst = true
            min-poll = -2
            max-poll = -1
            """
        ),
    )

    def synced_peer() -> dict[str, object] | None:
        rows = client.ctl("peers")
        good = [r for r in rows if r["state"] == "selected" and r["reach"] >= 0o17]
        return good[0] if good else None

    row = wait_for("tsyncd to select chronyd with 4 good replies", synced_peer, timeout=30)
    assert row["address"] == f"127.0.0.1:{port}"
    assert row["mode"] == "server"
    assert row["stratum"] == 5
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
    assert isinstance(row["delay"], float) and 0 < row["delay"] < 1e-3
    assert isinstance(row["jitter"], float) and row["jitter"] >= 0
    assert isinstance(row["poll"], int) and -2 <= row["poll"] <= -1
    status = client.ctl("status")
    assert status["synchronized"] is True
    assert status["stratum"] == 6
    assert status["reference_id"] == "127.0.0.1"
    assert abs(status["offset"]) < 1e-3
    assert status["leap"] == "none"


def test_tsyncctl_query_against_chronyd(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd(
        "chronyd-server",
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 3\nallow 127.0.0.1\n",
    )
    query = [sys.executable, "-m", "tsyncctl", "query", f"127.0.0.1:{port}", "-i", "0.1"]
    done = subprocess.run(
        [*query, "--count", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["address"] == f"127.0.0.1:{port}" and result["errors"] == []
    assert len(result["replies"]) == 2
    for reply in result["replies"]:
        assert reply["stratum"] == 3 and reply["leap"] == "none" and reply["version"] == 4
        assert abs(reply["offset"]) < 1e-3  # same host, same clock
        assert 0 <= reply["delay"] < 1e-3
    human = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"127.0.0.1:{port} offset ")
    assert " stratum 3 refid " in human.stdout


def test_ntpdig_reads_tsyncd(tmp_path: Path) -> None:
    """ntpdig has no port option, so tsyncd serves port 123 in a private user+network namespace
    (no root needed, and nothing binds the host's port 123)."""
    ntpdig = require("ntpdig")
    require("unshare")
    sock = tmp_path / "tsyncd.sock"
    conf = tmp_path / "tsyncd.toml"
    conf.write_text(
        textwrap.dedent(
            f"""
            [clock]
            mode = "measure"
            [synchronization]
            local-stratum = 7
            [[server]]
            listen = "127.0.0.1:123"
            [control]
            socket = "{sock}"
            """
        )
    )
    script = textwrap.dedent(
        f"""
        set -e
        ip link set lo up
        {sys.executable} -m tsyncd -c {conf} 2>{tmp_path}/tsyncd.log &
        pid=$!
        trap 'kill $pid' EXIT
        for i in $(seq 1 100); do [ -S {sock} ] && break; sleep 0.05; done
        {ntpdig} -j -p 2 -t 5 127.0.0.1
        """
    )
    # Root needs no user namespace for its own network namespace, and a chrooted process may
    # not create one (user_namespaces(7)), so the mapping is only asked for when not root.
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    done = subprocess.run(
        ["unshare", "--net", *userns, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log = (tmp_path / "tsyncd.log").read_text() if (tmp_path / "tsyncd.log").exists() else ""
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log}"
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["stratum"] == 7
    assert answer["leap"] in ("no-leap", "none", 0)
    assert abs(float(answer["offset"])) < 0.01
