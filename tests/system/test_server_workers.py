"""The multi-core server: worker processes answer, are restarted when they die, exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from peers import Peers, Tsyncd, free_udp_port, tsyncd_start_fails, wait_for

from tsyncctl.client import ControlClient, ControlError
from tsyncd.control.rpc import ErrorCode
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp


def ask(port: int, source: str = "127.0.0.1", transmit: int = 0x1234_5678_9ABC_DEF0) -> bool:
    """One request from ``source``; True if a matching answer came within 0.5 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(0.5)
        s.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=transmit)), ("127.0.0.1", port))
        try:
            reply = decode_ntp(s.recv(1024))
        except TimeoutError:
            return False
    return reply.origin_ts == transmit and reply.stratum == 9


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` still alive (zombies left out)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out.extend(int(c) for c in (task / "children").read_text().split())
    return [c for c in out if not _is_zombie_or_gone(c)]


def test_workers_answer_restart_and_exit(peers: Peers) -> None:
    port = free_udp_port()
    daemon = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 9\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
        "workers = 2\n",
    )
    pid = daemon.proc.popen.pid
    workers = wait_for("two workers", lambda: len(w := children(pid)) == 2 and w)
    sources = [f"127.0.0.{i}" for i in range(2, 10)]  # several IPs: both workers get clients
    for source in sources:
        assert ask(port, source)
    stats = daemon.ctl("serverstats")
    assert stats["workers"] == 2 and stats["received"] == stats["answered"] == len(sources)
    clients = daemon.ctl("clients")
    assert sorted(c["address"] for c in clients) == sorted(sources)

    os.kill(workers[0], signal.SIGKILL)
    wait_for(
        "the killed worker to be replaced",
        lambda: workers[0] not in (w := children(pid)) and len(w) == 2,
    )
    stats = wait_for(
        "a restart to be counted", lambda: (s := daemon.ctl("serverstats"))["worker_restarts"] and s
    )
    assert stats["worker_restarts"] == 1
    assert stats["received"] >= len(sources)  # the dead worker's counts are kept
    for source in sources:  # every client is served again, whichever worker it meets
        assert wait_for(f"an answer to {source}", lambda src=source: ask(port, src), timeout=5)
    # The dead worker's client log went with it: its clients are counted once, as they came
    # back, not also as the dead worker's.
    assert daemon.ctl("serverstats")["clients"] == len(sources)
    assert "died (killed by SIGKILL); restarting it" in daemon.proc.output()

    alive = children(pid)
    start = time.monotonic()
    assert daemon.proc.stop() == 0
    assert time.monotonic() - start < 3
    for child in alive:
        assert not os.path.exists(f"/proc/{child}") or _is_zombie_or_gone(child)


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_workers_zero_serves_from_the_event_loop(peers: Peers) -> None:
    port = free_udp_port()
    daemon = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 9\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
        "workers = 0\n",
    )
    assert ask(port)
    assert children(daemon.proc.popen.pid) == []
    stats = daemon.ctl("serverstats")
    assert stats["workers"] == 0 and stats["answered"] == 1


def test_a_second_daemon_on_a_served_port_is_refused(peers: Peers, tmp_path: Path) -> None:
    """SO_REUSEPORT would let a second tsyncd join the first one's worker group (and replace
    its IP steering for good): it must refuse to start instead, as chronyd does."""
    port = free_udp_port()
    daemon = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 9\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
        "workers = 2\n",
    )
    for listen, workers in ((f"127.0.0.1:{port}", 4), (f"[::]:{port}", 2), (f"[::]:{port}", 0)):
        log = tsyncd_start_fails(
            tmp_path, f'[[server]]\nlisten = "{listen}"\nworkers = {workers}\n'
        )
        assert (
            f'cannot start: server[0].listen = "{listen}": cannot bind (Address already in use:'
            " another process already uses this port)"
        ) in log
        assert "serving NTP" not in log
    # The first is untouched: a client changing its source port every time still meets the
    # one worker holding its rate-limit bucket.
    assert all(ask(port, "127.0.0.2") for _ in range(4))
    assert daemon.ctl("serverstats")["answered"] == 4


def raw(port: int, data: bytes, source: str = "127.0.0.1") -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(0.5)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(1024)
        except TimeoutError:
            return None


def call(daemon: Tsyncd, method: str, params: dict[str, object]) -> object:
    with ControlClient(daemon.socket) as client:
        return client.call(method, params)


@pytest.mark.parametrize("workers", [0, 2])
def test_legacy_and_refused_requests_on_both_server_paths(peers: Peers, workers: int) -> None:
    """Worker processes and the event loop alike: NTPv1 requests are answered, a KoD's
    Transmit is when it was sent, ntpq probes count as their mode, each client counts once
    across sockets; the [0:0::0] wildcard is dual-stack; accheck and RPC params checks."""
    v4, v6 = free_udp_port(), free_udp_port()
    daemon = peers.tsyncd(
        "tsyncd-server",
        "[synchronization]\nlocal-stratum = 9\n"
        f'[[server]]\nlisten = "127.0.0.1:{v4}"\nworkers = {workers}\n'
        'deny = ["127.0.0.9"]\nkod = true\n'
        f'[[server]]\nlisten = "[0:0::0]:{v6}"\nworkers = {workers}\n',
    )
    assert f"serving NTP on [::]:{v6}" in daemon.proc.output()

    # NTPv1 (mode bits 0), as ntpd and chronyd answer it: a server reply in version 1.
    request = encode_ntp(NtpPacket(version=1, mode=Mode.CLIENT, transmit_ts=0x1234_5678_9ABC))
    reply = raw(v4, bytes([0x08]) + request[1:])
    assert reply is not None and (reply[0] >> 3 & 7, reply[0] & 7) == (1, 4)
    assert decode_ntp(reply).origin_ts == 0x1234_5678_9ABC and reply[1] == 9

    # A KoD's Transmit is when it was sent, after its Receive, as a basic reply's is.
    kod = raw(v4, request, source="127.0.0.9")
    assert kod is not None
    packet = decode_ntp(kod)
    assert packet.stratum == 0 and packet.reference_id == int.from_bytes(b"DENY", "big")
    assert 0 < packet.transmit_ts - packet.receive_ts < 1 << 32  # within a second

    # ntpq's 12-byte mode 6 probe is counted as what it is.
    assert raw(v4, bytes.fromhex("1602000100000000 00000000")) is None

    # Clients reaching both sockets, the dual-stack one as ::ffff:127.0.0.x, count once.
    sources = [f"127.0.0.{i}" for i in range(2, 6)]
    for port in (v4, v6):
        for source in sources:
            assert ask(port, source)
    stats = daemon.ctl("serverstats")
    assert stats["dropped_by_reason"] == {"not_client_mode": 1}
    assert stats["kod_sent"] == 1
    assert stats["clients"] == len(sources) + 2  # and 127.0.0.1, 127.0.0.9

    # accheck: the IPv4-only socket never hears ::1; the dual-stack one hears both.
    done = daemon.run_ctl("accheck", "::1", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout) == [
        {"listen": f"127.0.0.1:{v4}", "allowed": False, "reason": "unreachable"},
        {"listen": f"[::]:{v6}", "allowed": True, "reason": None},
    ]
    assert daemon.run_ctl("accheck", "127.0.0.9").returncode == 1

    # Control params: an unknown, missing or ill-typed one is refused, not taken as "off".
    for method, params in (
        ("local", {"off": "yes"}),
        ("local", {}),
        ("local", {"stratum": 12, "off": "yes"}),
        ("serverstats", {"verbose": True}),
        ("clients", {"nts_ke": "yes"}),
    ):
        with pytest.raises(ControlError) as info:
            call(daemon, method, params)
        assert info.value.code == ErrorCode.INVALID_PARAMS, (method, params)
    assert daemon.ctl("status")["stratum"] == 9  # still serving its local clock
