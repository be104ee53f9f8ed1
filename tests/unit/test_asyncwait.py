"""tsyncd.asyncwait.wait_for: a cancel that arrives as the awaited thing completes is not lost
(CPython gh-86296 in 3.11's asyncio.wait_for; QA s17 hunt-churn F1: a deleted source kept
polling and the reload waiting for it hung)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tsyncd.asyncwait import wait_for


async def _cancel_as_it_completes(
    wait: Callable[[Awaitable[Any], float], Awaitable[Any]],
) -> str:
    """What a task waiting through ``wait`` does when cancelled in the same loop turn as its
    future gets its result."""
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def waiter() -> str:
        await wait(fut, 10.0)
        return "went on after being cancelled"

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the task is waiting now
    fut.set_result(1)
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


def test_a_cancel_as_the_result_arrives_cancels() -> None:
    assert asyncio.run(_cancel_as_it_completes(wait_for)) == "cancelled"


def test_timeouts_and_results() -> None:
    async def main() -> None:
        assert await wait_for(asyncio.sleep(0, "done"), 1.0) == "done"
        with pytest.raises(TimeoutError):
            await wait_for(asyncio.sleep(10), 0.01)

    asyncio.run(main())


def test_the_daemon_never_uses_asyncio_wait_for() -> None:
    """Every wait with a time limit goes through tsyncd.asyncwait (on Python 3.11)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    users = [
        str(p.relative_to(root))
        for d in ("tsyncd", "tsyncctl")
        for p in sorted((root / d).rglob("*.py"))
        if "asyncio.wait_for(" in p.read_text(encoding="utf-8")
    ]
    assert users == []
