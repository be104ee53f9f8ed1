"""Source settings changed while the daemon runs: chronyc's ``minpoll``, ``maxpoll`` and
``maxdelay``.

``tsyncctl minpoll SOURCE N`` (and ``maxpoll``, ``maxdelay``) changes the running associations
that SOURCE selects (the selectors of ``tsyncctl offline``: a name, a configured name, an IP
address or network).  As with chronyc, nothing is written to the config file: the change lasts
until the association is replaced (a pool member), the source reloaded, or tsyncd restarts.
Values are checked by the config file's rules for the same keys.  As chronyd's do, a min-poll
above the source's max-poll raises the max-poll with it, and a max-poll below its min-poll
lowers the min-poll; only both given at once the wrong way round is refused.  Each change is
logged.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from tsyncd.config import parse_source_value
from tsyncd.control.rpc import InvalidParams
from tsyncd.daemon_connectivity import Connectivity

__all__ = ["SourceSettings"]

log = logging.getLogger("tsyncd.daemon")

_NS_PER_S: Final = 1_000_000_000
_KEYS: Final = ("min-poll", "max-poll", "max-delay")


class SourceSettings(Connectivity):
    """The ``set_source`` control method."""

    def _rpc_set_source(self, params: dict[str, Any]) -> dict[str, Any]:
        """Set ``min-poll``, ``max-poll`` and/or ``max-delay`` of the associations
        ``params["sources"]`` selects (all of them, or none if one would be left with
        min-poll > max-poll)."""
        given = {key: params[key] for key in _KEYS if key in params}
        if not given:
            raise InvalidParams(f"set_source needs one of {', '.join(_KEYS)}")
        try:
            values = {key: parse_source_value(key, value) for key, value in given.items()}
        except ValueError as exc:
            raise InvalidParams(f"set_source: {exc}") from None
        names = [n for n in self._selected("set_source", params) if n in self.core.sources]
        limits = {}
        if (
            "min-poll" in values
            and "max-poll" in values
            and values["min-poll"] > values["max-poll"]
        ):
            raise InvalidParams(
                f"set_source: min-poll {values['min-poll']} > max-poll {values['max-poll']}"
            )
        for name in names:
            a = self.core.sources[name].association
            low, high = values.get("min-poll", a.min_poll), values.get("max-poll", a.max_poll)
            if low > high:  # one limit given: the other moves along (chronyd's NCR_Modify*)
                low, high = (low, low) if "min-poll" in values else (high, high)
            limits[name] = (low, high)
        now = self.clock.now_ns()
        for name, (low, high) in limits.items():
            state = self.core.sources[name]
            state.association.set_poll_limits(low, high, now)
            changes = f"min-poll {low}, max-poll {high}"
            if "max-delay" in values:
                state.max_delay_ns = round(values["max-delay"] * _NS_PER_S)
                changes += f", max-delay {values['max-delay']} s"
            log.info("source %s: %s", name, changes)
        if names:
            self._wake.set()  # a nearer next poll
        return {"changed": names}
