"""The daemon's log lines for kiss-o'-death packets from its sources (RFC 5905 §7.4).

chronyd logs ``Received KoD RATE from ADDRESS`` at WARNING for every RATE; a server that keeps
kissing would fill the log with one line per poll, so here a source's RATEs are logged at most
once per ``RATE_LOG_INTERVAL_NS``, the line counting those left out since the last one.  A DENY
or RSTR stops polling the source (``tsyncd.sync.association``), so it comes once per stop and
is always logged, with what restarts it: the operator can act on both (WARNING, STYLE.md §9).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from tsyncd.sync.association import NtpAssociation, poll_interval_ns

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
        ``stats.kisses`` was ``kisses_before``)."""
        if association.stats.kisses == kisses_before:
            return
        code = association.stats.kiss_code
        if association.stopped:
            log.warning(
                "%s: server sent kiss-o'-death %s (access denied): not polling it until "
                "tsyncctl online or burst",
                name,
                code,
            )
        elif code == "RATE":
            unlogged = self.rate_due(name, now_ns)
            if unlogged is None:
                return
            wait_s = poll_interval_ns(association.poll) * (1 + association.rate_backoff_polls) / 1e9
            log.warning(
                "%s: server sent kiss-o'-death RATE: polling less often (poll %d, next "
                "request in %.0f s)%s",
                name,
                association.poll,
                wait_s,
                f" ({unlogged} more RATE since the last such message)" if unlogged else "",
            )
