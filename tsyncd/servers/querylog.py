"""How many per-query lines a server logs: each query up to a budget, then only a count.

Issue 6 asks the TSQ servers to log each query with its client's address.  Unbounded, a busy
server, or one client on purpose, writes a line per request: 2,000 lines in 1.9 s (QA s22).
So the first ``burst`` queries of each ``window_s`` are logged as they come and the rest are
counted, with one line per window saying how many went unlogged and from how many clients.
chronyd logs no client request at all; ``tsyncctl serverstats`` counts every one.  Sans-IO:
the caller passes the time and logs what ``take`` and ``held`` tell it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

DEFAULT_BURST: Final = 20  # query lines per window
DEFAULT_WINDOW_S: Final = 10.0
_MAX_CLIENTS: Final = 1024  # distinct clients remembered per window (the count says "at least")


@dataclass(frozen=True, slots=True)
class Held:
    """Queries that went unlogged in one window."""

    queries: int
    clients: int  # distinct client addresses among them, at most _MAX_CLIENTS
    window_s: float


@dataclass(slots=True)
class QueryLogBudget:
    """The log-line budget of one server (monotonic seconds in)."""

    burst: int = DEFAULT_BURST
    window_s: float = DEFAULT_WINDOW_S
    _start: float | None = None  # the current window's start
    _logged: int = 0
    _held: int = 0
    _clients: set[str] = field(default_factory=set)

    def take(self, now_s: float, client: str) -> bool:
        """Whether to log this query now; if not, it is counted for ``held``.  Call ``held``
        first: a window that has ended starts a new one here."""
        if self._start is None or now_s >= self._start + self.window_s:
            self._start, self._logged = now_s, 0
        if self._logged < self.burst:
            self._logged += 1
            return True
        self._held += 1
        if len(self._clients) < _MAX_CLIENTS:
            self._clients.add(client)
        return False

    @property
    def window_end(self) -> float | None:
        """When the current window ends (monotonic s); None before the first query."""
        return None if self._start is None else self._start + self.window_s

    def held(self, now_s: float) -> Held | None:
        """The queries left unlogged in a window that has ended by ``now_s`` (once)."""
        if not self._held or self._start is None or now_s < self._start + self.window_s:
            return None
        out = Held(self._held, len(self._clients), self.window_s)
        self._held = 0
        self._clients.clear()
        return out
