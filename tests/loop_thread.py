"""An asyncio event loop in a background thread, for tests whose client side blocks.

The servers under test (the control socket, the metrics exporter) are asyncio, while the clients
the tests drive (tsyncctl's ControlClient, urllib, raw sockets) block.  Running the server's loop
in a daemon thread lets the test thread be the client while the server keeps answering.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class AsyncServer(Protocol):
    """What ``serving`` needs: a server started and closed by coroutines."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=AsyncServer)


class LoopThread:
    """An asyncio loop running in a daemon thread, until ``stop``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        """Run ``coro`` on the loop and wait for its result (a hung server fails the test)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@contextmanager
def serving(server: S) -> Iterator[S]:
    """Start ``server`` on a loop of its own; close it and stop that loop on the way out."""
    lt = LoopThread()
    try:
        lt.run(server.start())
        try:
            yield server
        finally:
            lt.run(server.close())
    finally:
        lt.stop()
