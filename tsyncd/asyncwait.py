"""``wait_for``: asyncio's, without the cancellation Python 3.11 can lose.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives while the awaited
thing completes (CPython gh-86296, fixed in 3.12): it returns the result, and the cancelled task
goes on.  A source task cancelled by ``tsyncctl delete`` or a reload just as its DNS answer came
in kept polling, and the reload waiting for it never finished (QA s17 hunt-churn F1).
``asyncio.timeout()`` (3.11+) tells its own timeout from a cancel from outside and lets the
latter through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")

__all__ = ["wait_for"]


async def wait_for(aw: Awaitable[_T], timeout_s: float | None) -> _T:
    """Await ``aw`` for at most ``timeout_s`` (None: no limit); ``TimeoutError`` after that."""
    async with asyncio.timeout(timeout_s):
        return await aw
