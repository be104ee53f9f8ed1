"""The whole daemon as a process: NTP both ways, systemd notifications, signals, bad input."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from nts_certs import make_pki
from peers import Peers, Tsyncd, ctl_fails, free_udp_port, tsyncd_start_fails, wait_for
from prometheus_client.parser import text_string_to_metric_families

from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp


def client_toml(port: int, ip: str = "127.0.0.1") -> str:
    return textwrap.dedent(
        f"""
        [[source]]
        mode = "server"
        address = "{ip}:{port}"
        iburst = true
        min-poll = -3
        max-poll = -2
        """
    )


def ask(port: int, data: bytes, timeout: float = 2.0, source: str = "") -> bytes | None:
    """Send one datagram to 127.0.0.1:port (from ``source``, a loopback address, if given);
    the reply, or None on timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(2048)
        except TimeoutError:
            return None


def test_unsynchronized_server_says_so_and_client_does_not_use_it(peers: Peers) -> None:
    port = free_udp_port()
    server = peers.tsyncd("server", f'[[server]]\nlisten = "127.0.0.1:{port}"\n')
    reply = decode_ntp(ask(port, encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=7))) or b"")
    assert reply.leap == Leap.UNSYNCHRONIZED and reply.stratum == 0  # RFC 5905: 16 sent as 0
    assert reply.origin_ts == 7
    client = peers.tsyncd("client", client_toml(port))
    row = wait_for(
        "the client to count unsynchronized replies",
        lambda: next((r for r in client.ctl("peers") if r["packets_dropped"] >= 2), None),
    )
    assert row["state"] == "unusable" and row["reach"] == 0
    assert row["state_reason"] == "source is unsynchronized (its last reply says so)"
    assert row["select_code"] == "s"  # as chronyc selectdata shows such a server
    status = client.ctl("status")
    assert status["synchronized"] is False
    assert status["stratum"] == 16 and status["leap"] == "unsynchronized"
    assert server.ctl("status")["synchronized"] is False


def test_chain_of_three_and_metrics(peers: Peers) -> None:
    """A local-stratum server, a middle daemon serving what it learnt, and a leaf client.

    The top serves on 127.0.0.2: the middle announces its server's address as its reference
    ID, and were that 127.0.0.1, the leaf's own address, the leaf would take the middle for a
    server synchronized to it (a loop), as chronyd would."""
    top, middle = free_udp_port(), free_udp_port()
    peers.tsyncd(
        "top", f'[synchronization]\nlocal-stratum = 4\n[[server]]\nlisten = "127.0.0.2:{top}"\n'
    )
    metrics_port = free_udp_port()  # a TCP port number free enough for loopback
    mid = peers.tsyncd(
        "middle",
        client_toml(top, "127.0.0.2")
        + f'[[server]]\nlisten = "127.0.0.1:{middle}"\n'
        + f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n',
    )
    leaf = peers.tsyncd("leaf", client_toml(middle))
    status = wait_for(
        "the leaf to sync through the middle daemon",
        lambda: (s := leaf.ctl("status"))["synchronized"] and s,
    )
    assert status["stratum"] == 6 and abs(status["offset"]) < 1e-3
    assert mid.ctl("status")["stratum"] == 5
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["tsyncd_system_stratum"].samples[0].value == 5
    reach = families["tsyncd_source_reach"].samples[0]
    assert reach.labels["source"] == f"127.0.0.2:{top}" and reach.value > 0
    sent = families["tsyncd_server_sent_packets"].samples[0].value
    assert sent >= 1


def test_malformed_requests_are_counted_and_service_goes_on(peers: Peers) -> None:
    port = free_udp_port()
    server = peers.tsyncd(
        "server", f'[synchronization]\nlocal-stratum = 3\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
    )
    version_5 = b"\x2b" + bytes(47)
    garbage = [b"", b"\x23", b"\x23" + bytes(46), version_5, bytes(range(256)) * 2]
    for data in garbage:
        assert ask(port, data, timeout=0.2) is None
    symmetric = encode_ntp(NtpPacket(mode=Mode.SYMMETRIC_ACTIVE, transmit_ts=1))
    assert ask(port, symmetric, timeout=0.2) is None
    good = ask(port, encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=99)))
    assert good is not None and decode_ntp(good).stratum == 3
    stats = server.ctl("serverstats")
    assert stats["sent"] == 1
    assert stats["dropped"] == len(garbage) + 1
    assert stats["dropped_by_reason"]["not_client_mode"] == 1
    assert sum(v for k, v in stats["dropped_by_reason"].items() if k.startswith("malformed")) == 5


def test_ready_status_counts_the_sources_still_starting(peers: Peers, tmp_path: Path) -> None:
    """At READY=1 the sources' tasks have had one turn of the event loop (the workers fork
    after it): the status says the source is starting or awaits its first reply, never "no
    sources configured"."""
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(10)
        peers.tsyncd(
            "daemon",
            client_toml(free_udp_port()),
            env={"NOTIFY_SOCKET": str(notify_path)},
        )
        seen = [notify.recv(4096).decode()]
        while "READY=1" not in seen[-1]:
            seen.append(notify.recv(4096).decode())
        # No WatchdogSec= (no WATCHDOG_USEC): no pings, which nobody would read.  The
        # housekeeping tick is 1 s, so 2.5 s hold two ticks.
        later: list[str] = []
        deadline = time.monotonic() + 2.5
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                notify.settimeout(left)
                later.append(notify.recv(4096).decode())
    assert seen[-1] in (
        "READY=1\nSTATUS=not synchronized: starting 1 source(s)",
        "READY=1\nSTATUS=not synchronized: waiting for the first replies from sources",
    )
    assert not any("no sources configured" in m for m in seen)
    assert not any("WATCHDOG" in m for m in seen + later)


def test_sources_whose_names_do_not_resolve_are_listed_and_counted(peers: Peers) -> None:
    """A server and a pool whose names DNS does not know: 'sources' lists them with the name
    being resolved and why the last try failed, 'status' says they wait for it, and no view
    says "no sources configured"; offline and online each count both."""
    hosts = peers.tmp / "empty.hosts"
    hosts.write_text("")
    dns_port = free_udp_port()
    peers.dnsmasq("dnsmasq", dns_port, hosts)
    daemon = peers.tsyncd(
        "tsyncd",
        f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
        '[[source]]\nmode = "server"\naddress = "ntp.example.invalid:123"\n'
        '[[source]]\nmode = "pool"\naddress = "pool.example.invalid:123"\n',
    )
    names = ["ntp.example.invalid:123", "pool.example.invalid:123"]

    def failed_once() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = daemon.ctl("sources")
        return rows if all("(last try: " in (r["state_reason"] or "") for r in rows) else None

    rows = wait_for("both names tried", failed_once)
    assert [(r["name"], r["mode"], r["state"], r["address"]) for r in rows] == [
        (names[0], "server", "init", ""),
        (names[1], "pool", "init", ""),
    ]
    assert rows[0]["state_reason"].startswith("resolving ntp.example.invalid (last try: ")
    assert rows[1]["state_reason"].startswith("resolving pool.example.invalid (last try: ")
    waiting = "2 source(s) waiting for name resolution"
    assert daemon.ctl("status")["unsynchronized_reason"] == waiting
    assert daemon.ctl("tracking")["unsynchronized_reason"] == waiting
    assert daemon.ctl("activity")["unknown_address"] == 2
    table = daemon.run_ctl("sources").stdout
    assert "? ntp.example.invalid:123" in table and "resolving pool.example.invalid" in table
    for view in ("status", "sources", "sourcestats", "selectdata", "ntpdata", "authdata"):
        done = daemon.run_ctl(view)
        assert done.returncode == 0 and "no sources configured" not in done.stdout, done.stdout
    assert daemon.ctl("offline") == {"changed": names, "selected": names}
    assert [r["online"] for r in daemon.ctl("sources")] == [False, False]
    assert daemon.ctl("online") == {"changed": names, "selected": names}


def test_systemd_notifications_and_signals(peers: Peers, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(10)
    port = free_udp_port()
    daemon = peers.tsyncd(
        "daemon",
        f'[synchronization]\nlocal-stratum = 9\n[[server]]\nlisten = "127.0.0.1:{port}"\n',
        env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"},
    )
    seen: list[str] = []

    def until(field: str) -> None:
        while not any(field in m for m in seen):
            seen.append(notify.recv(4096).decode())

    until("READY=1")
    assert any("STATUS=" in m for m in seen)
    until("WATCHDOG=1")
    # SIGHUP with a broken config: reported, running config kept, service goes on.
    daemon.config.write_text(daemon.config.read_text() + "\n[bogus]\n")
    daemon.proc.popen.send_signal(signal.SIGHUP)
    until("RELOADING=1")
    wait_for(
        "the reload error in the log", lambda: "reload (SIGHUP) failed" in daemon.proc.output()
    )
    assert "bogus" in daemon.proc.output()
    assert ask(port, encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=5))) is not None
    daemon.proc.popen.send_signal(signal.SIGTERM)
    until("STOPPING=1")
    assert daemon.proc.popen.wait(10) == 0
    assert not daemon.socket.exists()  # the control socket is removed on exit
    notify.close()


def test_bad_config_refuses_to_start(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('[clock]\nmode = "sometimes"\n[[source]]\naddress = "127.0.0.1"\n')
    done = subprocess.run(
        [sys.executable, "-m", "tsyncd", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert f'{conf}: clock.mode = "sometimes": expected one of: "system", "measure"' in done.stderr
    assert f"{conf}: source[0].mode is missing" in done.stderr
    assert "Traceback" not in done.stderr
    check = subprocess.run(
        [sys.executable, "-m", "tsyncd", "--check", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 1 and "clock.mode" in check.stderr


@pytest.mark.parametrize(
    "case", ["not-local", "in-use", "nts-ke-in-use", "tsq-in-use", "metrics-in-use"]
)
def test_bind_failures_name_the_listener(peers: Peers, tmp_path: Path, case: str) -> None:
    """A listening address that cannot be bound stops the start-up with the table, key and
    value at fault, and why: with several servers the operator must not have to guess."""
    pki = make_pki(tmp_path)
    certs = f'certificate-chain-path = "{pki.chain}"\nprivate-key-path = "{pki.key}"\n'
    kind = socket.SOCK_STREAM if case in ("nts-ke-in-use", "metrics-in-use") else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        free = free_udp_port()
        toml, key, listen = {
            "not-local": (
                f'[[server]]\nlisten = "127.0.0.1:{free}"\nworkers = 0\n'
                f'[[server]]\nlisten = "192.0.2.1:{free}"\n',
                "server[1].listen",
                f"192.0.2.1:{free}",
            ),
            "in-use": (f'[[server]]\nlisten = "127.0.0.1:{port}"\n', "server[0].listen", None),
            "nts-ke-in-use": (
                f'[[nts-ke-server]]\nlisten = "127.0.0.1:{port}"\nntp-server = "ntp.example.org"\n'
                f"{certs}",
                "nts-ke-server[0].listen",
                None,
            ),
            "tsq-in-use": (
                f'[[tsq-server]]\ntransport = "datagram"\nlisten = "127.0.0.1:{port}"\n{certs}',
                "tsq-server[0].listen",
                None,
            ),
            "metrics-in-use": (f'[metrics]\nlisten = "127.0.0.1:{port}"\n', "metrics.listen", None),
        }[case]
        log = tsyncd_start_fails(tmp_path, toml)
    why = (
        "Cannot assign requested address: not an address of this host"
        if case == "not-local"
        else "Address already in use: another process already uses this port"
    )
    assert f'cannot start: {key} = "{listen or f"127.0.0.1:{port}"}": cannot bind ({why})\n' in log


def test_control_socket_failures_name_the_key(tmp_path: Path) -> None:
    """QA s18 hunt-ops F4: "cannot start: [Errno 2] No such file or directory" named nothing."""
    taken = tmp_path / "a-directory"
    taken.mkdir()
    log = tsyncd_start_fails(tmp_path, "", str(taken))
    assert f'cannot start: control.socket = "{taken}": {taken} exists and is not a socket' in log
    log = tsyncd_start_fails(tmp_path, "", "/proc/tsyncd.sock")
    assert 'cannot start: control.socket = "/proc/tsyncd.sock": cannot listen (' in log


def test_tracking_sourcestats_burst_and_makestep(peers: Peers, tmp_path: Path) -> None:
    port = free_udp_port()
    peers.tsyncd(
        "server", f'[synchronization]\nlocal-stratum = 2\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
    )
    drift = tmp_path / "client.drift"
    client = peers.tsyncd("client", client_toml(port), clock_toml=f'drift-file = "{drift}"')
    tracking = wait_for(
        "three clock updates",
        lambda: (t := client.ctl("tracking"))["clock_updates"] >= 3 and t,
    )
    assert tracking["synchronized"] is True and tracking["clock_mode"] == "measure"
    assert tracking["stratum"] == 3 and tracking["reference_id"] == "127.0.0.1"
    # Same host, same clock: the host clock's offset from the server is tiny.
    assert abs(tracking["host_clock_offset"]) < 1e-3
    assert abs(tracking["frequency_ppm"]) <= 500
    stats = client.ctl("sourcestats")
    assert stats[0]["name"] == f"127.0.0.1:{port}" and stats[0]["samples"] >= 3
    assert 0 <= stats[0]["delay_min"] <= stats[0]["delay_max"] < 1e-2
    sent_before = client.ctl("peers")[0]["packets_sent"]
    # chronyc's burst [SOURCE]: by offline's selectors, none picking no source.
    error = ctl_fails(client, "burst", "192.0.2.0/24")
    assert error.startswith("tsyncctl: burst: no source matches 192.0.2.0/24 (sources: ")
    assert client.ctl("burst", "127.0.0.1") == {"sources": 1, "skipped": {}}
    wait_for(
        "the burst's requests",
        lambda: client.ctl("peers")[0]["packets_sent"] >= sent_before + 3,
        timeout=10,
    )
    step = client.ctl("makestep")
    assert step["stepped"] is True and abs(step["offset"]) < 1e-3
    last = client.ctl("tracking")
    client.proc.stop()
    assert client.proc.popen.returncode == 0
    # chrony's format: how fast the free-running clock gains, the opposite of our correction.
    # A few more updates may land between our last read and the write at exit: allow for the
    # estimate's own uncertainty.
    gain_ppm, skew_ppm = (float(x) for x in drift.read_text().split()[:2])
    assert skew_ppm >= 0 and abs(gain_ppm) <= 500
    tolerance = 5 * max(skew_ppm, last["skew_ppm"]) + 5
    assert abs(-gain_ppm - last["frequency_ppm"]) <= tolerance


def test_measure_only_keeps_the_drift_file_and_survives_reload(
    peers: Peers, tmp_path: Path
) -> None:
    """``--measure-only`` overrides only ``[clock] mode``: the drift file is still read and
    written, and a file saying ``mode = "system"`` is no change needing a restart."""
    port = free_udp_port()
    peers.tsyncd(
        "server", f'[synchronization]\nlocal-stratum = 2\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
    )
    drift = tmp_path / "client.drift"
    client = peers.tsyncd(
        "client",
        client_toml(port),
        clock_toml=f'drift-file = "{drift}"',
        extra_args=("--measure-only",),
    )
    wait_for("a clock update", lambda: client.ctl("tracking")["clock_updates"] >= 1)
    text = client.config.read_text()
    client.config.write_text(text.replace('mode = "measure"', 'mode = "system"', 1))
    reloaded = client.ctl("reload")
    assert reloaded["restart_needed"] == []
    assert client.ctl("tracking")["clock_mode"] == "measure"
    client.proc.stop()
    assert client.proc.popen.returncode == 0
    assert len(drift.read_text().split()) >= 2


def test_waitsync_returns_once_the_client_follows_a_real_source(peers: Peers) -> None:
    port = free_udp_port()
    server = peers.tsyncd(
        "server", f'[synchronization]\nlocal-stratum = 2\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
    )
    client = peers.tsyncd("client", client_toml(port))

    def waitsync(daemon: Tsyncd, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tsyncctl", "-s", str(daemon.socket), "waitsync", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # The server follows only its own local clock: that never counts as synchronized.
    local = waitsync(server, "2", "0", "0", "0.1")
    assert local.returncode == 1, local.stdout + local.stderr
    assert [line.split(", ")[:2] for line in local.stdout.splitlines()] == [
        ["try: 1", "refid: -"],
        ["try: 2", "refid: -"],
    ]
    assert local.stderr == "tsyncctl: not synchronized after 2 tries\n"
    # The client gets there within a few polls of 1/8 s; 300 tries of 0.1 s bound the wait.
    synced = waitsync(client, "300", "0.01", "0", "0.1")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    last = synced.stdout.splitlines()[-1]
    assert "refid: 7F000001" in last  # chronyc's hex: 127.0.0.1
    correction = float(last.split("correction: ")[1].split(",")[0])
    assert 0 <= correction <= 0.01
    assert client.ctl("status")["synchronized"] is True


def test_shutdown_stops_the_daemon_cleanly(peers: Peers) -> None:
    port = free_udp_port()
    daemon = peers.tsyncd(
        "tsyncd", f'[synchronization]\nlocal-stratum = 9\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
    )
    shown = daemon.run_ctl("shutdown")
    assert (shown.returncode, shown.stdout) == (0, "tsyncd is stopping\n"), shown.stderr
    assert daemon.proc.popen.wait(10) == 0
    assert not daemon.socket.exists()  # as after SIGTERM
    assert "stopping" in daemon.proc.output()


def test_a_full_client_log_forgets_the_oldest_and_counts_it(peers: Peers) -> None:
    """chronyc serverstats' "Client log records dropped", with each worker's log full at 1."""
    port = free_udp_port()
    daemon = peers.tsyncd(
        "tsyncd",
        f'[synchronization]\nlocal-stratum = 9\n[[server]]\nlisten = "127.0.0.1:{port}"\n'
        "max-clients = 1\n",
    )
    request = encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=5))
    for i in range(2, 8):  # six clients, 127.0.0.2 .. 127.0.0.7, over at most 2 workers
        assert ask(port, request, source=f"127.0.0.{i}") is not None
    stats = wait_for(
        "the evictions counted",
        lambda: (s := daemon.ctl("serverstats"))["clients_evicted"] >= 4 and s,
    )
    assert 1 <= stats["clients"] <= max(1, stats["workers"])  # one kept per worker it reached
    assert stats["clients"] + stats["clients_evicted"] == 6
    assert "Client log records dropped" in daemon.run_ctl("serverstats").stdout
