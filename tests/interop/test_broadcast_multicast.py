"""Broadcast mode over multicast groups (IPv6 ff05::101, IPv4 224.0.1.1), for real.

The host's loopback has no MULTICAST flag, so each test makes its own network namespace
(``unshare --net``; not as root, inside a user namespace of its own mapping us to root, so no
privilege is needed): loopback up, and one veth pair whose end ``v0`` carries the multicast
routes (``v1`` has IPv6 off, so the kernel's ff00::/8 route is v0's alone) and the test
addresses fd00:5905::1 and 192.0.2.1.  Every daemon runs inside it (``nsenter``); their control
sockets are files, reachable from outside.  Multicasts sent on v0 are looped back to the
namespace's own members; nothing leaves it.  No namespace is a failure, not a skip, and the
namespace is deleted after the test whatever happened.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from broadcast_clients import broadcast_client, chronyd_broadcaster, host_offset, selected
from peers import Peers, Process, free_udp_port, require, wait_for

SERVER6 = "fd00:5905::1"
SERVER4 = "192.0.2.1"
_SETUP = (
    ("link", "set", "lo", "up"),
    ("link", "set", "v0", "up"),
    ("link", "set", "v1", "up"),
    ("addr", "add", f"{SERVER6}/64", "dev", "v0", "nodad"),
    ("addr", "add", f"{SERVER4}/24", "dev", "v0"),
    ("route", "add", "224.0.0.0/4", "dev", "v0"),
)


@dataclass
class NetnsPeers(Peers):
    """Peers whose processes all run in one private network namespace."""

    enter: tuple[str, ...] = ()  # the command prefix that runs a program inside it

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        return super()._start(name, [*self.enter, *argv], env)


def _inside(enter: tuple[str, ...], *argv: str) -> None:
    done = subprocess.run([*enter, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed in the namespace: {done.stderr.strip()}")


def _net_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture
def netns_peers(tmp_path: Path) -> Iterator[NetnsPeers]:
    """A fresh namespace with the multicast-capable v0; its peers are stopped, then it goes
    (with the last process in it: the holder is killed last)."""
    root = os.geteuid() == 0
    user_ns = [] if root else ["--map-root-user"]  # root needs (and in a chroot gets) no userns
    holder = subprocess.Popen(
        [require("unshare"), "--net", *user_ns, "sleep", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peers = NetnsPeers(tmp_path)
    try:
        # Until unshare has made the namespace, nsenter would enter the host's own: never.
        host = _net_namespace("self")
        wait_for(
            "the test's network namespace",
            lambda: holder.poll() is not None or _net_namespace(holder.pid) != host,
        )
        if holder.poll() is not None:
            pytest.fail(f"cannot make a network namespace: {holder.communicate()[1].strip()}")
        joins = ["--net"] if root else ["--user", "--net", "--preserve-credentials"]
        peers.enter = (require("nsenter"), "-t", str(holder.pid), *joins)
        ip = require("ip")
        _inside(peers.enter, ip, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        # v1 without IPv6: the one ff00::/8 route is v0's, so groups go (and are joined) there.
        _inside(peers.enter, "sh", "-c", "echo 1 >/proc/sys/net/ipv6/conf/v1/disable_ipv6")
        for args in _SETUP:
            _inside(peers.enter, ip, *args)
        yield peers
    finally:
        peers.stop_all()
        for proc in peers.procs:
            print(f"--- {proc.name} ---\n{proc.output()[-3000:]}")
        holder.kill()
        holder.wait(10)


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
