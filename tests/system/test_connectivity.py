"""``tsyncctl offline`` / ``online`` / ``onoffline`` / ``activity`` (chronyc's), against real
chronyd servers (``-x``) on loopback, and routes that come and go in a network namespace of
the test's own."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from netns import NetnsPeers
from peers import (
    Peers,
    Tsyncd,
    ctl_fails,
    fast_sources_toml,
    free_udp_port,
    require,
    wait_for,
)


def rows(daemon: Tsyncd) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in daemon.ctl("peers")}


def sent_while(daemon: Tsyncd, watched: str, running: str, polls: int = 4) -> int:
    """Packets ``watched`` sent while ``running`` sent ``polls`` more (a clock for the test)."""
    before = rows(daemon)
    wait_for(
        f"{running} to poll {polls} more times",
        lambda: rows(daemon)[running]["packets_sent"] >= before[running]["packets_sent"] + polls,
    )
    return int(rows(daemon)[watched]["packets_sent"] - before[watched]["packets_sent"])


def test_offline_online_and_activity_against_chronyd(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (1, 2, 3))
    a, b, c = (f"127.0.0.{i}:{port}" for i in (1, 2, 3))
    client = peers.tsyncd("tsyncd", fast_sources_toml(a, b))
    wait_for(
        "both sources reached",
        lambda: len(rs := rows(client)) == 2 and all(r["reach"] for r in rs.values()),
    )
    activity = client.ctl("activity")
    assert activity["online"] + activity["burst_online"] == 2
    assert activity["offline"] == activity["burst_offline"] == activity["unknown_address"] == 0

    # By network: only b.
    assert client.ctl("offline", "127.0.0.2/32") == {"changed": [b], "selected": [b]}
    assert client.ctl("offline", b) == {"changed": [], "selected": [b]}  # already
    assert rows(client)[b]["online"] is False and rows(client)[a]["online"] is True
    reach = rows(client)[b]["reach"]
    assert sent_while(client, b, a) == 0
    assert rows(client)[b]["reach"] == reach  # not aged while offline
    assert client.ctl("activity")["offline"] == 1
    table = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(client.socket), "peers"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by_name = {line.split()[1]: line for line in table.splitlines() if len(line.split()) > 1}
    assert by_name[b].endswith(" offline") and not by_name[a].endswith(" offline")  # Note

    # Back online: polling again, and as chronyd answers, reached.
    assert client.ctl("online", b)["changed"] == [b]
    assert sent_while(client, b, a) > 0
    assert client.ctl("activity")["offline"] == 0

    # All offline: a source added now starts offline too, until 'online' for all.
    assert sorted(client.ctl("offline")["changed"]) == sorted([a, b])
    assert client.ctl("add", c, "--min-poll", "-3", "--max-poll", "-3") == {"name": c}
    wait_for("the added source mobilized", lambda: c in rows(client))
    assert rows(client)[c]["online"] is False and rows(client)[c]["packets_sent"] == 0
    assert client.ctl("activity")["offline"] == 3
    assert sorted(client.ctl("online")["changed"]) == sorted([a, b, c])
    wait_for("the added source answered", lambda: rows(client)[c]["reach"] != 0)

    # A selector that matches nothing changes nothing and says so.
    error = ctl_fails(client, "offline", b, "203.0.113.0/24")
    assert error.startswith("tsyncctl: offline: no source matches 203.0.113.0/24 (sources: ")
    assert all(r["online"] for r in rows(client).values())


def test_onoffline_follows_the_routes(netns_peers: NetnsPeers) -> None:
    """In the namespace, loopback is routed and 198.51.100.7 is not, until a default route
    appears (a link coming up): onoffline sets each source by its route, as chronyd's does."""
    port = free_udp_port()
    netns_peers.chronyd_servers(port, (1,))
    near, far = f"127.0.0.1:{port}", "198.51.100.7:123"
    client = netns_peers.tsyncd("tsyncd", fast_sources_toml(near, far))
    wait_for("the loopback source reached", lambda: rows(client)[near]["reach"] != 0)

    assert client.ctl("onoffline") == {"online": [near], "offline": [far]}
    assert client.ctl("activity")["offline"] == 1
    assert sent_while(client, far, near) == 0

    ip = require("ip")
    subprocess.run([*netns_peers.enter, ip, "route", "add", "default", "dev", "v0"], check=True)
    assert client.ctl("onoffline", "198.51.100.0/24") == {"online": [far], "offline": []}
    assert sent_while(client, far, near) > 0
    assert client.ctl("activity")["offline"] == 0


def test_a_source_configured_offline_waits_for_online(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (1, 2))
    quiet, busy = f"127.0.0.1:{port}", f"127.0.0.2:{port}"
    client = peers.tsyncd(
        "tsyncd", fast_sources_toml(quiet, extra="offline = true\n") + fast_sources_toml(busy)
    )
    wait_for("both mobilized", lambda: len(rows(client)) == 2)
    assert rows(client)[quiet]["online"] is False
    assert sent_while(client, quiet, busy) == 0 and rows(client)[quiet]["packets_sent"] == 0
    assert client.ctl("online", quiet)["changed"] == [quiet]
    wait_for("the source reached once online", lambda: rows(client)[quiet]["reach"] != 0)
    # tsyncctl add --offline: the same, for a source added at run time.
    later = f"127.0.0.3:{port}"
    assert client.ctl("add", later, "--offline", "--min-poll", "-3") == {"name": later}
    wait_for("the added source mobilized", lambda: later in rows(client))
    assert rows(client)[later]["online"] is False
