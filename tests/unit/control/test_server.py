"""Control server: a real ControlServer on a temporary Unix socket, real clients over it.

The server's event loop runs in a background thread so the blocking client (and raw sockets)
can talk to it from the test thread.  Handlers are plain functions returning example snapshots
(tests/snapshot_examples.py): that is the unit boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import snapshot_examples as examples
from loop_thread import LoopThread

from tsyncctl.client import ControlClient, ControlError
from tsyncd.control.rpc import ErrorCode
from tsyncd.control.server import ControlServer, ControlSetupError, may_call_admin
from tsyncd.snapshots import as_json

# The shared examples, with the values asserted on below that differ from them.
SYSTEM = replace(examples.SYSTEM, stratum=3)
STATS = replace(examples.STATS, dropped_by_reason={"rate": 2})


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _boom(params: dict[str, Any]) -> Any:
    raise ZeroDivisionError("division by zero in a test handler")


async def _async_echo(params: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    return {"echo": params}


READ_METHODS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "status": lambda params: SYSTEM,
    "serverstats": lambda params: STATS,
    "sources": lambda params: [],
    "echo": _async_echo,
    "boom": _boom,
    "unjsonable": lambda params: {"x": object()},
}


def _makestep(params: dict[str, Any]) -> Any:
    return {"stepped": True}


ServerFactory = Callable[..., ControlServer]


@pytest.fixture
def serve(loop: LoopThread, short_dir: Path) -> Iterator[ServerFactory]:
    started: list[ControlServer] = []

    def factory(**kwargs: Any) -> ControlServer:
        kwargs.setdefault("read_methods", READ_METHODS)
        kwargs.setdefault("admin_methods", {"makestep": _makestep})
        path = kwargs.pop("path", short_dir / "ctl.sock")
        server = ControlServer(path, **kwargs)
        loop.run(server.start())
        started.append(server)
        return server

    yield factory
    for server in started:
        loop.run(server.close())


def raw_exchange(path: Path, data: bytes, responses: int) -> list[dict[str, Any]]:
    """Send raw bytes, read ``responses`` lines back, return them parsed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        if data:  # nothing to send: a server that answers and closes at once (busy) must
            s.sendall(data)  # not turn into EPIPE here
        buf = b""
        while buf.count(b"\n") < responses:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


# --------------------------------------------------------------------------- results


def test_status_returns_the_snapshot_as_json(serve: ServerFactory) -> None:
    server = serve()
    with ControlClient(server.socket_path) as client:
        result = client.call("status")
    assert result == as_json(SYSTEM)
    assert result["offset"] == -1.25e-5
    assert result["reference_id"] == "192.0.2.1"


def test_several_requests_on_one_connection(serve: ServerFactory) -> None:
    server = serve()
    with ControlClient(server.socket_path) as client:
        assert client.call("serverstats")["dropped_by_reason"] == {"rate": 2}
        assert client.call("sources") == []
        assert client.call("echo", {"a": 1}) == {"echo": {"a": 1}}
    assert server.connection_count <= 1


def test_pipelined_requests_are_answered_in_order(serve: ServerFactory) -> None:
    server = serve()
    data = b"".join(
        json.dumps({"jsonrpc": "2.0", "id": i, "method": m}).encode() + b"\n"
        for i, m in ((1, "sources"), ("two", "status"), (3, "version?"))
    )
    replies = raw_exchange(server.socket_path, data, 3)
    assert [r["id"] for r in replies] == [1, "two", 3]
    assert replies[0]["result"] == []
    assert replies[1]["result"]["stratum"] == 3
    assert replies[2]["error"]["code"] == ErrorCode.METHOD_NOT_FOUND


def test_notification_gets_no_answer(serve: ServerFactory) -> None:
    server = serve()
    data = (
        b'{"jsonrpc":"2.0","method":"sources"}\n'  # no id: a notification
        b'{"jsonrpc":"2.0","id":7,"method":"sources"}\n'
    )
    replies = raw_exchange(server.socket_path, data, 1)
    assert replies == [{"jsonrpc": "2.0", "id": 7, "result": []}]


# --------------------------------------------------------------------------- errors


def test_unknown_params_are_refused_before_the_handler_runs(serve: ServerFactory) -> None:
    """Methods with declared param names refuse others (a misspelt one must not pass for a
    missing one); an undeclared method's handler checks its params itself."""
    server = serve(params={"status": (), "echo": ("a",), "sources": None})
    with ControlClient(server.socket_path) as client:
        with pytest.raises(ControlError) as info:
            client.call("status", {"verbose": True})
        assert info.value.code == ErrorCode.INVALID_PARAMS
        assert str(info.value) == "status: unknown param 'verbose'; it takes no params"
        with pytest.raises(ControlError) as info:
            client.call("echo", {"a": 1, "off": "yes", "b": 2})
        assert str(info.value) == "echo: unknown param 'b', 'off'; it takes a"
        assert client.call("echo", {"a": 1}) == {"echo": {"a": 1}}
        assert client.call("sources", {"anything": 1}) == []
        assert client.call("serverstats", {"anything": 1})["dropped_by_reason"]  # not listed


def test_unknown_method_lists_the_known_ones(serve: ServerFactory) -> None:
    server = serve()
    with ControlClient(server.socket_path) as client, pytest.raises(ControlError) as info:
        client.call("nope")
    assert info.value.code == ErrorCode.METHOD_NOT_FOUND
    assert str(info.value) == (
        "unknown method 'nope'; known: boom, echo, makestep, serverstats, sources, status,"
        " unjsonable"
    )


def test_bad_json_is_a_parse_error_and_the_connection_goes_on(serve: ServerFactory) -> None:
    server = serve()
    data = (
        b'{"jsonrpc": "2.0", "id": 1, "method"\n'  # cut short
        b"\xff\xfe\n"  # not UTF-8
        b'{"jsonrpc":"2.0","id":2,"method":"sources"}\n'
    )
    replies = raw_exchange(server.socket_path, data, 3)
    assert replies[0]["id"] is None
    assert replies[0]["error"]["code"] == ErrorCode.PARSE_ERROR
    assert "invalid JSON" in replies[0]["error"]["message"]
    assert replies[1]["error"]["code"] == ErrorCode.PARSE_ERROR
    assert replies[2] == {"jsonrpc": "2.0", "id": 2, "result": []}


@pytest.mark.parametrize(
    ("request_obj", "code", "expected_id"),
    [
        ({"id": 1, "method": "status"}, ErrorCode.INVALID_REQUEST, 1),  # no "jsonrpc"
        ({"jsonrpc": "2.0", "id": 2}, ErrorCode.INVALID_REQUEST, 2),  # no method
        ({"jsonrpc": "2.0", "id": 3, "method": 5}, ErrorCode.INVALID_REQUEST, 3),
        ({"jsonrpc": "2.0", "id": [1], "method": "status"}, ErrorCode.INVALID_REQUEST, None),
        ({"jsonrpc": "2.0", "id": 4, "method": "echo", "params": [1]}, ErrorCode.INVALID_PARAMS, 4),
        ([{"jsonrpc": "2.0", "id": 5, "method": "status"}], ErrorCode.INVALID_REQUEST, None),
        ("just a string", ErrorCode.INVALID_REQUEST, None),
    ],
)
def test_invalid_requests(
    serve: ServerFactory, request_obj: Any, code: ErrorCode, expected_id: Any
) -> None:
    server = serve()
    (reply,) = raw_exchange(server.socket_path, json.dumps(request_obj).encode() + b"\n", 1)
    assert reply["error"]["code"] == code
    assert reply["id"] == expected_id


def test_lines_python_cannot_parse_get_an_error_not_a_traceback(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Lines Python's json rejects with other errors than JSONDecodeError (an integer over
    4300 digits, deep nesting) or accepts though they are not JSON (NaN) get a JSON-RPC error
    on a connection that goes on, and log no ERROR (before: a traceback and no answer)."""
    server = serve()
    long_id = b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"status"}\n'
    deep_list = b"[" * 20000 + b"]" * 20000 + b"\n"
    deep_object = b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"\n"
    nan_id = b'{"jsonrpc":"2.0","id":NaN,"method":"status"}\n'
    nan_param = b'{"jsonrpc":"2.0","id":7,"method":"echo","params":{"x":-Infinity}}\n'
    after = b'{"jsonrpc":"2.0","id":8,"method":"sources"}\n'
    with caplog.at_level(logging.DEBUG, logger="tsyncd.control.server"):
        replies = raw_exchange(
            server.socket_path, long_id + deep_list + deep_object + nan_id + nan_param + after, 6
        )
    assert [r["error"]["code"] for r in replies[:3]] == [ErrorCode.PARSE_ERROR] * 3
    assert "4300" in replies[0]["error"]["message"]
    assert replies[1]["error"]["message"] == "parse error: JSON nested too deeply"
    assert replies[3]["error"] == {
        "code": ErrorCode.INVALID_REQUEST,
        "message": 'invalid request: "id" must be a string, number or null',
    }
    assert replies[4]["id"] == 7 and replies[4]["error"] == {
        "code": ErrorCode.INVALID_REQUEST,
        "message": "invalid request: -Infinity is not a JSON number",
    }
    assert all(r["id"] is None for r in replies[:4])
    assert replies[5] == {"jsonrpc": "2.0", "id": 8, "result": []}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_refused_connections_are_logged_once_per_interval(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Any user can make refusals: one WARNING, then one line per interval with the count
    (before: a WARNING for every refused connection)."""
    server = serve(max_connections=1, refusal_log_interval=1.0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held:
        held.settimeout(5)
        held.connect(str(server.socket_path))
        held.sendall(b'{"jsonrpc":"2.0","id":1,"method":"sources"}\n')
        assert held.recv(65536)
        with caplog.at_level(logging.WARNING, logger="tsyncd.control.server"):
            for _ in range(30):
                (reply,) = raw_exchange(server.socket_path, b"", 1)
                assert reply["error"]["code"] == ErrorCode.SERVER_BUSY
            time.sleep(3.2)  # every count reported; a quiet interval adds nothing
    first, *more = [r.getMessage() for r in caplog.records]
    assert first == "control socket: refusing a connection from uid 0, 1 already open"
    # All 29 in one line, or two if the refusals took longer than an interval.
    pattern = re.compile(
        r"control socket: refused (\d+) more connections in the last 1 s"
        r" \(all slots, or the caller's share, taken\)"
    )
    counts = [int(m.group(1)) for m in map(pattern.fullmatch, more) if m is not None]
    assert len(counts) == len(more) and 1 <= len(more) <= 2 and sum(counts) == 29


def test_oversize_line_gets_an_error_and_the_connection_is_closed(serve: ServerFactory) -> None:
    server = serve(max_line_bytes=1024)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.socket_path))
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"x":"' + b"a" * 2000)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk  # ends when the server closes the connection
    (reply,) = [json.loads(line) for line in buf.splitlines()]
    assert reply["error"]["code"] == ErrorCode.LINE_TOO_LONG
    assert "longer than 1024 bytes" in reply["error"]["message"]
    # and the server is still there for others
    with ControlClient(server.socket_path) as client:
        assert client.call("sources") == []


def test_line_of_exactly_the_cap_is_accepted(serve: ServerFactory) -> None:
    server = serve(max_line_bytes=256)
    head = b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"x":"'
    tail = b'"}}'
    line = head + b"a" * (256 - len(head) - len(tail)) + tail
    assert len(line) == 256
    (reply,) = raw_exchange(server.socket_path, line + b"\n", 1)
    assert "result" in reply


def test_handler_exception_is_internal_error_and_server_answers_next(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    with (
        caplog.at_level(logging.ERROR, logger="tsyncd.control.server"),
        ControlClient(server.socket_path) as client,
    ):
        with pytest.raises(ControlError) as info:
            client.call("boom")
        assert client.call("sources") == []
        with pytest.raises(ControlError) as info2:
            client.call("unjsonable")
        assert client.call("sources") == []
    assert info.value.code == ErrorCode.INTERNAL_ERROR
    assert "internal error in 'boom': ZeroDivisionError" in str(info.value)
    assert info2.value.code == ErrorCode.INTERNAL_ERROR
    assert any(r.exc_info and "boom" in r.getMessage() for r in caplog.records)


def test_abrupt_disconnect_does_not_hurt_the_server(serve: ServerFactory) -> None:
    server = serve()
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(server.socket_path))
            s.sendall(b'{"jsonrpc":"2.0","id":1,"meth')
    with ControlClient(server.socket_path) as client:
        assert client.call("status")["stratum"] == 3


def test_last_line_without_newline_is_answered_at_eof(serve: ServerFactory) -> None:
    server = serve()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.socket_path))
        s.sendall(b'{"jsonrpc":"2.0","id":9,"method":"sources"}')
        s.shutdown(socket.SHUT_WR)
        data = s.recv(65536)
    assert json.loads(data) == {"jsonrpc": "2.0", "id": 9, "result": []}


def test_connection_cap(serve: ServerFactory) -> None:
    server = serve(max_connections=2)
    held = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(server.socket_path))
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"sources"}\n')
            assert s.recv(65536)  # answered, so the server counts this connection
            held.append(s)
        assert server.connection_count == 2
        (reply,) = raw_exchange(server.socket_path, b"", 1)
        assert reply["error"]["code"] == ErrorCode.SERVER_BUSY
        assert "try again later" in reply["error"]["message"]
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while server.connection_count and time.monotonic() < deadline:
        time.sleep(0.01)
    with ControlClient(server.socket_path) as client:
        assert client.call("sources") == []


def test_idle_connection_is_closed(serve: ServerFactory) -> None:
    server = serve(idle_timeout=0.2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.socket_path))
        start = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - start < 3


def test_blank_lines_do_not_keep_an_idle_connection(serve: ServerFactory) -> None:
    """Only a request restarts the idle timeout: a client sending blank lines is closed."""
    server = serve(idle_timeout=0.4)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.1)
        s.connect(str(server.socket_path))
        start = time.monotonic()
        closed = False
        while not closed and time.monotonic() - start < 3:
            try:
                s.sendall(b"\n")
                closed = s.recv(100) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed and time.monotonic() - start < 2


SOURCES = b'{"jsonrpc":"2.0","id":1,"method":"sources"}\n'


def _hold_connections(
    path: Path, n: int, uid: int, groups: tuple[int, ...] = (), request: bytes = SOURCES
) -> tuple[list[str], Callable[[], None]]:
    """Open ``n`` connections as ``uid`` with supplementary ``groups`` (a forked child that
    drops to them; we are root), each asking ``request``: what each got ("ok" or the error
    message), and a function that makes the child close them all and exit."""
    results_r, results_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(results_r)
            os.close(release_w)
            os.setgroups(list(groups))
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            held, outcomes = [], []
            for _ in range(n):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.settimeout(5)
                c.connect(str(path))
                with contextlib.suppress(OSError):  # a refused one may be closed already
                    c.sendall(request)
                reply = json.loads(c.makefile("rb").readline())
                outcomes.append(reply["error"]["message"] if "error" in reply else "ok")
                held.append(c)
            os.write(results_w, json.dumps(outcomes).encode())
            os.close(results_w)
            os.read(release_r, 1)  # until the parent says so (or dies)
            status = 0
        finally:
            os._exit(status)
    os.close(results_w)
    os.close(release_r)
    with os.fdopen(results_r, "rb") as pipe:
        data = pipe.read()

    def release() -> None:
        os.close(release_w)
        _, status = os.waitpid(pid, 0)
        assert status == 0

    if not data:
        release()
        raise AssertionError("the child could not hold its connections")
    outcomes: list[str] = json.loads(data)
    return outcomes, release


def _wait_for_count(server: ControlServer, count: int) -> None:
    deadline = time.monotonic() + 5
    while server.connection_count != count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connection_count == count


def test_one_user_cannot_lock_out_the_others_or_root(serve: ServerFactory, short_dir: Path) -> None:
    """Any user may open the (0666) socket: one user holds at most its share of slots, and
    the last ones are kept for administrators (before: 32 connections of user nobody locked
    out everyone, root included)."""
    short_dir.chmod(0o755)  # so that nobody can reach the socket
    server = serve(max_connections=6, max_connections_per_uid=3, reserved_connections=2)
    path = server.socket_path
    first, release_first = _hold_connections(path, 5, 65534)
    try:
        assert first[:3] == ["ok"] * 3
        assert (
            first[3:]
            == [
                "tsyncd is serving 3 control connections for uid 65534 already (at most 3 per"
                " user); try again later"
            ]
            * 2
        )
        _wait_for_count(server, 3)
        second, release_second = _hold_connections(path, 3, 65533)
        try:
            # 4 open: the last 2 slots are for administrators only.
            assert (
                second[0] == "ok"
                and second[1:]
                == [
                    "tsyncd is serving 4 control connections already; the last 2 are kept for"
                    " administrators; try again later"
                ]
                * 2
            )
            _wait_for_count(server, 4)
            with ControlClient(path) as a, ControlClient(path) as b:  # root: reserved slots
                assert a.call("sources") == [] and b.call("sources") == []
                with pytest.raises(ControlError) as full:
                    ControlClient(path).call("sources")
                assert full.value.code == ErrorCode.SERVER_BUSY
        finally:
            release_second()
    finally:
        release_first()
    _wait_for_count(server, 0)
    with ControlClient(path) as client:
        assert client.call("sources") == []


# --------------------------------------------------------------------------- permissions


def test_admin_group_counts_the_callers_own_supplementary_groups(
    serve: ServerFactory, short_dir: Path
) -> None:
    """Membership is the process's, as the kernel reports it (SO_PEERGROUPS): a group given
    by setpriv or systemd's SupplementaryGroups= counts though /etc/group does not list the
    user in it (before: only /etc/group was read, and such a caller was refused)."""
    short_dir.chmod(0o755)  # so that nobody can reach the socket
    server = serve(admin_group="4242")  # a GID with no /etc/group entry: nobody is no member
    makestep = b'{"jsonrpc":"2.0","id":1,"method":"makestep"}\n'
    for groups, expected in (
        ((50, 4242), "ok"),
        ((50,), "permission denied: 'makestep' needs root or group '4242'"),
    ):
        outcomes, release = _hold_connections(
            server.socket_path, 1, 65534, groups=groups, request=makestep
        )
        release()
        assert outcomes == [expected], groups


def test_may_call_admin_rules() -> None:
    def groups(uid: int) -> set[int]:
        return {1000: {1000, 27}, 1001: {1001}}.get(uid, set())

    def check(uid: int, gid: int, admin_gid: int | None) -> bool:
        return may_call_admin(uid, gid, own_uid=999, admin_gid=admin_gid, supplementary=groups)

    assert check(0, 0, None)  # root
    assert check(999, 999, None)  # the daemon's own user
    assert not check(1000, 1000, None)  # no admin group: nobody else
    assert check(1000, 1000, 27)  # supplementary membership
    assert check(1002, 27, 27)  # effective gid
    assert not check(1001, 1001, 27)
    assert not check(-1, -1, 27)  # unknown peer credentials
    # The groups the kernel reports for the peer process are what count, when it reports them.
    assert may_call_admin(
        1001, 1001, own_uid=999, admin_gid=27, groups={5, 27}, supplementary=groups
    )
    assert not may_call_admin(
        1000, 1000, own_uid=999, admin_gid=27, groups=(), supplementary=groups
    )


def test_admin_method_denied_for_other_users(serve: ServerFactory, loop: LoopThread) -> None:
    server = serve(admin_group="root")
    line = b'{"jsonrpc":"2.0","id":1,"method":"makestep"}\n'
    denied = json.loads(loop.run(server.handle_line(line, uid=54321, gid=54321)) or b"null")
    assert denied["error"] == {
        "code": ErrorCode.PERMISSION_DENIED,
        "message": "permission denied: 'makestep' needs root or group 'root'",
    }
    allowed = json.loads(loop.run(server.handle_line(line, uid=54321, gid=0)) or b"null")
    assert allowed["result"] == {"stepped": True}
    # read-only methods stay open to everyone
    status = json.loads(
        loop.run(server.handle_line(line.replace(b"makestep", b"status"), uid=54321, gid=54321))
        or b"null"
    )
    assert status["result"]["stratum"] == 3


def test_admin_denied_message_without_admin_group(serve: ServerFactory, loop: LoopThread) -> None:
    server = serve()
    line = b'{"jsonrpc":"2.0","id":1,"method":"makestep"}\n'
    denied = json.loads(loop.run(server.handle_line(line, uid=54321, gid=54321)) or b"null")
    assert denied["error"]["message"] == "permission denied: 'makestep' needs root"


def test_root_over_the_socket_may_call_admin(serve: ServerFactory) -> None:
    server = serve()
    with ControlClient(server.socket_path) as client:
        assert client.call("makestep") == {"stepped": True}


def test_socket_is_world_accessible_without_group(serve: ServerFactory, short_dir: Path) -> None:
    path = short_dir / "new" / "sub" / "ctl.sock"
    server = serve(path=path)
    st = os.stat(server.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755


def test_socket_group_and_mode_with_group(serve: ServerFactory) -> None:
    server = serve(group="root")
    st = os.stat(server.socket_path)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == 0


def test_unknown_group_is_a_setup_error(loop: LoopThread, short_dir: Path) -> None:
    server = ControlServer(
        short_dir / "ctl.sock", read_methods={}, admin_methods={}, group="no-such-group-xyz"
    )
    with pytest.raises(ControlSetupError) as info:
        loop.run(server.start())
    assert str(info.value) == (
        'control.group = "no-such-group-xyz": expected the name or GID of an existing group '
        "(create it: groupadd no-such-group-xyz)"
    )
    assert info.value.key == "control.group"  # the daemon adds the config file's name
    assert not (short_dir / "ctl.sock").exists()


# --------------------------------------------------------------------------- socket file


def test_stale_socket_file_is_replaced(serve: ServerFactory, short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a crashed daemon leaves behind
    stale.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    server = serve(path=path)
    with ControlClient(server.socket_path) as client:
        assert client.call("sources") == []


def test_live_socket_is_not_stolen(serve: ServerFactory, loop: LoopThread) -> None:
    first = serve()
    second = ControlServer(first.socket_path, read_methods={}, admin_methods={})
    with pytest.raises(ControlSetupError, match="already listening"):
        loop.run(second.start())
    with ControlClient(first.socket_path) as client:
        assert client.call("sources") == []


def test_regular_file_is_not_removed(loop: LoopThread, short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    path.write_text("precious")
    server = ControlServer(path, read_methods={}, admin_methods={})
    with pytest.raises(ControlSetupError, match="is not a socket"):
        loop.run(server.start())
    assert path.read_text() == "precious"


def test_close_removes_the_socket_and_drops_connections(loop: LoopThread, short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    server = ControlServer(path, read_methods=READ_METHODS, admin_methods={})
    loop.run(server.start())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"sources"}\n')
        assert s.recv(65536)
        loop.run(server.close())
        assert s.recv(65536) == b""
    assert not path.exists()


def test_overlapping_method_tables_are_rejected(short_dir: Path) -> None:
    with pytest.raises(ValueError, match="both read-only and admin: status"):
        ControlServer(
            short_dir / "x.sock",
            read_methods={"status": _makestep},
            admin_methods={"status": _makestep},
        )
