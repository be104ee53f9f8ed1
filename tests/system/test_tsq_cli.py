"""``tsyncctl tsq query`` and ``tsyncctl tsq sync --dry-run`` against tsyncd's TSQ servers.

Only ``--dry-run`` is ever used for sync: these tests must never touch the host clock.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from loop_thread import LoopThread
from peers import Peers, free_udp_port
from tsqcerts import Pki, make_pki, tsq_servers_toml

from tsyncctl.cli import cli
from tsyncctl.tsq import ServerResult
from tsyncd.net.quic import server_configuration
from tsyncd.servers.tsq import TsqResponder, TsqServer, TsqServerInfo
from tsyncd.sync.tsq import TsqSample
from tsyncd.wire.tsq import ClockQuality, SourceInfo

FALSETICKER_NS = 300_000_000  # the QA report's wrong server: 300 ms ahead


@dataclass
class Served:
    pki: Pki
    stream: int
    datagram: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("tsq-cli")
    pki = make_pki(tmp / "pki")
    stream, datagram = free_udp_port(), free_udp_port()
    peers = Peers(tmp)
    try:
        peers.tsyncd(
            "server",
            "[synchronization]\nlocal-stratum = 3\n"
            # Debian's /etc/hosts names ::1 localhost too (and getaddrinfo puts it first), so
            # the servers listen on both loopbacks for the query by name.
            + tsq_servers_toml(tmp / "pki", stream, datagram, hosts=("127.0.0.1", "::1")),
        )
        yield Served(pki, stream, datagram)
    finally:
        peers.stop_all()


@pytest.fixture(scope="module")
def falseticker(served: Served) -> Iterator[int]:
    """A TSQ datagram server 300 ms ahead: tsyncd's own server code, in a thread of the test,
    with its clock offset (a tsyncd daemon serves its real or virtual clock, and neither can
    be set wrong without touching the host's).  Yields its port on 127.0.0.1."""
    lt = LoopThread()
    info = TsqServerInfo(
        clock_quality=ClockQuality(clock_class=0, error_us=0, drift_ppb=0),
        source_info=SourceInfo(stratum=3, source_type=4, info=""),
    )
    responder = TsqResponder(lambda: time.time_ns() + FALSETICKER_NS, lambda: info)

    async def start() -> TsqServer:
        config = server_configuration("datagram", served.pki.chain, served.pki.key)
        return await TsqServer.create("127.0.0.1", 0, "datagram", config, responder)

    server = lt.run(start())
    try:
        yield int(server.listen.rsplit(":", 1)[1])
    finally:
        lt.loop.call_soon_threadsafe(server.close)
        lt.stop()


def tsyncctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsyncctl", "tsq", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("transport", ["stream", "datagram"])
def test_query_json(served: Served, transport: str) -> None:
    port = served.stream if transport == "stream" else served.datagram
    done = tsyncctl(
        "query", "localhost", "127.0.0.1", "--port", str(port), "--transport", transport,
        "--ca", str(served.pki.ca), "--count", "4", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["server"] for r in rows] == ["localhost", "127.0.0.1"]
    first = str(socket.getaddrinfo("localhost", port, type=socket.SOCK_DGRAM)[0][4][0])
    by_name = f"[{first}]:{port}" if ":" in first else f"{first}:{port}"
    assert [r["address"] for r in rows] == [by_name, f"127.0.0.1:{port}"]
    for row in rows:
        assert row["samples"] == 4 and row["errors"] == []
        # Same clock on both ends: each sample's |offset| <= its delay / 2, and the kept
        # samples have at most twice the shortest delay.
        assert 0 < row["delay"] < 0.05 and abs(row["offset"]) <= row["delay"] + 1e-6
        assert 1 <= row["samples_used"] <= 4


@pytest.mark.parametrize("transport", ["stream", "datagram"])
def test_sync_dry_run(served: Served, transport: str) -> None:
    port = served.stream if transport == "stream" else served.datagram
    done = tsyncctl(
        "sync", f"127.0.0.1:{port}", "--transport", transport, "--ca", str(served.pki.ca),
        "--queries", "5", "--dry-run", "--verbose",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("127.0.0.1:") >= 5  # --verbose: one line per sample
    assert "of 5 samples used, 1 of 1 servers" in done.stdout
    assert "Dry run: would slew the clock by" in done.stdout


def test_insecure_warns_and_wrong_ca_fails(served: Served, tmp_path: Path) -> None:
    done = tsyncctl("query", "127.0.0.1", "--port", str(served.datagram), "--insecure")
    assert done.returncode == 0
    assert "WARNING: Certificate verification disabled!" in done.stderr
    other = make_pki(tmp_path / "other")
    args = ("query", "127.0.0.1", "--port", str(served.datagram), "--insecure", "--ca", other.ca)
    done = tsyncctl(*map(str, args))
    assert done.returncode == 0  # the CA that would refuse it is not used, and says so
    assert f"WARNING: --ca {other.ca} is not used with --insecure" in done.stderr
    done = tsyncctl("query", "127.0.0.1", "--port", str(served.datagram), "--ca", str(other.ca))
    assert done.returncode == 1
    # Our one line, without aioquic's own ("[5f2a...] Error: 298, reason: ...").
    assert done.stderr.splitlines() == [
        f"127.0.0.1: FAILED: QUIC handshake with 127.0.0.1:{served.datagram}: certificate "
        "signature failure",
        "Error: No valid measurements received",
    ]


def test_ca_that_holds_no_certificate_is_refused_upfront(served: Served) -> None:
    key = served.pki.key  # a PEM file, but no certificate in it
    done = tsyncctl("query", "127.0.0.1", "--port", str(served.datagram), "--ca", str(key))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: --ca {key}: expected a readable PEM file of CA certificates (no PEM "
        "certificate in it)"
    ]


def test_reference_validation_messages() -> None:
    runner = CliRunner()
    for args, message in (
        (["tsq", "query"], "Error: At least one server must be specified"),
        (["tsq", "sync", "--dry-run"], "Error: At least one server must be specified"),
        (["tsq", "query", "x", "--port", "0"], "Error: Port must be between 1 and 65535"),
        (["tsq", "sync", "x", "--port", "65536"], "Error: Port must be between 1 and 65535"),
        # A port in SERVER says so the same way (QA s22: "bad server ...: port 70000 is ...").
        (["tsq", "query", "x:70000"], "Error: Port must be between 1 and 65535 (in 'x:70000')"),
        (["tsq", "query", "x:0"], "Error: Port must be between 1 and 65535 (in 'x:0')"),
        (["tsq", "query", "[nohost]:1"], "Error: bad server '[nohost]:1'"),
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    assert runner.invoke(cli, ["tsq", "query", "x", "--count", "101"]).exit_code == 2
    help_text = runner.invoke(cli, ["tsq", "sync", "--help"]).output
    assert "1/delay²" in help_text and "falsetickers" in help_text


def test_sync_refuses_without_privileges(monkeypatch: pytest.MonkeyPatch) -> None:
    # The target is a closed port: even if the check failed, nothing could be measured, so
    # nothing could be adjusted.
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(
        cli, ["tsq", "sync", f"127.0.0.1:{free_udp_port()}", "--timeout", "0.2"]
    )
    assert result.exit_code == 1
    assert "needs root privileges (or use --dry-run)" in result.output


@pytest.mark.parametrize(
    ("offset_ms", "expected", "code"),
    [
        (0.2, "Dry run: would slew the clock by +0.200 ms", 0),
        (700.0, "Dry run: would step the clock by +700.000 ms", 0),
        (-1500.0, "Error: Offset too large (-1500.000 ms > 1000 ms)", 1),
    ],
)
def test_sync_decision(
    monkeypatch: pytest.MonkeyPatch, offset_ms: float, expected: str, code: int
) -> None:
    """Slew, step or refuse, as the reference decides (spec §8); --dry-run only."""
    samples = [
        TsqSample(offset_ns=round(offset_ms * 1e6), delay_ns=d, t1_ns=0, t4_ns=0, t2=0, t3=0)
        for d in (100_000, 110_000, 5_000_000)
    ]

    async def fake_measure(targets: list[Any], **_: Any) -> list[ServerResult]:
        return [ServerResult(name=t[0], address="192.0.2.1:443", samples=samples) for t in targets]

    monkeypatch.setattr("tsyncctl.tsq.measure", fake_measure)
    result = CliRunner().invoke(cli, ["tsq", "sync", "192.0.2.1", "--dry-run"])
    assert result.exit_code == code and expected in result.output, result.output
    assert "(2 of 3 samples used, 1 of 1 servers agree" in result.output


def test_query_falls_back_to_the_next_address(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """localhost whose first address has no TSQ server (as ::1 first to a server on IPv4
    only): the query connects to the next one and reports no error."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        found = real("127.0.0.1", port, *args, **kwargs)
        return [(f, t, p, c, ("127.0.0.9", a[1])) for f, t, p, c, a in found] + found

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    result = CliRunner().invoke(
        cli,
        ["tsq", "query", "localhost", "--port", str(served.datagram), "--ca",
         str(served.pki.ca), "--count", "2", "--timeout", "1", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["address"] == f"127.0.0.1:{served.datagram}"
    assert row["samples"] == 2 and row["errors"] == []


def test_wrong_transport_is_named_at_once(served: Served) -> None:
    """A stream query to the datagram port fails at the handshake, saying why, instead of
    three 3 s reply timeouts."""
    done = tsyncctl(
        "query", "127.0.0.1", "--port", str(served.datagram), "--transport", "stream",
        "--ca", str(served.pki.ca),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"127.0.0.1: FAILED: QUIC handshake with 127.0.0.1:{served.datagram}: the server takes "
        "DATAGRAM frames, no streams: a TSQ datagram port? (try the datagram transport)",
        "Error: No valid measurements received",
    ]


def test_sync_leaves_out_a_falseticker(served: Served, falseticker: int) -> None:
    """QA s22 finding 1: two good servers and one 300 ms ahead.  Pooled, sync said it would
    slew by +60..+112 ms; now the falseticker is left out and the offset is the good ones'."""
    good = (f"127.0.0.1:{served.datagram}", f"[::1]:{served.datagram}")
    bad = f"127.0.0.1:{falseticker}"
    done = tsyncctl(
        "sync", *good, bad, "--ca", str(served.pki.ca), "--queries", "3", "--dry-run",
        "--verbose",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{bad}: left out (falseticker): offset +" in out, out
    assert "of 6 samples used, 2 of 3 servers agree" in out  # the good servers' samples
    for name in good:
        assert f"{name}: server offset " in out and "(used)" in out
    assert f"{bad}: server offset +" in out and "(falseticker)" in out
    would = out.split("Dry run: would slew the clock by ", 1)[1].split(" ms")[0]
    assert abs(float(would)) < 5, out  # the good servers share our clock; pooled: +60 ms on

    done = tsyncctl("query", *good, bad, "--ca", str(served.pki.ca), "--count", "2", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["server"]: r for r in json.loads(done.stdout)}
    assert [(rows[n]["used"], rows[n]["falseticker"]) for n in (*good, bad)] == [
        (True, False),
        (True, False),
        (False, True),
    ]
    assert abs(rows[bad]["offset"] - FALSETICKER_NS / 1e9) < 0.01
    assert 0.001 <= rows[bad]["distance"] < 0.01


def test_sync_refuses_when_no_majority_agrees(served: Served, falseticker: int) -> None:
    """Two servers 300 ms apart: no majority, so no mean of them; sync exits 1 naming both."""
    good, bad = f"127.0.0.1:{served.datagram}", f"127.0.0.1:{falseticker}"
    done = tsyncctl("sync", good, bad, "--ca", str(served.pki.ca), "--queries", "2", "--dry-run")
    assert done.returncode == 1, done.stdout
    assert "would" not in done.stdout
    (error,) = done.stderr.splitlines()
    # e.g. "... 127.0.0.1:44967 +0.130 ms ± 1.219 ms, 127.0.0.1:52663 +299.992 ms ± 1.097 ms"
    assert re.fullmatch(
        "Error: No majority of the servers agree, not adjusting the clock: "
        rf"{re.escape(good)} [+-]\d+\.\d{{3}} ms ± \d+\.\d{{3}} ms, "
        rf"{re.escape(bad)} \+(299|300)\.\d{{3}} ms ± \d+\.\d{{3}} ms",
        error,
    ), error

    done = tsyncctl("query", good, bad, "--ca", str(served.pki.ca), "--count", "2")
    assert done.returncode == 0, done.stderr  # query only reports
    assert "No majority of the servers agree, none used: " in done.stdout
    assert good in done.stdout.splitlines()[-1] and bad in done.stdout.splitlines()[-1]


def test_query_says_which_server_is_left_out_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def at(offset_ms: float) -> list[TsqSample]:
        return [
            TsqSample(
                offset_ns=round(offset_ms * 1e6), delay_ns=200_000, t1_ns=0, t4_ns=0, t2=0, t3=0
            )
        ] * 2

    offsets = {"a": 0.0, "b": 0.05, "bad": 300.0}

    async def fake_measure(targets: list[Any], **_: Any) -> list[ServerResult]:
        return [
            ServerResult(name=t[0], address="192.0.2.1:443", samples=at(offsets[t[0]]))
            for t in targets
        ]

    monkeypatch.setattr("tsyncctl.tsq.measure", fake_measure)
    result = CliRunner().invoke(cli, ["tsq", "query", "a", "b", "bad"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "bad: left out (falseticker): offset +300.000 ms ± 1.100 ms is outside "
        "[-1.050 ms, +1.100 ms], where 2 of 3 servers agree"
    )
    assert "bad: offset +300.000 ms, RTT 0.200 ms (2 of 2 samples used)" in result.output


def test_sync_counts_failed_servers_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that gave no sample does not vote: the two that answered and agree are used."""
    sample = TsqSample(offset_ns=50_000, delay_ns=200_000, t1_ns=0, t4_ns=0, t2=0, t3=0)

    async def fake_measure(targets: list[Any], **_: Any) -> list[ServerResult]:
        return [
            ServerResult(name=t[0], samples=[] if t[0] == "down" else [sample], errors=["x"])
            for t in targets
        ]

    monkeypatch.setattr("tsyncctl.tsq.measure", fake_measure)
    result = CliRunner().invoke(cli, ["tsq", "sync", "a", "down", "b", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "down: FAILED: x" in result.output
    assert "(2 of 2 samples used, 2 of 2 servers agree, 1 failed, " in result.output
    assert "Dry run: would slew the clock by +0.050 ms" in result.output
