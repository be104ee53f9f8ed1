"""A source that jumps past ``panic-threshold``: the daemon refuses the offset and, while it does,
says it is not synchronized and why, in status, waitsync, systemd's STATUS and what it serves,
until ``tsyncctl makestep`` accepts the offset (QA s16 hunt-sync F4, F5).

The source is a minimal NTP server in this test (tsyncd's own responder on a thread) whose
clock the test moves: a real daemon's clock can only be moved by steps of its own."""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import Peers, Tsyncd, free_udp_port, wait_for

from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000


class JumpingServer:
    """A stratum 1 server on 127.0.0.1:``port`` whose clock is ``offset_ns`` ahead."""

    def __init__(self, port: int) -> None:
        self.offset_ns = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.responder = NtpResponder(AccessList((), ()))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        client = ipaddress.ip_address("127.0.0.1")
        while not self.stop.is_set():
            try:
                data, address = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            now = time.time_ns() + self.offset_ns
            self.responder.template = ResponseTemplate(
                leap=Leap.NONE,
                stratum=1,
                precision=-20,
                reference_id=refid_from_ascii("GPS"),
                reference_ts=ntp64_from_unix_ns(now - S),
            )
            _, reply = self.responder.handle_request(data, client, now, now + 1_000)
            if reply is not None:
                self.sock.sendto(reply, address)


@pytest.fixture
def jumping() -> Iterator[JumpingServer]:
    server = JumpingServer(free_udp_port())
    yield server
    server.stop.set()
    server.thread.join(5)
    server.sock.close()


class Notifications:
    """systemd's end of $NOTIFY_SOCKET, read as it comes (an unread queue of 10 datagrams
    would block the daemon's next notification, as systemd never lets it)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        while not self.stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def waitsync(daemon: Tsyncd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(daemon.socket), "waitsync", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def served_leap(port: int) -> Leap:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=3)), ("127.0.0.1", port))
        return decode_ntp(s.recv(2048)).leap


def test_panic_is_reported_as_not_synchronized_until_makestep(
    peers: Peers, jumping: JumpingServer, tmp_path: Path
) -> None:
    our_port = free_udp_port()
    notify_path = tmp_path / "notify.sock"
    notify = Notifications(notify_path)
    server_port = jumping.sock.getsockname()[1]
    client = peers.tsyncd(
        "client",
        "[synchronization]\npanic-threshold = 0.3\n"
        f'[[server]]\nlisten = "127.0.0.1:{our_port}"\n'
        f'[[source]]\nmode = "server"\naddress = "127.0.0.1:{server_port}"\n'
        "min-poll = -3\nmax-poll = -3\niburst = true\n",
        env={"NOTIFY_SOCKET": str(notify_path)},
    )
    wait_for("a few clock updates", lambda: client.ctl("tracking")["clock_updates"] >= 4)
    assert waitsync(client).returncode == 0 and served_leap(our_port) == Leap.NONE

    jumping.offset_ns = 500_000_000
    status = wait_for(
        "the panic", lambda: (s := client.ctl("status"))["synchronized"] is False and s
    )
    reason = status["unsynchronized_reason"]
    assert re.fullmatch(
        r"panic: offset \+0\.5\d\d s exceeds the panic threshold 0\.3 s; "
        r"tsyncctl makestep to accept it",
        reason,
    ), reason
    assert status["selected_source"] == f"127.0.0.1:{server_port}"
    assert client.ctl("tracking")["discipline_state"] == "panic"
    assert "Synchronized    : no (panic: offset +0.5" in client.run_ctl("status").stdout
    failed = waitsync(client)
    assert failed.returncode == 1, failed.stdout
    assert served_leap(our_port) == Leap.UNSYNCHRONIZED  # the clock is not kept: not served
    wait_for(
        "systemd's STATUS to say why",
        lambda: any("STATUS=not synchronized: panic: offset +0.5" in m for m in notify.messages),
    )
    notify.close()
    log = client.proc.output()
    assert "exceeds the panic threshold 0.3 s" in log and "threshold 0 s" not in log

    step = client.ctl("makestep")
    assert step["stepped"] is True and 0.49 < step["offset"] < 0.51
    wait_for("synchronized again", lambda: client.ctl("status")["synchronized"] is True)
    assert client.ctl("tracking")["discipline_state"] != "panic"
    assert waitsync(client).returncode == 0 and served_leap(our_port) == Leap.NONE
