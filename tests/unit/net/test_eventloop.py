"""SimulatorEventLoop: poll() only, no self-pipe, signals still stop it at once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time

from tsyncd.net.eventloop import SimulatorEventLoop, _WakeablePollSelector, simulator_runtime


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_runtime_is_chosen_by_clknetsim_or_by_request() -> None:
    assert simulator_runtime({"CLKNETSIM_NODE": "2"})
    assert simulator_runtime({"TSYNCD_EVENT_LOOP": "poll"})
    assert not simulator_runtime({"TSYNCD_EVENT_LOOP": "epoll"})
    assert not simulator_runtime({})


def test_the_loop_opens_no_descriptor_of_its_own() -> None:
    before = _open_fds()
    loop = SimulatorEventLoop()
    try:
        # asyncio's default loop would hold a socketpair and an epoll descriptor here.
        assert _open_fds() - before == set()
        assert loop.run_until_complete(asyncio.sleep(0.01, result="slept")) == "slept"
    finally:
        loop.close()


def test_zero_wait_with_nothing_registered_does_not_poll() -> None:
    selector = _WakeablePollSelector()
    started = time.monotonic()
    assert selector.select(0) == []
    assert selector.select(-1) == []
    assert time.monotonic() - started < 0.5
    selector.close()


def test_datagrams_are_delivered() -> None:
    loop = SimulatorEventLoop()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        got: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(rx.fileno(), lambda: got.done() or got.set_result(rx.recv(64)))
        loop.call_later(0.05, tx.sendto, b"ping", rx.getsockname())
        assert loop.run_until_complete(asyncio.wait_for(got, 5)) == b"ping"
    finally:
        loop.remove_reader(rx.fileno())
        rx.close()
        tx.close()
        loop.close()


def test_a_signal_ends_the_wait_at_once() -> None:
    loop = SimulatorEventLoop()
    stopped: asyncio.Future[str] = loop.create_future()
    try:
        loop.add_signal_handler(signal.SIGUSR1, stopped.set_result, "stopped")
        loop.call_later(30, stopped.cancel)  # the only other wake-up would be far away
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        assert loop.run_until_complete(stopped) == "stopped"
        # Without the wake-up the loop would sit in poll() until its one-second cap.
        assert time.monotonic() - started < 0.9
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
        assert loop.remove_signal_handler(signal.SIGUSR1) is False
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    finally:
        loop.close()


def test_other_threads_are_heard_within_the_cap() -> None:
    loop = SimulatorEventLoop()
    try:
        answer = loop.run_until_complete(
            asyncio.wait_for(loop.run_in_executor(None, lambda: "from a thread"), 5)
        )
        assert answer == "from a thread"
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
