"""A pool bound without forking (the daemon forks its workers last, for memory): the socket
holds what comes meanwhile, ``start`` builds a worker's parts once (``worker.warm_up``, for
memory too), forks the workers once, and they answer it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest

from tsyncd.clock.measure import MeasureClock
from tsyncd.config import Endpoint, load_config
from tsyncd.net.sockets import libc
from tsyncd.servers import worker as worker_mod
from tsyncd.servers import workers as workers_mod
from tsyncd.servers.responder import AccessList, ResponseTemplate, ServerPolicy
from tsyncd.servers.workers import WorkerPool, start_server
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp


def _conf(tmp_path: Path) -> Path:
    conf = tmp_path / "tsyncd.toml"
    conf.write_text('[[server]]\nlisten = "127.0.0.1:1123"\nworkers = 2\n')
    return conf


def test_requests_before_the_fork_are_answered_after_it(tmp_path: Path) -> None:
    # Bound to a free port instead, which the config file cannot ask for (port 0).
    server = dataclasses.replace(
        load_config(_conf(tmp_path)).servers[0], listen=Endpoint("127.0.0.1", 0)
    )

    async def scenario() -> None:
        pool = start_server(server, MeasureClock(), ResponseTemplate(stratum=10), fork=False)
        assert isinstance(pool, WorkerPool)
        try:
            assert pool.pids == []  # bound, not forked
            port = int(pool.listen.rsplit(":", 1)[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                request = encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=0x1234_5678_9ABC))
                client.sendto(request, ("127.0.0.1", port))  # waits in the worker's socket
                pool.start()
                pids = pool.pids
                assert len(pids) == 2
                pool.start()  # once only
                assert pool.pids == pids
                reply = decode_ntp(await asyncio.to_thread(client.recv, 512))
            assert reply.mode == Mode.SERVER
            assert reply.stratum == 10
            assert reply.origin_ts == 0x1234_5678_9ABC
        finally:
            pool.close()

    asyncio.run(scenario())


def test_the_workers_parts_are_built_once_before_the_first_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``worker.warm_up`` runs in the main process before any fork (so what it leaves is
    shared by every worker), once: not again for a restart."""
    server = dataclasses.replace(
        load_config(_conf(tmp_path)).servers[0], listen=Endpoint("127.0.0.1", 0)
    )
    events: list[str] = []
    monkeypatch.setattr(worker_mod, "warm_up", lambda sock, setup: events.append("warm"))
    monkeypatch.setattr(
        WorkerPool, "_fork", lambda self, w, *ends: events.append(f"fork {w.index}")
    )

    async def scenario() -> None:
        pool = start_server(server, MeasureClock(), ResponseTemplate(stratum=10), fork=False)
        assert isinstance(pool, WorkerPool)
        try:
            pool.start()
            pool.start()
        finally:
            pool.close()

    asyncio.run(scenario())
    assert events == ["warm", "fork 0", "fork 1"]


def test_warming_up_leaves_the_socket_as_it_was() -> None:
    """The parts built before the fork receive nothing and change nothing on the socket."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        client.sendto(b"x" * 48, sock.getsockname())
        setup = worker_mod.WorkerSetup(
            0, AccessList(), ServerPolicy(), ResponseTemplate(), worker_mod.ClockMap(0, 0, 0)
        )
        worker_mod.warm_up(sock, setup)
        assert not sock.getblocking()
        # The C functions a worker calls are looked up once, on the one shared handle.
        assert {"prctl", "recvmmsg", "sendmmsg", "sendmsg"} <= vars(libc()).keys()
        sock.settimeout(5)
        assert sock.recv(512) == b"x" * 48


def test_every_pipe_is_made_before_the_first_fork_and_watched_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two forks the main process allocates nothing of its own (pipes, loop readers):
    each page it writes there is one the worker forked first copies."""
    server = dataclasses.replace(
        load_config(_conf(tmp_path)).servers[0], listen=Endpoint("127.0.0.1", 0)
    )
    events: list[str] = []
    real_pipe = workers_mod.pipe

    def recorded_pipe() -> Any:
        events.append("pipe")
        return real_pipe()

    def fork(self: WorkerPool, w: Any, ends: Any = None, spare: Any = ()) -> None:
        events.append(f"fork {w.index} holding {len(spare)} spare ends")
        for end in ends:
            end.close()

    monkeypatch.setattr(worker_mod, "warm_up", lambda sock, setup: None)
    monkeypatch.setattr(workers_mod, "pipe", recorded_pipe)
    monkeypatch.setattr(WorkerPool, "_fork", fork)
    monkeypatch.setattr(WorkerPool, "_watch", lambda self, w: events.append(f"watch {w.index}"))

    async def scenario() -> None:
        pool = start_server(server, MeasureClock(), ResponseTemplate(stratum=10), fork=False)
        assert isinstance(pool, WorkerPool)
        try:
            pool.start()
        finally:
            pool.close()

    asyncio.run(scenario())
    assert events == [
        "pipe",
        "pipe",
        "fork 0 holding 2 spare ends",  # worker 1's, which worker 0 closes
        "fork 1 holding 0 spare ends",
        "watch 0",
        "watch 1",
    ]
