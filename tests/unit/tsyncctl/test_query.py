"""``tsyncctl query``: the pure offset/delay computation and checks, then a loopback server."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from click.testing import CliRunner

from tsyncctl.cli import cli
from tsyncctl.query import (
    QueryError,
    ReplyRejected,
    build_request,
    evaluate_reply,
    parse_target,
    random_transmit_ts,
    run_query,
)
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns

MS = 1_000_000
T1 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z, our clock at send
ORIGIN = 0x1234_5678_9ABC_DEF0  # the random transmit timestamp we "sent"


def server_reply(
    t1_ns: int, *, offset_ns: int, out_ns: int, back_ns: int, hold_ns: int
) -> tuple[NtpPacket, int]:
    """A reply from a server ``offset_ns`` ahead, with given path delays; returns (reply, T4)."""
    t2 = t1_ns + out_ns + offset_ns  # server clock at receive
    t3 = t2 + hold_ns  # server clock at transmit
    t4 = t3 - offset_ns + back_ns  # our clock at receive
    reply = NtpPacket(
        leap=Leap.NONE,
        version=4,
        mode=Mode.SERVER,
        stratum=2,
        poll=6,
        precision=-24,
        root_delay=0x0000_0100,  # 256/65536 s = 3.906250 ms
        root_dispersion=0x0000_0080,
        reference_id=0xC000_0201,
        reference_ts=ntp64_from_unix_ns(t1_ns - 30_000 * MS),
        origin_ts=ORIGIN,
        receive_ts=ntp64_from_unix_ns(t2),
        transmit_ts=ntp64_from_unix_ns(t3),
    )
    return reply, t4


# --------------------------------------------------------------------------- pure computation


def test_offset_and_delay_from_spelled_out_timestamps() -> None:
    # Server 5 ms ahead; 1 ms out, 1.5 ms back, 0.1 ms inside the server.
    # T2 = T1 + 6 ms, T3 = T1 + 6.1 ms, T4 = T1 + 2.6 ms (our clock).
    # offset = ((T2-T1) + (T3-T4)) / 2 = (6 + 3.5) / 2 = 4.75 ms (asymmetry costs 0.25 ms)
    # delay = (T4-T1) - (T3-T2) = 2.6 - 0.1 = 2.5 ms
    reply, t4 = server_reply(
        T1, offset_ns=5 * MS, out_ns=1 * MS, back_ns=3 * MS // 2, hold_ns=MS // 10
    )
    assert t4 == T1 + 2_600_000
    result = evaluate_reply(reply, request_transmit_ts=ORIGIN, t1_ns=T1, t4_ns=t4)
    assert abs(result.offset_ns - 4_750_000) <= 1
    assert abs(result.delay_ns - 2_500_000) <= 1
    assert result.stratum == 2
    assert result.reference_id == "192.0.2.1"
    assert result.leap == "none"
    assert result.root_delay_ns == 3_906_250
    assert result.root_dispersion_ns == 1_953_125
    assert (result.poll, result.precision, result.version) == (6, -24, 4)


def test_server_behind_gives_negative_offset() -> None:
    reply, t4 = server_reply(T1, offset_ns=-250 * MS, out_ns=MS, back_ns=MS, hold_ns=0)
    result = evaluate_reply(reply, request_transmit_ts=ORIGIN, t1_ns=T1, t4_ns=t4)
    assert abs(result.offset_ns + 250 * MS) <= 1
    assert abs(result.delay_ns - 2 * MS) <= 1


def test_offset_across_the_2036_era_rollover() -> None:
    rollover_ns = 2_085_978_496 * 1_000_000_000  # 2036-02-07T06:28:16Z, raw seconds wrap to 0
    t1 = rollover_ns - 2 * MS  # we send just before, the server answers just after
    reply, t4 = server_reply(t1, offset_ns=3 * MS, out_ns=MS, back_ns=MS, hold_ns=0)
    assert reply.receive_ts < 1 << 32  # the server's timestamps are in era 1 (small raw values)
    result = evaluate_reply(reply, request_transmit_ts=ORIGIN, t1_ns=t1, t4_ns=t4)
    assert abs(result.offset_ns - 3 * MS) <= 1
    assert abs(result.delay_ns - 2 * MS) <= 1


def _good() -> tuple[NtpPacket, int]:
    return server_reply(T1, offset_ns=0, out_ns=MS, back_ns=MS, hold_ns=0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mode": Mode.CLIENT}, "not a server reply (mode 3)"),
        ({"mode": Mode.BROADCAST}, "not a server reply (mode 5)"),
        ({"origin_ts": ORIGIN + 1}, "origin timestamp does not match our request"),
        (
            {"stratum": 0, "reference_id": refid_from_ascii("RATE")},
            "server sent kiss-o'-death RATE",
        ),
        (
            {"stratum": 0, "reference_id": refid_from_ascii("DENY"), "origin_ts": 7},
            "origin timestamp does not match",  # a KoD that does not echo us is a spoof
        ),
        ({"stratum": 0, "reference_id": 0}, "server is unsynchronized (stratum 0)"),
        ({"stratum": 16}, "server is unsynchronized (stratum 16)"),
        ({"leap": Leap.UNSYNCHRONIZED}, "server is unsynchronized (leap indicator 3)"),
        ({"transmit_ts": 0}, "zero receive or transmit timestamp"),
        ({"receive_ts": 0}, "zero receive or transmit timestamp"),
    ],
)
def test_bad_replies_are_rejected_with_a_reason(change: dict[str, object], reason: str) -> None:
    reply, t4 = _good()
    bad = replace(reply, **change)  # type: ignore[arg-type]
    with pytest.raises(ReplyRejected, match=re.escape(reason)):
        evaluate_reply(bad, request_transmit_ts=ORIGIN, t1_ns=T1, t4_ns=t4)


def test_leap_insert_is_reported_not_rejected() -> None:
    reply, t4 = _good()
    result = evaluate_reply(
        replace(reply, leap=Leap.INSERT), request_transmit_ts=ORIGIN, t1_ns=T1, t4_ns=t4
    )
    assert result.leap == "insert"


def test_request_carries_only_version_mode_and_transmit() -> None:
    data = build_request(ORIGIN)
    assert len(data) == 48
    assert data[0] == 0x23  # LI 0, VN 4, mode 3
    assert data[1:40] == bytes(39)
    assert decode_ntp(data) == NtpPacket(
        leap=Leap.NONE, version=4, mode=Mode.CLIENT, transmit_ts=ORIGIN
    )


def test_transmit_timestamps_are_random() -> None:
    values = {random_transmit_ts() for _ in range(50)}
    assert len(values) == 50
    assert 0 not in values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 123)),
        ("127.0.0.1:4123", ("127.0.0.1", 4123)),
        ("ntp.example.org", ("ntp.example.org", 123)),
        ("ntp.example.org:1", ("ntp.example.org", 1)),
        ("[::1]:123", ("::1", 123)),
        ("[::1]", ("::1", 123)),
        ("::1", ("::1", 123)),
        ("2001:db8::1", ("2001:db8::1", 123)),
    ],
)
def test_parse_target(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[::1", "missing ']'"),
        ("[::1]123", "expected ':PORT' after ']'"),
        ("host:0", "expected 1..65535"),
        ("host:65536", "expected 1..65535"),
        ("host:abc", "bad port 'abc'"),
        (":123", "no host given"),
    ],
)
def test_parse_target_errors(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=re.escape(message)):
        parse_target(text)


# --------------------------------------------------------------------------- loopback server

Responder = Callable[[NtpPacket], NtpPacket | None]


def honest(offset_ns: int = 0) -> Callable[[NtpPacket], NtpPacket]:
    """A stratum-2 server whose clock is ``offset_ns`` ahead of ours."""

    def answer(request: NtpPacket) -> NtpPacket:
        now = time.time_ns() + offset_ns
        return NtpPacket(
            mode=Mode.SERVER,
            stratum=2,
            reference_id=0x7F00_0001,
            origin_ts=request.transmit_ts,
            receive_ts=ntp64_from_unix_ns(now),
            transmit_ts=ntp64_from_unix_ns(now),
        )

    return answer


@pytest.fixture
def fake_server() -> Iterator[Callable[[Responder, str], int]]:
    """Start a UDP responder on loopback; returns its port."""
    stops: list[tuple[socket.socket, threading.Thread, threading.Event]] = []

    def start(responder: Responder, host: str = "127.0.0.1") -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.settimeout(0.05)
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    data, addr = sock.recvfrom(1024)
                except TimeoutError:
                    continue
                reply = responder(decode_ntp(data))
                if reply is not None:
                    sock.sendto(encode_ntp(reply), addr)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        stops.append((sock, thread, stop))
        return int(sock.getsockname()[1])

    yield start
    for sock, thread, stop in stops:
        stop.set()
        thread.join(2)
        sock.close()


def test_run_query_against_a_loopback_server(fake_server: Callable[[Responder, str], int]) -> None:
    port = fake_server(honest(offset_ns=40 * MS), "127.0.0.1")
    outcome = run_query(f"127.0.0.1:{port}", count=2, timeout=1.0, interval=0.0)
    assert outcome.errors == []
    assert len(outcome.replies) == 2
    for reply in outcome.replies:
        assert 35 * MS < reply.offset_ns < 45 * MS
        assert 0 <= reply.delay_ns < 100 * MS


def test_cli_query_human_and_json(fake_server: Callable[[Responder, str], int]) -> None:
    port = fake_server(honest(), "127.0.0.1")
    target = f"127.0.0.1:{port}"
    result = CliRunner().invoke(cli, ["query", target, "--count", "2", "-i", "0"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    pattern = (
        re.escape(target)
        + r" offset [+-]\d+\.\d{6} s delay \d+\.\d{6} s stratum 2 refid 127\.0\.0\.1"
    )
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    data = json.loads(CliRunner().invoke(cli, ["query", target, "--json"]).stdout)
    assert data["address"] == target
    assert data["errors"] == []
    (reply,) = data["replies"]
    assert reply["stratum"] == 2
    assert abs(reply["offset"]) < 0.05


def test_cli_query_ipv6(fake_server: Callable[[Responder, str], int]) -> None:
    port = fake_server(honest(), "::1")
    result = CliRunner().invoke(cli, ["query", f"[::1]:{port}", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["address"] == f"[::1]:{port}"


def test_cli_query_no_reply_is_one_line_exit_1(
    fake_server: Callable[[Responder, str], int],
) -> None:
    port = fake_server(lambda request: None, "127.0.0.1")
    result = CliRunner().invoke(cli, ["query", f"127.0.0.1:{port}", "-t", "0.2"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"tsyncctl: no good reply from 127.0.0.1:{port} (127.0.0.1:{port}): no reply within 0.2 s\n"
    )


def test_cli_query_json_failure_is_one_json_document(
    fake_server: Callable[[Responder, str], int],
) -> None:
    """The outcome (its ``errors``) is the one document on stdout: no ``{"error": ...}`` after
    it, which would break ``json.load`` (QA s19); the reason is on stderr, exit 1."""
    port = fake_server(lambda request: None, "127.0.0.1")
    result = CliRunner().invoke(cli, ["--json", "query", f"127.0.0.1:{port}", "-t", "0.2"])
    assert result.exit_code == 1
    outcome = json.loads(result.stdout)
    assert outcome["replies"] == [] and outcome["errors"] == ["no reply within 0.2 s"]
    assert result.stderr.startswith("tsyncctl: no good reply from")


def test_cli_query_kod_is_reported(fake_server: Callable[[Responder, str], int]) -> None:
    def kod(request: NtpPacket) -> NtpPacket:
        return NtpPacket(
            mode=Mode.SERVER,
            stratum=0,
            reference_id=refid_from_ascii("RATE"),
            origin_ts=request.transmit_ts,
        )

    port = fake_server(kod, "127.0.0.1")
    result = CliRunner().invoke(cli, ["query", f"127.0.0.1:{port}", "-t", "1"])
    assert result.exit_code == 1
    assert result.stderr.endswith(": server sent kiss-o'-death RATE\n")
    assert result.stderr.count("\n") == 1


def test_cli_query_ignores_spoofed_replies(fake_server: Callable[[Responder, str], int]) -> None:
    # A reply that does not echo our transmit timestamp is skipped, then we time out.
    def spoof(request: NtpPacket) -> NtpPacket:
        return replace(honest()(request), origin_ts=request.transmit_ts ^ 1)

    port = fake_server(spoof, "127.0.0.1")
    result = CliRunner().invoke(cli, ["query", f"127.0.0.1:{port}", "-t", "0.3"])
    assert result.exit_code == 1
    assert "origin timestamp does not match our request" in result.stderr


def test_cli_query_closed_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, ["query", f"127.0.0.1:{port}", "-t", "1"])
    assert result.exit_code == 1
    assert result.stderr.endswith("port unreachable (no NTP server there)\n")


def test_cli_query_bad_target() -> None:
    result = CliRunner().invoke(cli, ["query", "host:99999"])
    assert result.exit_code == 1
    assert result.stderr == "tsyncctl: bad port '99999' in 'host:99999': expected 1..65535\n"


def test_cli_query_tries_each_address_of_a_name(
    fake_server: Callable[[Responder, str], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name whose first address has no server (``localhost`` giving ::1 first to a server
    on IPv4 only): the next address answers, and stays the one asked."""
    port = fake_server(honest(), "127.0.0.1")
    addresses = [
        (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", port, 0, 0)),  # nothing there
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", port)),
    ]
    asked: list[str] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[object]:
        asked.append(host)
        return list(addresses)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    result = CliRunner().invoke(cli, ["query", f"two.test:{port}", "-c", "2", "-i", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert asked == ["two.test"]
    assert data["address"] == f"127.0.0.1:{port}"
    assert len(data["replies"]) == 2 and data["errors"] == []
    # Neither answers: one error per request, naming each address tried.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    addresses[1] = (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", closed))
    result = CliRunner().invoke(cli, ["query", f"two.test:{port}", "-t", "0.5"])
    assert result.exit_code == 1
    assert f"[::1]:{port}: " in result.stderr and f"127.0.0.1:{closed}: " in result.stderr
