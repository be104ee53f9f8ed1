"""The server workers are forked after the start-up tasks took their first step: what those
steps allocate is then in the heap the workers share, not in pages the main process copies
after the fork (bench/README.md, "Server memory")."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from tests.peers import free_udp_port
from tsyncd.clock import make_clock
from tsyncd.config import parse_config
from tsyncd.daemon import Daemon
from tsyncd.servers.workers import WorkerPool


def test_workers_fork_after_the_start_up_tasks_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(
        {
            "clock": {"mode": "measure"},
            "control": {"socket": str(tmp_path / "ctl.sock")},
            "synchronization": {"local-stratum": 10},
            "server": [{"listen": f"127.0.0.1:{free_udp_port()}", "workers": 2}],
        },
        tmp_path / "t.toml",
    )
    daemon = Daemon(config, make_clock("measure"))
    states: list[list[str]] = []

    def start(pool: WorkerPool) -> WorkerPool:  # record instead of forking
        coros = [t.get_coro() for t in daemon._tasks]
        states.append([inspect.getcoroutinestate(c) for c in coros])  # type: ignore[arg-type]
        return pool

    monkeypatch.setattr(WorkerPool, "start", start)

    async def run() -> None:
        try:
            await daemon.start()
        finally:
            await daemon.close()

    asyncio.run(run())
    assert len(states) == 1 and states[0]
    assert inspect.CORO_CREATED not in states[0]
