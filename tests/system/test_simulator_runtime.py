"""tsyncd runs where a clock-and-network simulator would run it, against real chronyd.

clknetsim runs time daemons unmodified under LD_PRELOAD, and implements only the system calls
chronyd and ntpd make.  ``data/simshim.c`` refuses, on the real clock and network, what it does
not implement (epoll, socketpair, SOCK_CLOEXEC, non-INET sockets, FIONBIO/FIOCLEX on sockets);
with it preloaded, plain asyncio and plain ``socket.socket()`` fail, and tsyncd must still
start, synchronize to chronyd on loopback and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from peers import Peers, free_udp_port, require, wait_for

SHIM_SOURCE = Path(__file__).parent / "data" / "simshim.c"


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = require("gcc")
    out = tmp_path_factory.mktemp("shim") / "simshim.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        check=True,
        timeout=60,
    )
    return out


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
        check=False,
    )


def test_the_shim_refuses_what_clknetsim_lacks(shim: Path) -> None:
    env = {"LD_PRELOAD": str(shim)}
    plain_loop = _run_python("import asyncio; asyncio.run(asyncio.sleep(0))", env)
    assert plain_loop.returncode != 0
    plain_socket = _run_python("import socket; socket.socket()", env)
    assert plain_socket.returncode != 0 and "Invalid argument" in plain_socket.stderr
    ours = _run_python(
        "import socket\n"
        "from tsyncd.net.sockets import open_socket, set_nonblocking\n"
        "s = open_socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "print(set_nonblocking(s) == socket.MSG_DONTWAIT)\n",
        env,
    )
    assert ours.returncode == 0 and ours.stdout.strip() == "True", ours.stderr


def test_tsyncd_syncs_and_stops_under_simulator_constraints(
    shim: Path, peers: Peers, tmp_path: Path
) -> None:
    port, serve_port = free_udp_port(), free_udp_port()
    peers.chronyd(
        "chronyd-server", f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 5\nallow 127.0.0.1\n"
    )
    drift = tmp_path / "tsyncd.drift"
    conf = tmp_path / "tsyncd.toml"
    conf.write_text(
        f'[clock]\nmode = "measure"\ndrift-file = "{drift}"\n'
        f'[control]\nsocket = "{tmp_path}/unused.sock"\n'
        f'[[source]]\nmode = "server"\naddress = "127.0.0.1:{port}"\niburst = true\n'
        "min-poll = -2\nmax-poll = -2\n"
        # No IPv6 under the shim (nor in clknetsim): the default wildcard falls back to IPv4.
        f'[[server]]\nlisten = "[::]:{serve_port}"\n'
    )
    log = tmp_path / "tsyncd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tsyncd", "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LD_PRELOAD": str(shim), "TSYNCD_EVENT_LOOP": "poll"},
        )
    try:
        wait_for(
            "tsyncd to select chronyd",
            lambda: "selected source" in log.read_text() or proc.poll() is not None,
        )
        assert proc.poll() is None, log.read_text()
        reply = _ask_ntp(serve_port)  # from outside the shim, over IPv4
        assert reply[0] & 7 == 4 and reply[1] == 6, reply[:4]  # server mode, stratum 5 + 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "running without a control socket" in text  # no Unix sockets under the shim
    assert f"serving NTP on 0.0.0.0:{serve_port}, IPv4 only" in text
    assert f"selected source 127.0.0.1:{port} (stratum 5)" in text
    assert "Traceback" not in text
    # Selection came with a clock update, so the frequency estimate was saved at exit.
    gain_ppm, skew_ppm = (float(x) for x in drift.read_text().split()[:2])
    assert abs(gain_ppm) <= 500 and skew_ppm >= 0


def _ask_ntp(port: int) -> bytes:
    """One NTPv4 client request to 127.0.0.1:``port``; the reply's bytes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"\x23" + bytes(39) + bytes(range(1, 9)), ("127.0.0.1", port))
        reply, _ = s.recvfrom(512)
    assert reply[24:32] == bytes(range(1, 9))  # our transmit comes back as the origin
    return reply
