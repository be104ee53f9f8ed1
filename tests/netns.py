"""A private network namespace for tests that need more than the host's loopback gives.

The host's ``lo`` has no MULTICAST flag and no link-local IPv6 address, so such tests make two
network namespaces of their own (``unshare --net``; not as root, inside a user namespace of
their own mapping us to root, so no privilege is needed), joined by a veth pair: in the near
one (where a test's daemons run), ``v0`` carries the multicast routes and the addresses
fd00:5905::1, 192.0.2.1 and fe80::5905; in the far one (``NetnsPeers.far``), ``v1`` has the
link-local fe80::5906, a truly other host on the link.  Every daemon runs inside one
(``nsenter``); their control sockets are files, reachable from outside.  Nothing leaves the
namespaces.  No namespace is a failure, not a skip, and each goes with its last process after
the test, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from peers import Peers, Process, require, wait_for

SERVER6 = "fd00:5905::1"
SERVER4 = "192.0.2.1"
LINK_LOCAL = "fe80::5906"  # v1's, in the far namespace (v0 has fe80::5905)
_SETUP = (
    ("link", "set", "lo", "up"),
    ("link", "set", "v0", "up"),
    ("addr", "add", f"{SERVER6}/64", "dev", "v0", "nodad"),
    ("addr", "add", f"{SERVER4}/24", "dev", "v0"),
    ("addr", "add", "fe80::5905/64", "dev", "v0", "nodad"),  # no wait for DAD
    # As on a host with two links: a link-local address means nothing without its interface.
    ("route", "add", "fe80::/64", "dev", "lo", "metric", "1"),
    ("route", "add", "224.0.0.0/4", "dev", "v0"),
)


@dataclass
class NetnsPeers(Peers):
    """Peers whose processes all run in one private network namespace."""

    enter: tuple[str, ...] = ()  # the command prefix that runs a program inside it
    far: NetnsPeers | None = None  # peers in the namespace at v1's end of the link

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        return super()._start(name, [*self.enter, *argv], env)


def _inside(enter: tuple[str, ...], *argv: str) -> None:
    done = subprocess.run([*enter, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed in the namespace: {done.stderr.strip()}")


def _net_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _namespace(argv: list[str], host: str) -> subprocess.Popen[str]:
    """A process (``argv`` + unshare) holding a new network namespace, once it has one: until
    unshare has made it, nsenter would enter the ``host``'s instead, which must never be."""
    holder = subprocess.Popen(
        [*argv, require("unshare"), "--net", "sleep", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(
        "the test's network namespace",
        lambda: holder.poll() is not None or _net_namespace(holder.pid) != host,
    )
    if holder.poll() is not None:
        pytest.fail(f"cannot make a network namespace: {holder.communicate()[1].strip()}")
    return holder


@contextlib.contextmanager
def private_network(tmp_path: Path) -> Iterator[NetnsPeers]:
    """The two namespaces and their link; their peers are stopped, then they go (with their
    last process: the holders are killed last)."""
    root = os.geteuid() == 0
    # Root needs (and in a chroot gets) no user namespace; otherwise both network namespaces
    # belong to one, so that v1 may move from the near one to the far one.
    nsenter, ip = require("nsenter"), require("ip")
    host = _net_namespace("self")
    holders = [_namespace([] if root else [require("unshare"), "--user", "--map-root-user"], host)]
    joins = ("--net",) if root else ("--user", "--net", "--preserve-credentials")
    peers = NetnsPeers(tmp_path, enter=(nsenter, "-t", str(holders[0].pid), *joins))
    far = NetnsPeers(tmp_path / "far")
    peers.far = far
    try:
        user = (
            () if root else (nsenter, "-t", str(holders[0].pid), "--user", "--preserve-credentials")
        )
        holders.append(_namespace(list(user), host))  # nsenter --user keeps the host's netns
        far.enter = (nsenter, "-t", str(holders[1].pid), *joins)
        far.tmp.mkdir()
        _inside(peers.enter, ip, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _inside(peers.enter, ip, "link", "set", "v1", "netns", str(holders[1].pid))
        for args in _SETUP:
            _inside(peers.enter, ip, *args)
        for args in (
            ("link", "set", "lo", "up"),
            ("link", "set", "v1", "up"),
            ("addr", "add", f"{LINK_LOCAL}/64", "dev", "v1", "nodad"),
        ):
            _inside(far.enter, ip, *args)
        yield peers
    finally:
        for side in (peers, far):
            side.stop_all()
            for proc in side.procs:
                print(f"--- {proc.name} ---\n{proc.output()[-3000:]}")
        for holder in reversed(holders):
            holder.kill()
            holder.wait(10)
