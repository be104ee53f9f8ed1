"""tsyncctl against a real ControlServer on a temporary socket (event loop in a thread)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from loop_thread import serving
from snapshot_examples import SELECTED, STATS, SYSTEM, UNREACHABLE

from tsyncctl import cli as cli_module
from tsyncctl import render
from tsyncctl.cli import cli
from tsyncctl.client import ControlClient, ControlError
from tsyncctl.render import format_age, format_log2, format_seconds
from tsyncd import __version__
from tsyncd.control.server import ControlServer, Handler

# The tests below assert on the values of the shared examples (tests/snapshot_examples.py).
CANDIDATE = replace(SELECTED, name="c.example:123", state="candidate", offset=-0.0000021)

READ_METHODS = {
    "status": lambda params: SYSTEM,
    "sources": lambda params: [SELECTED, CANDIDATE, UNREACHABLE],
    "serverstats": lambda params: STATS,
    "version": lambda params: {"version": __version__},
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))  # AF_UNIX paths max 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextmanager
def control_socket(path: Path, read_methods: Mapping[str, Handler]) -> Iterator[Path]:
    """A ControlServer with only these read methods, listening on ``path`` while in use."""
    with serving(ControlServer(path, read_methods=read_methods, admin_methods={})) as server:
        yield server.socket_path


@pytest.fixture
def sock(short_dir: Path) -> Iterator[Path]:
    with control_socket(short_dir / "ctl.sock", READ_METHODS) as path:
        yield path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def assert_one_line_error(result: Result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"tsyncctl: {expected}\n"
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- --json


def test_json_before_the_command_as_chronyc_takes_c(sock: Path) -> None:
    result = run("-s", str(sock), "--json", "status")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stratum"] == 2
    assert not run("-s", str(sock), "status").stdout.startswith("{")


def test_a_plain_file_as_the_socket_is_named_so(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-socket"
    plain.write_text("")
    assert_one_line_error(
        run("-s", str(plain), "status"),
        f"cannot connect to tsyncd at {plain}: not a socket "
        "(use -s to choose tsyncd's control socket)",
    )


def test_values_checked_before_asking_tsyncd(tmp_path: Path) -> None:
    """What the user typed is refused as typed: no socket is needed to say so."""
    nowhere = str(tmp_path / "none.sock")
    for value in ("nan", "inf", "-inf", "1e400"):
        result = run("-s", nowhere, "maxdelay", "a.example:123", value)
        assert result.exit_code == 2 and "is not a finite number" in result.stderr, value
        for option in ("--max-delay", "--offset", "--broadcast-delay"):  # QA s17 churn F5
            result = run("-s", nowhere, "add", "a.example:123", option, value)
            assert result.exit_code == 2, (option, value)
            assert f"'{option}': {value if value != '1e400' else 'inf'} is not a finite" in (
                result.stderr
            )
    assert_one_line_error(
        run("-s", nowhere, "accheck", "not_an_ip"),
        "accheck: 'not_an_ip' is not an IP address or host name",
    )


def test_status_json_has_the_contract_keys(sock: Path) -> None:
    result = run("-s", str(sock), "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("synchronized", "stratum", "reference_id", "offset", "leap"):
        assert key in data
    assert data["stratum"] == 2
    assert data["offset"] == -1.25e-5
    assert data["synchronized"] is True


def test_peers_json_lists_sources(sock: Path) -> None:
    result = run("-s", str(sock), "peers", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["name"] for s in data] == ["a.example:123", "c.example:123", "b.example:123"]
    keys = ("name", "address", "mode", "state", "offset", "delay", "jitter", "reach", "poll")
    for src in data:
        for key in keys:
            assert key in src
    assert data[2]["offset"] is None
    assert run("-s", str(sock), "sources", "--json").stdout == result.stdout  # alias
    # chronyc's -v and -a (legend, unresolved sources: always shown here) are taken as no-ops.
    assert run("-s", str(sock), "sources", "-v", "-a", "--json").stdout == result.stdout
    plain = run("-s", str(sock), "sources")
    assert plain.exit_code == 0 and run("-s", str(sock), "sources", "-v").stdout == plain.stdout


def test_serverstats_json(sock: Path) -> None:
    result = run("-s", str(sock), "serverstats", "--json")
    data = json.loads(result.stdout)
    assert (data["received"], data["sent"]) == (1000, 990)
    assert data["dropped_by_reason"] == {"rate_limited": 7, "malformed": 3}


def test_version_command(sock: Path) -> None:
    result = run("-s", str(sock), "version")
    assert result.stdout == f"tsyncd {__version__}\n"
    assert json.loads(run("-s", str(sock), "version", "--json").stdout) == {"version": __version__}


def test_socket_from_environment(sock: Path) -> None:
    result = run("status", "--json", env={"TSYNCD_SOCKET": str(sock)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stratum"] == 2


# --------------------------------------------------------------------------- human output


def test_status_human(sock: Path) -> None:
    result = run("-s", str(sock), "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Reference ID    : C0000201 (192.0.2.1)"
    assert "Stratum         : 2" in lines
    assert "Synchronized    : yes" in lines
    assert "Offset          : -12.500 µs (clock fast)" in lines
    assert "Root delay      : 4.100 ms" in lines
    assert "Root dispersion : 520.000 µs" in lines
    assert "Leap status     : none" in lines
    assert "Poll            : 6 (64 s)" in lines
    assert "Clock mode      : system" in lines
    assert "Ref time        : 2023-11-14 22:13:20 UTC" in lines
    assert "Uptime          : 1d 1h 1m 1s" in lines


def test_status_human_unsynchronized(short_dir: Path) -> None:
    unsynced = replace(
        SYSTEM,
        synchronized=False,
        unsynchronized_reason="no reachable sources",
        stratum=16,
        reference_time=None,
        offset=0.0,
    )
    with control_socket(short_dir / "u.sock", {"status": lambda p: unsynced}) as path:
        out = run("-s", str(path), "status").stdout
    assert "Synchronized    : no (no reachable sources)" in out.splitlines()
    assert "Ref time        : -" in out.splitlines()
    assert "Offset          : +0.000 ns" in out.splitlines()


def test_peers_human_table(sock: Path) -> None:
    result = run("-s", str(sock), "peers")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "MS", "Name", "Address", "St", "Poll", "Reach", "LastRx", "Offset", "Delay", "Jitter",
        "Note",
    ]  # fmt: skip
    assert set(lines[1]) == {"="}
    assert lines[2].split() == [
        "^*", "a.example:123", "192.0.2.1:123", "1", "6", "377", "35s", "+1.2ms", "3.1ms", "45.0µs"
    ]  # fmt: skip
    assert lines[3].split()[:2] == ["^+", "c.example:123"]
    assert lines[3].split()[7] == "-2.1µs"
    assert lines[4].split() == [
        "^?", "b.example:123", "[2001:db8::1]:123", "-", "6", "0", "-", "-", "-", "-",
        "no", "reply", "for", "8", "polls;", "KoD", "RATE",
    ]  # fmt: skip
    # columns line up: every row's offset ends where the header's does
    end = lines[0].index("Offset") + len("Offset")
    assert lines[2][:end].endswith("+1.2ms")
    assert lines[-3].startswith("M: ^ server") and lines[-2].startswith("S: * selected")
    assert lines[-1] == (
        "Offset: source minus local clock (RFC 5905), + local clock slow, - fast"
        " (chronyc shows the opposite sign)"
    )


def test_serverstats_human(sock: Path) -> None:
    lines = run("-s", str(sock), "serverstats").stdout.splitlines()
    assert lines == [
        "Listening on               : 0.0.0.0:123, [::]:123",
        "Packets received           : 1000",
        "Packets sent               : 990",
        "Packets dropped            : 10",
        "  malformed                : 3",
        "  rate_limited             : 7",
        "KoD sent                   : 4",
        "Answered                   : 0",
        "Interleaved answered       : 0",
        "Clients                    : 0",
        "Client log records dropped : 0",
        "Workers                    : 0",
        "Worker restarts            : 0",
    ]


def test_empty_source_list(short_dir: Path) -> None:
    with control_socket(short_dir / "e.sock", {"sources": lambda p: []}) as path:
        out = run("-s", str(path), "peers").stdout
    assert out == "no sources configured\n"


def test_no_rows_while_sources_wait_for_an_address_is_not_no_sources(short_dir: Path) -> None:
    """sourcestats (and an older tsyncd's sources) lists no source without an address: an
    empty list is "no sources configured" only if activity counts none waiting."""
    counts = {"online": 0, "offline": 0, "unknown_address": 2}
    methods = {
        "sources": lambda p: [],
        "sourcestats": lambda p: [],
        "activity": lambda p: counts,
    }
    with control_socket(short_dir / "w.sock", methods) as path:
        for view in ("sources", "sourcestats", "selectdata", "ntpdata", "authdata"):
            result = run("-s", str(path), view)
            assert result.exit_code == 0, result.output
            assert result.stdout == (
                "no source has an address to poll yet: 2 source(s) waiting for name"
                " resolution or an NTS-KE (tsyncctl sources)\n"
            ), view
        assert json.loads(run("-s", str(path), "sources", "--json").stdout) == []


@pytest.mark.parametrize(
    ("value", "signed", "text"),
    [
        (None, False, "-"),
        (0.0000000004, False, "0.400 ns"),
        (0.000123456, True, "+123.456 µs"),
        (-0.0015, True, "-1.500 ms"),
        (2.5, False, "2.500 s"),
        (0.0009999999, False, "1.000 ms"),  # would be "1000.000 µs"
        (float("nan"), False, "-"),
    ],
)
def test_format_seconds(value: float | None, signed: bool, text: str) -> None:
    assert format_seconds(value, signed=signed) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (7.29e-7, "+729 ns"),  # not "+729.000000 ns"
        (0.0, "+0 ns"),
        (-1.2345678e-6, "-1.235 µs"),
        (0.500000323, "+500.000323 ms"),
        (0.4999999704, "+499.999970 ms"),
        (1.5, "+1.500000000 s"),
        (9.999996e-7, "+1.000 µs"),  # not "+1000 ns"
    ],
)
def test_format_seconds_to_the_nanosecond(value: float, text: str) -> None:
    """ntpdata's times: digits down to the nanosecond (tsyncd's resolution), no further."""
    assert format_seconds(value, signed=True, digits=None) == text


def test_format_age_and_log2() -> None:
    assert [format_age(x) for x in (None, 5, 599, 600, 7200, 200000)] == [
        "-", "5s", "599s", "10m", "2h", "2d"
    ]  # fmt: skip
    assert format_log2(10) == "10 (1024 s)"
    assert format_log2(-20) == "-20 (954 ns)"


# --------------------------------------------------------------------------- errors


def test_missing_socket_is_one_line_exit_1(short_dir: Path) -> None:
    path = short_dir / "missing.sock"
    result = run("-s", str(path), "status")
    assert_one_line_error(
        result,
        f"cannot connect to tsyncd at {path}: no such socket"
        " (is tsyncd running? use -s to choose the socket)",
    )


def test_stale_socket_is_connection_refused(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    result = run("-s", str(path), "peers")
    assert_one_line_error(
        result,
        f"cannot connect to tsyncd at {path}: connection refused"
        " (stale socket: is tsyncd running?)",
    )


def test_permission_denied_on_the_socket(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # We run as root, which the kernel never refuses; fake the connect() failure instead.
    def refuse(self: socket.socket, address: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    path = short_dir / "x.sock"
    with pytest.raises(ControlError) as info:
        ControlClient(path).call("status")
    assert str(info.value) == (
        f"cannot connect to tsyncd at {path}: permission denied"
        " (run as root or as a member of the socket's group)"
    )


def test_a_socket_the_user_may_not_open_is_permission_denied_not_a_usage_error(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 0660 socket of a group the user is not in: the client's own message and exit 1, not
    click's "not readable" usage error (exit 2); waitsync keeps asking, as for any connect
    error.  We run as root: the access test and the connect() failure are faked."""
    path = short_dir / "x.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))

    def refuse(self: socket.socket, address: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    denied = (
        f"cannot connect to tsyncd at {path}: permission denied"
        " (run as root or as a member of the socket's group)"
    )
    assert_one_line_error(run("-s", str(path), "status"), denied)
    result = run("-s", str(path), "waitsync", "2", "0", "0", "0.1")
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [f"try: {n}, no answer: {denied}" for n in (1, 2)]
    assert result.stderr == "tsyncctl: not synchronized after 2 tries\n"


def test_timeout_when_the_daemon_does_not_answer(short_dir: Path) -> None:
    path = short_dir / "hung.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)  # connects succeed via the backlog, but nobody ever answers
        result = run("-s", str(path), "--timeout", "0.2", "status")
    assert_one_line_error(result, f"tsyncd at {path} did not answer 'status' within 0.2 s")


def test_busy_refusal_is_shown_not_a_broken_pipe(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy tsyncd answers a new connection with an error line and closes it at once: the
    request then fails with EPIPE, yet the refusal is what to show (before: "Broken pipe")."""
    path = short_dir / "busy.sock"
    busy = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32002,"message":"tsyncd is busy"}}\n'
    connect = socket.socket.connect
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)

        def refused_at_once(self: socket.socket, address: Any) -> None:
            connect(self, address)
            conn, _ = listener.accept()  # the server answers and closes before the request
            conn.sendall(busy)
            conn.close()

        monkeypatch.setattr(socket.socket, "connect", refused_at_once)
        result = run("-s", str(path), "status")
    assert_one_line_error(result, "tsyncd is busy")


def test_rpc_error_message_is_shown(short_dir: Path) -> None:
    with control_socket(short_dir / "m.sock", {"status": lambda p: SYSTEM}) as path:
        result = run("-s", str(path), "serverstats")
    assert_one_line_error(result, "unknown method 'serverstats'; known: status")


def test_with_json_a_failure_is_json_on_stdout_too(short_dir: Path) -> None:
    """A script reading ``--json`` output gets JSON when the command fails as well (s17 QA):
    tsyncd's error code when tsyncd refused, null when tsyncctl failed first; stderr and the
    exit code as without --json."""
    message = "unknown method 'serverstats'; known: status"
    with control_socket(short_dir / "m.sock", {"status": lambda p: SYSTEM}) as path:
        for args in (("--json", "serverstats"), ("serverstats", "--json")):
            result = run("-s", str(path), *args)
            assert result.exit_code == 1, result.output
            assert result.stderr == f"tsyncctl: {message}\n"
            assert json.loads(result.stdout) == {"error": {"code": -32601, "message": message}}
    missing = short_dir / "missing.sock"
    result = run("-s", str(missing), "sources", "--json")
    assert result.exit_code == 1 and result.stderr.startswith("tsyncctl: cannot connect")
    assert json.loads(result.stdout)["error"]["code"] is None
    # A usage error keeps click's exit code 2; with the main command's --json it is JSON too.
    result = run("-s", str(missing), "--json", "accheck")
    assert result.exit_code == 2
    assert "Missing argument" in json.loads(result.stdout)["error"]["message"]


def test_version_option() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"tsyncctl {__version__}\n"


def test_main_turns_a_bug_into_one_line(
    sock: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(status: Any) -> str:
        raise KeyError("surprise")

    monkeypatch.setattr(render, "render_status", broken)
    monkeypatch.setattr(sys, "argv", ["tsyncctl", "-s", str(sock), "status"])
    with pytest.raises(SystemExit) as info:
        cli_module.main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == "tsyncctl: internal error: KeyError: 'surprise'\n"


def test_python_dash_m_runs_the_cli(short_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(short_dir / "none.sock"), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("tsyncctl: cannot connect to tsyncd at ")


def test_clients_below_the_threshold_are_not_called_no_clients(short_dir: Path) -> None:
    rows = [{"address": "192.0.2.7", "received": 3, "answered": 3}]
    methods = {**READ_METHODS, "clients": lambda params: rows}
    with control_socket(short_dir / "c.sock", methods) as path:
        some = run("-s", str(path), "clients", "-p", "100")
        assert some.exit_code == 0
        assert some.stdout == "no client has sent 100 or more (1 sent fewer)\n"
        assert json.loads(run("-s", str(path), "clients", "-p", "100", "--json").stdout) == []
        assert "192.0.2.7" in run("-s", str(path), "clients", "-p", "3").stdout
