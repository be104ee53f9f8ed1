"""chronyc's run-time commands that act on the selection and the server as a whole.

``tsyncctl reselect``, ``reset sources``, ``local``, ``accheck``, ``allow``, ``deny`` and
``shutdown`` (methods ``reselect``, ``reset_sources``, ``local``, ``accheck``, ``allow``,
``deny``, ``shutdown``): each does what its chronyc namesake does, on the sync core or the
running servers, and answers with the state right after.  None of them writes the config
file: what they change lasts until a restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from tsyncd.config_fields import NETWORK, HostName, parse_network, without_zone
from tsyncd.control.rpc import InvalidParams
from tsyncd.net.udp import listen_text, receives_from
from tsyncd.servers.responder import AccessList, client_ip

if TYPE_CHECKING:
    from tsyncd.clock.base import Clock
    from tsyncd.config import Config, ServerConfig
    from tsyncd.servers.ntp import NtpServer
    from tsyncd.servers.nts import NtsServerSide
    from tsyncd.servers.ntske import NtsKeServer
    from tsyncd.servers.workers import WorkerPool
    from tsyncd.sync.core import SyncCore

log = logging.getLogger(__name__)

__all__ = ["ChronycCommands"]

UNREACHABLE: Final = "unreachable"  # accheck: the socket never receives from that family


class ChronycCommands:
    """The ``reselect``, ``reset_sources``, ``local``, ``accheck``, ``allow``, ``deny`` and
    ``shutdown`` methods."""

    core: SyncCore
    clock: Clock
    config: Config
    servers: list[NtpServer | WorkerPool]  # one per config.servers entry, in order
    nts: NtsServerSide | None  # its NTS-KE listeners take allow and deny too

    if TYPE_CHECKING:  # the daemon's own; declared for the type checker only

        def _after_update(self) -> None: ...

        def stop(self) -> None: ...

        async def refresh_snapshots(self, client_keys: bool = True) -> None: ...

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

        The servers' running rules (the config's allow and deny lists, as ``tsyncctl
        allow``/``deny`` changed them; a reload changes them only after a restart), checked as
        the server checks a new client, IPv4-mapped IPv6 as IPv4.  A socket that never receives
        from the address's family (an IPv4 one from IPv6, an IPv6-only one from IPv4) is not
        asked: its row says ``"reason": "unreachable"``."""
        address = params.get("address")
        if isinstance(address, str) and "%" in address:  # client_ip would drop the zone
            raise InvalidParams(f"accheck: address {address!r}: expected {without_zone(address)}")
        try:
            ip = client_ip(address) if isinstance(address, str) else None
        except ValueError:
            ip = None
        if ip is None:
            raise InvalidParams(f'accheck needs {{"address": IP}}, an IP address, not {address!r}')
        rows = []
        for server, access in self._server_access():
            if receives_from(server.listen.host, server.ipv6_only, ip):
                verdict = access.verdict(ip)
            else:
                verdict = UNREACHABLE
            rows.append(
                {"listen": _listen(server), "allowed": not verdict, "reason": verdict or None}
            )
        return rows

    async def _rpc_allow(self, params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl allow [all] [SUBNET]``: as chronyc allow, on every NTP server socket and
        NTS-KE listener."""
        return await self._change_access("allow", params)

    async def _rpc_deny(self, params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl deny [all] [SUBNET]``: as chronyc deny, on every NTP server socket and
        NTS-KE listener."""
        return await self._change_access("deny", params)

    async def _change_access(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Add the rule ``params`` give (``subnet``: an IP address or network as chrony writes
        it, not a host name, absent or null: every address; ``all``: drop the rules inside it
        too) to every ``[[server]]``'s running rules, its worker processes included, and to
        every ``[[nts-ke-server]]``'s own (one without judges each client by the running rules
        of the ``[[server]]`` its NTP will reach, so it has the change too: chronyd has one rule
        set for both), until a restart; answered once every live worker has it, with each
        socket's rules (``servers`` and ``nts_ke_servers``: ``listen``, ``allow``, ``deny``; a
        client no network holds is refused; an NTS-KE listener that runs by its servers' rules
        has a row per server, which ``rules_of`` names, null for its own rules)."""
        subnet, replace_inside = params.get("subnet"), params.get("all", False)
        if not isinstance(replace_inside, bool):
            raise InvalidParams(f"{method}: all {replace_inside!r}: expected true or false")
        try:
            network = None if subnet is None else parse_network(subnet)
        except HostName as exc:  # see HostName: resolving here would stall the event loop
            raise InvalidParams(
                f"{method}: subnet {subnet!r}: expected {NETWORK}; {exc}, which tsyncd does not "
                "resolve (tsyncctl allow and deny do, as chronyc does)"
            ) from None
        except ValueError as exc:
            expected = str(exc) or NETWORK
            raise InvalidParams(f"{method}: subnet {subnet!r}: expected {expected}") from None
        ke_servers = self.nts.ke_servers if self.nts is not None else []
        if not self.servers and not ke_servers:
            raise InvalidParams(
                f"{method}: no NTP server ([[server]]) nor NTS-KE server ([[nts-ke-server]]) "
                "is running"
            )
        allowed = method == "allow"
        for server in self.servers:
            server.set_access(
                server.access.with_rule(network, allowed, replace_inside=replace_inside)
            )
        for ke in ke_servers:  # checked per connection: nothing cached to judge again
            if isinstance(ke.access, AccessList):  # else it reads the servers' rules changed
                ke.access = ke.access.with_rule(network, allowed, replace_inside=replace_inside)
        await self.refresh_snapshots(client_keys=False)  # the workers apply it in order
        log.info(
            "%s%s %s on every NTP server socket and NTS-KE listener, until a restart",
            method,
            " all" if replace_inside else "",
            network or "every address",
        )
        return {
            "servers": [_rules_row(_listen(cfg), access) for cfg, access in self._server_access()],
            "nts_ke_servers": [row for ke in ke_servers for row in _ke_rows(ke)],
        }

    def _server_access(self) -> list[tuple[ServerConfig, AccessList]]:
        """Each ``[[server]]`` with the rules it runs by (the config's before the servers
        start)."""
        if not self.servers:  # not started (yet)
            return [(cfg, AccessList(cfg.allow, cfg.deny)) for cfg in self.config.servers]
        return [(c, s.access) for c, s in zip(self.config.servers, self.servers, strict=True)]


def _rules_row(listen: str, access: AccessList) -> dict[str, Any]:
    """A listener's running rules as ``allow``/``deny`` answer them."""
    rules = access.rules
    return {
        "listen": listen,
        "allow": [str(n) for n, allowed in rules.items() if allowed],
        "deny": [str(n) for n, allowed in rules.items() if not allowed],
    }


def _ke_rows(ke: NtsKeServer) -> list[dict[str, Any]]:
    """An NTS-KE listener's rules as ``allow``/``deny`` answer them: one row for its own, or
    one per ``[[server]]`` whose rules it judges clients by (``rules_of``: that server)."""
    if isinstance(ke.access, AccessList):
        return [{**_rules_row(ke.listen, ke.access), "rules_of": None}]
    return [
        {**_rules_row(ke.listen, access), "rules_of": listen}
        for listen, access in ke.access.followed()
    ]


def _listen(server: ServerConfig) -> str:
    return listen_text(server.listen.host, server.listen.port)
