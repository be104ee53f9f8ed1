"""When a server given by host name is looked up again, and where it moves; sans-IO.

Theory of operation
-------------------
A ``mode = "server"`` source whose address is a name polls the first address the name resolved
to at start that no other source polls (the daemon gives ``choose`` only those: as chronyd, one
server is never polled twice).  Names move (a server renumbered, a service behind DNS failing
over), so, as chronyd does for sources given by name, the name is resolved again when the server
turns bad by the pool's rules (``pool.bad_reason``: KoD DENY/RSTR, eight polls unanswered, a
falseticker in eight checks in a row), and the source moves to an address the name now gives
other than the one in use.  When DNS still gives only that address the source stays and the
name is asked again later, at intervals doubling from ``resolve_interval_ns`` up to an hour
(``backed_off``, which pools share), so a dead server with a stable name costs little DNS
traffic; the same goes for a source whose every address another source polls (it polls
nothing meanwhile: ``due``).  A good answer from the server resets the interval.

``tsyncctl refresh`` (chronyc's ``refresh``, e.g. after a laptop resumes in another network)
resolves at once, and moves the source only if the name no longer gives the address in use:
a good server is not given up for a DNS reordering.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.pool import backed_off, bad_reason


@dataclass(slots=True)
class NamedServer:
    """The resolve-again state of one server source given by host name."""

    resolve_interval_ns: int  # the shortest time between two resolutions
    moves: int = 0  # addresses changed so far
    _interval_ns: int = 0  # the current wait after a resolution that found nothing new
    _next_ns: int = 0  # no resolution for a bad server before this
    _falseticker_checks: int = 0

    def check(self, association: NtpAssociation, selection_state: str, now_ns: int) -> str | None:
        """Why the name should be resolved again now, or None (call about once a second)."""
        reason, self._falseticker_checks = bad_reason(
            association, selection_state, self._falseticker_checks
        )
        if reason is None:
            if association.reach & 1:  # the latest poll was answered: a good server again
                self._interval_ns = 0
            return None
        return reason if now_ns >= self._next_ns else None

    def due(self, now_ns: int) -> bool:
        """Whether a source that polls nothing (every address of its name was in use, or
        gave no socket) should resolve its name again now."""
        return now_ns >= self._next_ns

    def choose(
        self, current: str, resolved: list[str], now_ns: int, *, refresh: bool = False
    ) -> str | None:
        """The address to move to from ``current`` ("": none) after a resolution, or None to
        stay (and back off).  ``resolved``: the name's addresses the source may poll.  A
        ``refresh`` moves only when ``current`` is no longer among the ``resolved``."""
        if refresh and current in resolved:
            return None  # still the name's: nothing to do, and no reason to wait longer
        others = [ip for ip in resolved if ip != current]
        if others:
            self.moves += 1
            self._falseticker_checks = 0
            self._interval_ns = 0
            self._next_ns = now_ns + self.resolve_interval_ns
            return others[0]
        self.resolution_failed(now_ns)
        return None

    def resolution_failed(self, now_ns: int) -> None:
        """DNS gave nothing new (or nothing): wait longer before asking again."""
        self._interval_ns = backed_off(self._interval_ns, self.resolve_interval_ns)
        self._next_ns = now_ns + self._interval_ns
