"""chronyc's run-time commands that act on the selection and the server as a whole.

``tsyncctl reselect``, ``reset sources``, ``local``, ``accheck`` and ``shutdown`` (methods
``reselect``, ``reset_sources``, ``local``, ``accheck``, ``shutdown``): each does what its chronyc
namesake does, on the sync core or the running servers, and answers with the state right after.
None of them writes the config file.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from tsyncd.control.rpc import InvalidParams
from tsyncd.net.udp import listen_text, receives_from
from tsyncd.servers.responder import AccessList, client_ip

if TYPE_CHECKING:
    from tsyncd.clock.base import Clock
    from tsyncd.config import Config
    from tsyncd.sync.core import SyncCore

__all__ = ["ChronycCommands"]

UNREACHABLE: Final = "unreachable"  # accheck: the socket never receives from that family


class ChronycCommands:
    """The ``reselect``, ``reset_sources``, ``local``, ``accheck`` and ``shutdown`` methods."""

    core: SyncCore
    clock: Clock
    config: Config

    if TYPE_CHECKING:  # the daemon's own; declared for the type checker only

        def _after_update(self) -> None: ...

        def stop(self) -> None: ...

    def _rpc_reselect(self, _params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl reselect``: pick the system peer afresh, as chronyc reselect does."""
        previous = self.core.decision.selected
        self.core.reselect(self.clock.now_ns())
        self._after_update()
        return {"selected": self.core.decision.selected, "previous": previous}

    def _rpc_shutdown(self, _params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl shutdown``: stop as SIGTERM does (drift, NTS sessions saved), after
        this answer has gone out."""
        asyncio.get_running_loop().call_soon(self.stop)
        return {"stopping": True}

    def _rpc_local(self, params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl local [--stratum N] | local off``: serve the local clock while
        unsynchronized, at ``params["stratum"]`` (None: off), until a restart or another
        ``local`` (the config file is not changed, as with chronyc)."""
        if "stratum" not in params:
            raise InvalidParams('local needs {"stratum": N}, N 1..15, or null to stop')
        stratum = params["stratum"]
        if stratum is not None and (type(stratum) is not int or not 1 <= stratum <= 15):
            raise InvalidParams(f"local: stratum {stratum!r}: expected an integer 1..15 or null")
        self.core.set_local_stratum(stratum, self.clock.now_ns())
        self._after_update()
        d = self.core.decision
        return {"local_stratum": stratum, "stratum": d.stratum, "synchronized": d.synchronized}

    def _rpc_reset_sources(self, _params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl reset sources``: drop every measurement, as chronyc reset sources does;
        answered with the state right after (no samples, not synchronized)."""
        self.core.reset_sources(self.clock.now_ns())
        self._after_update()
        return {
            "sources": len(self.core.sources),
            "samples": sum(len(state.filter) for state in self.core.sources.values()),
            "synchronized": self.core.decision.synchronized,
        }

    def _rpc_accheck(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """``tsyncctl accheck``: would each NTP server socket answer ``params["address"]``?

        The servers' running allow and deny lists (a reload changes them only after a restart),
        checked as the server checks a request, IPv4-mapped IPv6 included.  A socket that
        never receives from the address's family (an IPv4 one from IPv6, an IPv6-only one
        from IPv4) is not asked: its row says ``"reason": "unreachable"``."""
        address = params.get("address")
        try:
            ip = client_ip(address) if isinstance(address, str) else None
        except ValueError:
            ip = None
        if ip is None:
            raise InvalidParams(f'accheck needs {{"address": IP}}, an IP address, not {address!r}')
        rows = []
        for server in self.config.servers:
            if receives_from(server.listen.host, server.ipv6_only, ip):
                verdict = AccessList(server.allow, server.deny).verdict(ip)
            else:
                verdict = UNREACHABLE
            listen = listen_text(server.listen.host, server.listen.port)
            rows.append({"listen": listen, "allowed": not verdict, "reason": verdict or None})
        return rows
