"""The daemon's log lines for kiss-o'-death packets from its sources (RFC 5905 §7.4).

chronyd logs ``Received KoD RATE from ADDRESS`` at WARNING for every RATE; a server that keeps
kissing would fill the log with one line per poll, so here a source's RATEs are logged at most
once per ``RATE_LOG_INTERVAL_NS``, the line counting those left out since the last one.  A DENY
or RSTR stops polling the source (``tsyncd.sync.association``), so it comes once per stop and
is always logged, with what restarts it: the operator can act on both (WARNING, STYLE.md §9).
A broadcast listener's kisses answer its calibration requests (``tsyncd.sync.broadcast``) and
end them, so they come at most once per time the server is heard anew; they are logged the
same way, saying so (QA s19: they were not logged at all).  The association says what a kiss
did (``kiss_effect``); the wording around it, and the rate limit, are the same for all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from tsyncd.sync.association import NtpAssociation

log = logging.getLogger("tsyncd.daemon")

RATE_LOG_INTERVAL_NS: Final = 600 * 1_000_000_000  # a RATE line per source per 10 minutes


@dataclass(slots=True)
class KissLog:
    """Which KoDs of which sources have been logged."""

    interval_ns: int = RATE_LOG_INTERVAL_NS
    _rate_logged_ns: dict[str, int] = field(default_factory=dict)  # source -> last RATE line
    _rate_unlogged: dict[str, int] = field(default_factory=dict)  # source -> RATEs left out

    def rate_due(self, name: str, now_ns: int) -> int | None:
        """A RATE from source ``name`` at ``now_ns``: None to leave it out of the log, else
        how many were left out before it (its line says so)."""
        last = self._rate_logged_ns.get(name)
        if last is not None and now_ns - last < self.interval_ns:
            self._rate_unlogged[name] = self._rate_unlogged.get(name, 0) + 1
            return None
        self._rate_logged_ns[name] = now_ns
        return self._rate_unlogged.pop(name, 0)

    def forget(self, name: str) -> None:
        """Source ``name`` is gone; one of that name later starts afresh."""
        self._rate_logged_ns.pop(name, None)
        self._rate_unlogged.pop(name, None)

    def handle_reply(
        self, name: str, association: NtpAssociation, kisses_before: int, now_ns: int
    ) -> None:
        """Log the KoD, if any, the reply just handled by ``association`` was (its
        ``stats.kisses`` was ``kisses_before``), with what it did (``kiss_effect``: a unicast
        source stops or slows its polls, a broadcast listener its calibration requests)."""
        if association.stats.kisses == kisses_before:
            return
        code = association.stats.kiss_code
        effect = association.kiss_effect
        if effect is None:
            return
        more = ""
        if code == "RATE":
            unlogged = self.rate_due(name, now_ns)
            if unlogged is None:
                return
            more = f" ({unlogged} more RATE since the last such message)" if unlogged else ""
        log.warning(
            "%s: server sent kiss-o'-death %s%s: %s%s",
            name,
            code,
            " (access denied)" if code in ("DENY", "RSTR") else "",
            effect,
            more,
        )
