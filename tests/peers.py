"""Processes for interop and system tests: real chronyd (always ``-x``, so it never touches
the clock) and tsyncd (always in measure mode), on loopback.

A missing peer binary makes the fixture fail, never skip: an interop test that did not run is
not coverage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.procs import free_port

T = TypeVar("T")


def require(binary: str) -> str:
    """The path of a peer binary; fail (not skip) the test when it is missing."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{binary} is not installed: the README's test command installs it")
    return path


def free_udp_port() -> int:
    """An unprivileged UDP port free on 127.0.0.1 right now (``bench.procs.free_port``: never
    the same twice in one test process)."""
    return free_port(socket.SOCK_DGRAM)


def free_tcp_port() -> int:
    """An unprivileged TCP port free on 127.0.0.1 right now (as ``free_udp_port``)."""
    return free_port(socket.SOCK_STREAM)


def peer_source_toml(our_port: int, peer_port: int, extra: str = "") -> str:
    """tsyncd's config for a symmetric peer at 127.0.0.1:``peer_port``, from ``our_port``
    (also a server's port), with ``extra`` source keys.  ``min-sources = 2`` keeps tsyncd on
    its local stratum 9, so with a peer that does not select it either (chronyd's ``peer ...
    noselect``) the two never form a sync loop and both keep measuring: each refuses to
    measure a peer synchronized to it (chronyd's test D, tsyncd's loop test)."""
    return (
        f"[synchronization]\nlocal-stratum = 9\nmin-sources = 2\n"
        f'[[server]]\nlisten = "127.0.0.1:{our_port}"\n'
        f'[[source]]\nmode = "peer"\naddress = "127.0.0.1:{peer_port}"\n'
        f"local-port = {our_port}\nmin-poll = -2\nmax-poll = -2\n{extra}"
    )


def fast_sources_toml(*addresses: str, mode: str = "server", extra: str = "") -> str:
    """``[[source]]`` tables polling ``addresses`` every 1/8 s, each with ``extra`` TOML lines."""
    return "".join(
        f'\n[[source]]\nmode = "{mode}"\naddress = "{address}"\nmin-poll = -3\nmax-poll = -3\n'
        f"{extra}"
        for address in addresses
    )


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` every 50 ms until it returns a truthy value; fail with ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass
class Process:
    """A peer process we started; its output lands in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class Peers:
    """Starts peers in a temp dir and stops them all at the end of the test."""

    tmp: Path
    procs: list[Process] = field(default_factory=list)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.tmp / f"{name}.log"
        out = log.open("wb")
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        proc = Process(name, popen, log)
        self.procs.append(proc)
        return proc

    def chronyd(self, name: str, conf: str) -> Chronyd:
        """chronyd -x (no clock control) in the foreground with ``conf`` plus private paths."""
        binary = require("chronyd")
        d = self.tmp / name
        d.mkdir(mode=0o700)  # chronyd refuses a command socket in a directory others can read
        sock = d / "chronyd.sock"
        full = (
            f"{conf}\n"
            f"pidfile {d}/chronyd.pid\n"
            f"bindcmdaddress {sock}\n"
            "cmdport 0\n"
            f"driftfile {d}/drift\n"
            "user root\n"
        )
        (d / "chrony.conf").write_text(full)
        proc = self._start(name, [binary, "-x", "-d", "-f", str(d / "chrony.conf")])
        chrony = Chronyd(proc, sock)
        wait_for(f"{name} to start", lambda: sock.exists() or proc.popen.poll() is not None)
        if proc.popen.poll() is not None:
            pytest.fail(f"{name} exited: {proc.output()}")
        return chrony

    def tsyncd(
        self,
        name: str,
        toml: str,
        *,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        clock_toml: str = "",
        command: tuple[str, ...] = (),
    ) -> Tsyncd:
        """tsyncd in measure mode with its control socket in the temp dir.

        ``command`` runs another tsyncd (e.g. a package's entry point) with ``env`` alone as
        its environment; by default it is this interpreter's, with ``env`` added to ours.
        """
        d = self.tmp / name
        d.mkdir()
        sock = d / "tsyncd.sock"
        conf = d / "tsyncd.toml"
        conf.write_text(
            f'[clock]\nmode = "measure"\n{clock_toml}\n[control]\nsocket = "{sock}"\n{toml}'
        )
        argv = [*(command or (sys.executable, "-m", "tsyncd")), "-c", str(conf), *extra_args]
        proc = self._start(name, argv, env if command else {**os.environ, **(env or {})})
        daemon = Tsyncd(proc, sock)
        wait_for(f"{name} to start", lambda: sock.exists() or proc.popen.poll() is not None)
        if proc.popen.poll() is not None:
            pytest.fail(f"{name} exited: {proc.output()}")
        return daemon

    def dnsmasq(self, name: str, port: int, hosts: Path) -> Process:
        """dnsmasq answering only from ``hosts`` (re-read on SIGHUP) on 127.0.0.1:``port``."""
        binary = require("dnsmasq")
        proc = self._start(
            name,
            [
                binary,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={hosts}",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--log-queries",
                "--log-facility=-",
            ],
        )
        wait_for(f"{name} to start", lambda: "started" in proc.output() or proc.popen.poll())
        if proc.popen.poll() is not None:
            pytest.fail(f"{name} exited: {proc.output()}")
        return proc

    def pool_peers(self, hosts_text: str, servers: tuple[int, ...]) -> tuple[int, int, Process]:
        """Pool tests' set-up: dnsmasq answering from a hosts file holding ``hosts_text`` (its
        path: ``self.tmp / "pool.hosts"``) and a chronyd on 127.0.0.N for each N in
        ``servers`` (local stratum N + 4, one fresh port for all); (NTP port, DNS port, dnsmasq).
        """
        ntp_port, dns_port = free_udp_port(), free_udp_port()
        hosts = self.tmp / "pool.hosts"
        hosts.write_text(hosts_text)
        dns = self.dnsmasq("dnsmasq", dns_port, hosts)
        self.chronyd_servers(ntp_port, servers)
        return ntp_port, dns_port, dns

    def chronyd_servers(self, port: int, servers: tuple[int, ...]) -> None:
        """A chronyd on 127.0.0.N:``port`` for each N in ``servers``, at local stratum N + 4."""
        for i in servers:
            self.chronyd(
                f"chronyd-{i}",
                f"port {port}\nbindaddress 127.0.0.{i}\nlocal stratum {i + 4}\nallow 127.0.0.1\n",
            )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@dataclass
class Chronyd:
    proc: Process
    socket: Path

    def chronyc(self, *args: str) -> str:
        binary = require("chronyc")
        done = subprocess.run(
            [binary, "-h", str(self.socket), "-n", "-c", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout

    def sources(self) -> list[list[str]]:
        """``chronyc -c sources`` rows: mode, state, address, stratum, poll, reach, ..."""
        return [line.split(",") for line in self.chronyc("sources").splitlines() if line]

    def ntpdata(self, address: str = "127.0.0.1") -> list[str] | None:
        """The ``chronyc -c ntpdata`` row of the source at ``address`` (columns: NTPDATA_*)."""
        rows = [line.split(",") for line in self.chronyc("ntpdata").splitlines() if line]
        rows = [r for r in rows if len(r) > NTPDATA_VALID_RX and r[0] == address]
        return rows[0] if rows else None


# `chronyc -c ntpdata` CSV columns the tests read (chrony 4.x order).
NTPDATA_MODE = 7
NTPDATA_OFFSET = 18
NTPDATA_DELAY = 19
NTPDATA_RESPONSE_TIME = 21
NTPDATA_INTERLEAVED = 26
NTPDATA_AUTHENTICATED = 27
NTPDATA_TOTAL_TX = 30
NTPDATA_TOTAL_RX = 31
NTPDATA_VALID_RX = 32


@dataclass
class Tsyncd:
    proc: Process
    socket: Path

    @property
    def config(self) -> Path:
        return self.socket.parent / "tsyncd.toml"

    def ctl(self, *args: str) -> Any:
        """Run ``tsyncctl -s SOCKET ARGS --json`` and return the parsed JSON."""
        done = self.run_ctl(*args, "--json")
        if done.returncode != 0:
            pytest.fail(f"tsyncctl {' '.join(args)} failed: {done.stderr}\n{self.proc.output()}")
        return json.loads(done.stdout)

    def run_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``tsyncctl -s SOCKET ARGS`` as a user would; whatever it prints and returns."""
        return subprocess.run(
            [sys.executable, "-m", "tsyncctl", "-s", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )


def ctl_fails(daemon: Tsyncd, *args: str) -> str:
    """Run ``tsyncctl ARGS``, which must fail; its stderr."""
    done = daemon.run_ctl(*args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    return done.stderr


def tsyncd_start_fails(
    directory: Path, toml: str, control_socket: str | None = None, status: int = 2
) -> str:
    """Run tsyncd on ``toml`` (measure mode, its control socket in ``directory`` unless
    ``control_socket`` is given), which must refuse to start (exit ``status``: 2 cannot start,
    1 a bad config; no traceback); what it logged."""
    conf = directory / "refused.toml"
    where = control_socket or f"{directory}/refused.sock"
    conf.write_text(f'[clock]\nmode = "measure"\n[control]\nsocket = "{where}"\n{toml}')
    done = subprocess.run(
        [sys.executable, "-m", "tsyncd", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def chronyd_nts_server(peers: Peers, name: str, key: Path, chain: Path) -> tuple[Chronyd, int, int]:
    """chronyd serving NTS on loopback with the test CA's ``key`` and ``chain``:
    (chronyd, NTP port, NTS-KE port)."""
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    chrony = peers.chronyd(
        name,
        f"port {ntp_port}\nntsport {ke_port}\nbindaddress 127.0.0.1\nlocal stratum 5\n"
        f"allow 127.0.0.1\nntsserverkey {key}\nntsservercert {chain}\n",
    )
    return chrony, ntp_port, ke_port


def chronyd_nts_client(peers: Peers, name: str, ntp_port: int, ke_port: int, ca: Path) -> Chronyd:
    """chronyd polling an NTS server on loopback every 0.25 s, trusting the test CA ``ca``."""
    return peers.chronyd(
        name,
        f"server 127.0.0.1 port {ntp_port} nts ntsport {ke_port} iburst minpoll -2 maxpoll -2\n"
        f"ntstrustedcerts {ca}\nport 0\n",
    )
