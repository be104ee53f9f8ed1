"""Broadcast mode over multicast groups (IPv6 ff05::101, IPv4 224.0.1.1), for real.

The host's loopback has no MULTICAST flag, so each test runs its daemons in a network
namespace of its own (the ``netns_peers`` fixture, tests/netns.py), where ``v0`` carries the
multicast routes.  Multicasts sent on v0 are looped back to the namespace's own members;
nothing leaves it.
"""

from __future__ import annotations

import subprocess
import textwrap
from typing import Any

from broadcast_clients import broadcast_client, chronyd_broadcaster, host_offset, selected
from netns import SERVER4, SERVER6, NetnsPeers
from peers import free_udp_port, require, wait_for


def test_tsyncd_hears_chronyd_on_ipv6_and_ipv4_multicast_groups_and_calibrates(
    netns_peers: NetnsPeers,
) -> None:
    chrony, bport, server_port = chronyd_broadcaster(
        netns_peers, "chronyd-mcast", "all", "ff05::101", "224.0.1.1"
    )
    # IPv6: the group, its one server (calibrated against it: broadcast-delay is 0.5 s off).
    six = broadcast_client(
        netns_peers,
        "tsyncd-mcast6",
        f"[ff05::101]:{bport}",
        broadcast_server=f"[{SERVER6}]:{server_port}",
        broadcast_interface="v0",
        broadcast_calibrate=True,
        broadcast_delay=0.5,
        min_poll=0,
        max_poll=0,
    )
    # IPv4 multicast, interface chosen by route, the delay assumed.
    four = broadcast_client(
        netns_peers,
        "tsyncd-mcast4",
        f"224.0.1.1:{bport}",
        broadcast_server=SERVER4,
        broadcast_delay=0.00005,
        min_poll=0,
        max_poll=0,
    )
    row = wait_for("tsyncd to select chronyd's IPv6 multicasts", lambda: selected(six, 3), 30)
    assert row["mode"] == "broadcast" and row["stratum"] == 5
    assert row["address"] == f"[{SERVER6}]:{server_port}"
    assert 0 < row["broadcast_delay"] < 0.005  # measured, not the configured 0.5 s
    assert abs(host_offset(six)) < 0.002
    assert row["packets_dropped"] == 0  # the IPv4 group's packets never reach this socket

    row = wait_for("tsyncd to select chronyd's IPv4 multicasts", lambda: selected(four, 3), 30)
    assert row["stratum"] == 5 and row["broadcast_delay"] == 0.00005
    assert row["packets_dropped"] == 0 and abs(row["offset"]) < 0.002
    assert int(chrony.chronyc("serverstats").split(",")[0]) >= 4  # the IPv6 volley's requests


def test_tsyncd_multicast_server_to_tsyncd_client_only_from_the_named_server(
    netns_peers: NetnsPeers,
) -> None:
    bport = free_udp_port()
    netns_peers.tsyncd(
        "tsyncd-mserver",
        textwrap.dedent(
            f"""
            [synchronization]
            local-stratum = 7
            [[broadcast]]
            address = "[ff05::101]:{bport}"
            interval = 0.25
            interface = "v0"
            ttl = 1
            """
        ),
    )
    good, other = (
        broadcast_client(
            netns_peers,
            name,
            f"[ff05::101]:{bport}",
            broadcast_server=server,
            broadcast_delay=0.00005,
            min_poll=-2,
            max_poll=-2,
        )
        # The same group, another server named: every packet is someone else's.
        for name, server in (("tsyncd-mclient", SERVER6), ("tsyncd-mclient-other", "fd00:5905::2"))
    )
    row = wait_for("tsyncd to select tsyncd's IPv6 multicasts", lambda: selected(good, 3), 30)
    assert row["stratum"] == 7 and row["packets_dropped"] == 0 and abs(row["offset"]) < 0.002
    row = wait_for(
        "the other client to drop the unnamed server's packets",
        lambda: (r := other.ctl("peers")[0])["packets_dropped"] >= 3 and r,
    )
    assert row["packets_received"] == 0 and row["offset"] is None and row["reach"] == 0


def test_two_servers_on_one_group_are_two_named_sources(netns_peers: NetnsPeers) -> None:
    """Two chronyd multicasting to ff05::101, from fd00:5905::1 and ::2 at strata 5 and 6:
    one tsyncd follows both, a source each (named, as they share the group's address)."""
    bport = free_udp_port()
    second = "fd00:5905::2"
    subprocess.run(
        [*netns_peers.enter, require("ip"), "addr", "add", f"{second}/64", "dev", "v0", "nodad"],
        check=True,
    )
    for name, address, stratum in (("a", SERVER6, 5), ("b", second, 6)):
        netns_peers.chronyd(
            f"chronyd-{name}",
            f"port {free_udp_port()}\nbindaddress {address}\nlocal stratum {stratum}\n"
            f"broadcast 1 ff05::101 {bport}\n",
        )
    tables = "".join(
        textwrap.dedent(
            f"""
            [[source]]
            mode = "broadcast"
            name = "{name}"
            address = "[ff05::101]:{bport}"
            broadcast-server = "{server}"
            broadcast-interface = "v0"
            broadcast-delay = 0.00005
            min-poll = 0
            max-poll = 0
            """
        )
        for name, server in (("lan-a", SERVER6), ("lan-b", second))
    )
    client = netns_peers.tsyncd("tsyncd-two", tables)

    def both() -> dict[str, dict[str, Any]] | None:
        rows = {r["name"]: r for r in client.ctl("peers")}
        ok = len(rows) == 2 and all(r["packets_received"] >= 3 for r in rows.values())
        return rows if ok else None

    rows = wait_for("samples from both servers on the group", both, 30)
    assert rows["lan-a"]["stratum"] == 5 and rows["lan-a"]["address"].startswith(f"[{SERVER6}]")
    assert rows["lan-b"]["stratum"] == 6 and rows["lan-b"]["address"].startswith(f"[{second}]")
    # The stratum-5 server is the system peer, once several broadcasts made it selectable.
    wait_for("the stratum-5 server selected", lambda: client.ctl("status")["stratum"] == 6, 30)
