"""The event loop tsyncd runs on, and the one it runs on inside a clock-and-network simulator.

Normally this is asyncio's default loop.  A simulator such as clknetsim, loaded with LD_PRELOAD,
swaps the C library's clock, socket, ``select()`` and ``poll()`` calls for simulated ones and
advances simulated time only inside ``select()``/``poll()`` (chronyd and ntpd run unmodified
that way).  asyncio's default loop breaks three of its assumptions:

* it waits in ``epoll_wait``, which the simulator does not wrap: the process would sleep in
  real time while simulated time stood still;
* it registers a self-pipe (a ``socketpair``) for wake-ups; the simulator reports descriptors it
  does not know as always readable and then refuses to read them;
* it delivers signals through that self-pipe.

``SimulatorEventLoop`` waits in ``poll()``, registers nothing but our own sockets, and lets a
signal end the current ``poll()`` by raising out of it (only while inside it, so no other code
is interrupted).  Without a self-pipe another thread (the resolver's ``getaddrinfo``) cannot
wake the loop, so one ``poll()`` lasts at most ``_MAX_WAIT_S``.

It is chosen when ``CLKNETSIM_NODE`` is set (every clknetsim client has it) or when
``TSYNCD_EVENT_LOOP=poll``; tests use the latter on the real clock.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Final, TypeVarTuple

_Ts = TypeVarTuple("_Ts")

_MAX_WAIT_S: Final = 1.0
EVENT_LOOP_ENV: Final = "TSYNCD_EVENT_LOOP"


def simulator_runtime(environ: Mapping[str, str] = os.environ) -> bool:
    """True when tsyncd should run on ``SimulatorEventLoop``."""
    return "CLKNETSIM_NODE" in environ or environ.get(EVENT_LOOP_ENV) == "poll"


class _SignalWakeup(Exception):
    """Raised by a signal handler to end the ``poll()`` it interrupted."""


class _WakeablePollSelector(selectors.PollSelector):
    """``poll()`` that a signal can end early, never called with nothing to wait for."""

    def __init__(self) -> None:
        super().__init__()
        self.in_poll = False

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout > _MAX_WAIT_S:
            timeout = _MAX_WAIT_S
        if timeout <= 0 and not self.get_map():
            # Nothing could be ready; clknetsim's select() aborts on a zero wait with no sockets.
            return []
        self.in_poll = True
        try:
            return super().select(timeout)
        except _SignalWakeup:
            return []
        finally:
            self.in_poll = False


class SimulatorEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on ``poll()`` with no self-pipe (see the module docstring)."""

    def __init__(self) -> None:
        self._wakeable = _WakeablePollSelector()
        self._handled_signals: set[int] = set()
        super().__init__(self._wakeable)

    def _make_self_pipe(self) -> None:
        self._ssock = None
        self._csock = None

    def _close_self_pipe(self) -> None:
        pass

    def add_signal_handler(self, sig: int, callback: Callable[[*_Ts], Any], *args: *_Ts) -> None:
        """Run ``callback(*args)`` on the loop soon after ``sig`` arrives."""

        def handler(_signum: int, _frame: FrameType | None) -> None:
            self.call_soon(callback, *args)
            if self._wakeable.in_poll:
                raise _SignalWakeup

        signal.signal(sig, handler)
        self._handled_signals.add(sig)

    def remove_signal_handler(self, sig: int) -> bool:
        """Restore the default action for ``sig``; False if we were not handling it."""
        if sig not in self._handled_signals:
            return False
        self._handled_signals.discard(sig)
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        return True

    def close(self) -> None:
        for sig in list(self._handled_signals):
            self.remove_signal_handler(sig)
        super().close()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.Runner`` should build the loop with (None: asyncio's default)."""
    return SimulatorEventLoop if simulator_runtime() else None
