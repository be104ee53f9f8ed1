"""Who may run NTS-KE with an ``[[nts-ke-server]]``: its own rules, or those of the NTP server
its clients are sent to, chosen per connection (no IO here: addresses in, rules out).

chronyd has one rule set for NTP and NTS-KE, checked right after accept(): a client gets
NTS-KE exactly when its NTP requests would be answered.  A listener with its own ``allow`` or
``deny`` runs by them.  Without them, it runs by the rules of the ``[[server]]`` that will get
the client's NTP requests.  Without ``ntp-server`` (no Server Negotiation record), a client
sends those to the address its NTS-KE connection reached (RFC 8915 §4.1.7), at the negotiated
port.  So the choice is per connection, from the accepted socket's local address:

* the ``[[server]]`` on that port listening on exactly that address;
* else the one on the wildcard of its family (``0.0.0.0``; ``[::]``, which takes IPv4 too
  unless ``ipv6-only``), as the kernel would deliver the datagrams;
* else none: the client is refused as ``restricted``.  Its NTP requests would reach no socket
  of ours, so cookies are of no use to it, and no rule of ours holds it.  (The config check
  ``config_listen.check_nts_ke_ntp_address`` already refuses a file where a reachable address
  has no server, so this is a guard, not a case an operator meets.)

IPv4-mapped addresses (an IPv4 client on a dual-stack socket) count as IPv4, as the NTP
responder counts its clients (``responder.client_ip``).  The rules are read from the running
servers at each connection, so ``tsyncctl allow``/``deny`` (which change the servers' lists)
reach these listeners at once, and the choice by address keeps a rule change on one server
from leaking to the clients of another (QA s21 hunt-nts F1: taking the first ``[[server]]`` on
the port refused every IPv6 client of a per-family pair, and gave cookies to clients the other
server denied).

With ``ntp-server`` (another host, whose rules are not ours to know), or without any
``[[server]]`` on the port (the cookies are for another process sharing the key file), every
client may connect: an ``AccessList()`` that ``tsyncctl allow``/``deny`` change as their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tsyncd.config import NtsKeServerConfig, ServerConfig
from tsyncd.config_fields import receives_at
from tsyncd.net.udp import dual_stack, listen_text
from tsyncd.servers.responder import RESTRICTED, AccessList, IPAddress, client_ip


class Ruled(Protocol):
    """A running NTP server socket (``NtpServer`` or ``WorkerPool``): its current rules."""

    @property
    def access(self) -> AccessList:
        """The rules it runs by now (the config's, as ``tsyncctl allow``/``deny`` changed them)."""
        ...


@dataclass(frozen=True, slots=True)
class _Target:
    """A ``[[server]]`` an NTS-KE client may be sent to."""

    listen: str  # as logs and control show it: "0.0.0.0:123", "[::]:123"
    ip: IPAddress  # bound address, IPv4-mapped as IPv4
    dual_stack: bool
    server: Ruled


class ServerRules:
    """The rules of the ``[[server]]`` a client's NTP requests will reach, per connection."""

    def __init__(self, targets: Sequence[_Target]) -> None:
        self._targets = tuple(targets)  # config order
        # Exact addresses before wildcards: the kernel delivers to the most specific socket.
        self._by_precedence = sorted(self._targets, key=lambda t: t.ip.is_unspecified)

    def serving(self, local: IPAddress) -> _Target | None:
        """The server that gets what a client sends to ``local`` (IPv4-mapped as IPv4)."""
        return next(
            (t for t in self._by_precedence if receives_at(t.ip, t.dual_stack, local)), None
        )

    def verdict(self, client: IPAddress, local: IPAddress | None) -> str:
        """ "" if ``client``, which reached us on ``local`` (both IPv4-mapped as IPv4), may
        run NTS-KE, else the reason (``denied``, ``restricted``) its NTP requests would be
        refused with; ``restricted`` too when no server would get them (or the local address
        is not known)."""
        target = self.serving(local) if local is not None else None
        return RESTRICTED if target is None else target.server.access.verdict(client)

    def followed(self) -> list[tuple[str, AccessList]]:
        """(listen, running rules) of each server whose rules some client may be judged by,
        in config order (``tsyncctl allow``/``deny`` answer with them)."""
        return [(t.listen, t.server.access) for t in self._targets]


def ke_access(
    cfg: NtsKeServerConfig, servers: Sequence[ServerConfig], running: Sequence[Ruled]
) -> AccessList | ServerRules:
    """Who may run NTS-KE with the listener ``cfg``: its own ``allow``/``deny`` when it has
    them; else, without ``ntp-server``, the running rules (``running``: one per ``servers``
    entry) of the ``[[server]]`` on the negotiated port that a client will send NTP to,
    chosen per connection (``ServerRules``); else every client (see the module's docstring)."""
    if cfg.allow is not None and cfg.deny is not None:
        return AccessList(cfg.allow, cfg.deny)
    port = negotiated_port(cfg, servers)
    on_port = [(c, r) for c, r in zip(servers, running, strict=True) if c.listen.port == port]
    if cfg.ntp_server is not None or not on_port:
        return AccessList()
    ke_ip = client_ip(cfg.listen.host)
    ke_dual = dual_stack(cfg.listen.host)  # as net/tcp.py binds it
    targets = []
    for server, ruled in on_port:
        ip = client_ip(server.listen.host)
        dual = dual_stack(server.listen.host, server.ipv6_only)
        # Some address the listener is reached on lands on this server's socket.
        if receives_at(ip, dual, ke_ip) or receives_at(ke_ip, ke_dual, ip):
            listen = listen_text(server.listen.host, server.listen.port)
            targets.append(_Target(listen, ip, dual, ruled))
    return ServerRules(targets)


def negotiated_port(cfg: NtsKeServerConfig, servers: Sequence[ServerConfig]) -> int | None:
    """The NTP port sent to the listener's clients: ``ntp-port``, else the first
    ``[[server]]``'s port; None (no Port Negotiation record: 123) without either."""
    if cfg.ntp_port is not None:
        return cfg.ntp_port
    return servers[0].listen.port if servers else None
