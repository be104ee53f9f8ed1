"""Tests for tsyncd.sdnotify: real AF_UNIX datagram sockets receive what Notifier sends."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tsyncd.sdnotify import Notifier, systemd_python_available


@dataclass
class Receiver:
    """A bound datagram socket standing in for systemd's notification socket."""

    sock: socket.socket
    notify_socket: str  # the $NOTIFY_SOCKET value that reaches it

    def recv(self) -> str:
        return self.sock.recv(4096).decode("utf-8")

    def assert_empty(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(4096)
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # sockaddr_un paths are capped at 107 bytes, pytest's tmp_path can be longer.
    with (
        tempfile.TemporaryDirectory(prefix="sdn") as tmp,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        path = str(Path(tmp) / "notify")
        sock.bind(path)
        sock.settimeout(2.0)
        yield Receiver(sock, path)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"tsyncd-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        yield Receiver(sock, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    fixture = "path_receiver" if request.param == "path" else "abstract_receiver"
    result: Receiver = request.getfixturevalue(fixture)
    return result


def pure(receiver: Receiver) -> Notifier:
    return Notifier({"NOTIFY_SOCKET": receiver.notify_socket}, backend="pure")


def test_disabled_without_notify_socket_and_methods_are_noops() -> None:
    notifier = Notifier({}, backend="pure")
    assert notifier.enabled is False
    notifier.ready("up")
    notifier.status("x")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()


def test_empty_notify_socket_counts_as_unset() -> None:
    assert Notifier({"NOTIFY_SOCKET": ""}, backend="pure").enabled is False


def test_ready_with_and_without_status(receiver: Receiver) -> None:
    notifier = pure(receiver)
    assert notifier.enabled is True
    assert notifier.backend == "pure"
    notifier.ready()
    assert receiver.recv() == "READY=1"
    notifier.ready("synchronised to 127.0.0.1")
    assert receiver.recv() == "READY=1\nSTATUS=synchronised to 127.0.0.1"


def test_status_watchdog_stopping(receiver: Receiver) -> None:
    notifier = pure(receiver)
    notifier.status("3 sources, 2 selected")
    assert receiver.recv() == "STATUS=3 sources, 2 selected"
    notifier.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
    notifier.stopping()
    assert receiver.recv() == "STOPPING=1"
    receiver.assert_empty()


def test_status_newlines_cannot_inject_assignments(path_receiver: Receiver) -> None:
    pure(path_receiver).status("line one\nREADY=1\r\nthree")
    assert path_receiver.recv() == "STATUS=line one READY=1 three"


def test_reloading_carries_monotonic_usec(path_receiver: Receiver) -> None:
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    pure(path_receiver).reloading()
    after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = path_receiver.recv().split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before_us <= int(value) <= after_us


def test_send_to_missing_socket_logs_and_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        notifier = Notifier({"NOTIFY_SOCKET": str(Path(tmp) / "absent")}, backend="pure")
        with caplog.at_level(logging.DEBUG, logger="tsyncd.sdnotify"):
            notifier.ready("up")
            notifier.watchdog()
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.levelno == logging.DEBUG for r in failures)


@pytest.mark.parametrize("value", ["relative/notify", "vsock:2:1234"])
def test_unsupported_address_forms_are_logged_not_raised(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": value}, backend="pure")
    assert notifier.enabled is True
    with caplog.at_level(logging.DEBUG, logger="tsyncd.sdnotify"):
        notifier.ready()
    assert any("unsupported NOTIFY_SOCKET" in r.getMessage() for r in caplog.records)


def test_send_to_a_stream_socket_fails_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="sdn") as tmp,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream,
    ):
        path = str(Path(tmp) / "stream")
        stream.bind(path)
        stream.listen()
        with caplog.at_level(logging.DEBUG, logger="tsyncd.sdnotify"):
            Notifier({"NOTIFY_SOCKET": path}, backend="pure").watchdog()
    assert any("failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("1500000", "self", 1.5),
        ("30000000", "other", None),
        ("30000000", "not-a-pid", None),
        ("0", None, None),
        ("-5", None, None),
        ("thirty", None, None),
    ],
)
def test_watchdog_interval(usec: str | None, pid: str | None, expected: float | None) -> None:
    env: dict[str, str] = {}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    elif pid is not None:
        env["WATCHDOG_PID"] = pid
    assert Notifier(env, backend="pure").watchdog_interval_s() == expected


def test_environ_defaults_to_process_environment(
    monkeypatch: pytest.MonkeyPatch, path_receiver: Receiver
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.notify_socket)
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier(backend="pure")
    assert notifier.watchdog_interval_s() == 20.0
    notifier.watchdog()
    assert path_receiver.recv() == "WATCHDOG=1"


def test_auto_uses_pure_sender_for_an_injected_environment(
    monkeypatch: pytest.MonkeyPatch, path_receiver: Receiver
) -> None:
    # libsystemd reads the real environment, so it could not reach an injected socket.
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier({"NOTIFY_SOCKET": path_receiver.notify_socket})
    assert notifier.backend == "pure"
    notifier.ready("auto")
    assert path_receiver.recv() == "READY=1\nSTATUS=auto"


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend"):
        Notifier({}, backend="dbus")  # type: ignore[arg-type]


def test_systemd_python_backend(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    """The optional systemd-python path, or, without it, the fallback that replaces it."""
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.notify_socket)
    if not systemd_python_available():
        with pytest.raises(ImportError, match="systemd-python"):
            Notifier(backend="systemd")
        auto = Notifier()
        assert auto.backend == "pure"
        auto.ready("fallback")
        assert receiver.recv() == "READY=1\nSTATUS=fallback"
        return
    assert Notifier().backend == "systemd"
    notifier = Notifier(backend="systemd")
    assert notifier.backend == "systemd"
    notifier.ready("via libsystemd")
    assert receiver.recv() == "READY=1\nSTATUS=via libsystemd"
    notifier.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
    notifier.reloading()
    assert receiver.recv().startswith("RELOADING=1\nMONOTONIC_USEC=")
    notifier.stopping()
    assert receiver.recv() == "STOPPING=1"


def test_systemd_python_backend_failure_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whichever backend auto picks, a dead socket is logged at DEBUG and swallowed."""
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        monkeypatch.setenv("NOTIFY_SOCKET", str(Path(tmp) / "gone"))
        notifier = Notifier()
        with caplog.at_level(logging.DEBUG, logger="tsyncd.sdnotify"):
            notifier.ready()
    assert any("failed" in r.getMessage() for r in caplog.records)


def test_auto_outside_systemd_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $NOTIFY_SOCKET: the no-op notifier must not map libsystemd (memory, for nothing)."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    loaded: list[str] = []
    monkeypatch.setattr("tsyncd.sdnotify.importlib.import_module", lambda name: loaded.append(name))
    notifier = Notifier()
    assert notifier.backend == "pure"
    assert not notifier.enabled
    notifier.ready("nobody listens")  # and a no-op
    assert loaded == []
