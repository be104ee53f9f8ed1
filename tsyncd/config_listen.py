"""Cross-field checks of what tsyncd listens on (``config.py``'s step 2).

Two listeners of one protocol cannot share a port where their addresses overlap: the second
bind fails at start with "address in use" (none of tsyncd's listening sockets shares a port
with another, except a server's with its symmetric peers').  They overlap when they are the
same address (``[::]`` and ``[0:0::0]`` too), when one is the wildcard of the other's family
(``0.0.0.0`` holds the port on every IPv4 address, ``[::]`` on every IPv6 one), and when one
is a dual-stack ``[::]`` and the other IPv4.  The protocols are UDP (``[[server]]``,
``[[tsq-server]]``) and TCP (``[[nts-ke-server]]``, ``[metrics]``).  Which ``[::]`` is
dual-stack: a ``[[server]]``'s unless ``ipv6-only = true`` (``net/udp.py``), a TSQ server's
always (aioquic's socket keeps Linux's default, ``net.ipv6.bindv6only = 0``), and a TCP one's
always (``net/tcp.py`` binds it as ``net/udp.py`` does).

Also here: ``ipv6-only`` only on an IPv6 ``listen``, and an ``[[nts-ke-server]]`` must hand
out cookies some process can open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final

from tsyncd.config_fields import MISSING, Endpoint, _toml_repr, receives_at

Report = Callable[[str, object, str], None]  # (key path, value, expected)
# Per section name: (key path of the table, raw table as written, its dataclass).
Parsed = Mapping[str, Sequence[tuple[str, Mapping[str, object], Any]]]

# The sections whose listen addresses share one port space, by protocol.
_PROTOCOLS: Final = (("server", "tsq-server"), ("nts-ke-server", "metrics"))
_SAME: Final = "an address no other server listens on"


@dataclass(frozen=True, slots=True)
class _Listener:
    table: str  # "server[1]", "metrics"
    section: str  # "server", "metrics"
    written: str  # the listen address as written, or the default's text
    ip: IPv4Address | IPv6Address
    port: int
    dual_stack: bool  # the IPv6 wildcard taking IPv4 too

    @property
    def key(self) -> str:
        return f"{self.table}.listen"

    @property
    def wildcard(self) -> bool:
        return self.ip.is_unspecified

    def shown(self) -> str:
        return f"{self.key} = {_toml_repr(self.written)}"


def _dual_stack(section: str, table: Any) -> bool:
    """Whether ``table``'s socket, bound to the IPv6 wildcard, takes IPv4 too."""
    if section == "server":
        return table.ipv6_only is not True
    return True  # TSQ (aioquic's default) and the TCP listeners (net/tcp.py)


def _listeners(parsed: Parsed, sections: Sequence[str], invalid: set[str]) -> Iterator[_Listener]:
    """The listeners of ``sections``, in file order per section; a ``listen`` step 1 found
    wrong is left out (its dataclass holds the default instead)."""
    for section in sections:
        for where, raw, table in parsed.get(section, ()):
            listen: Endpoint | None = table.listen
            if listen is None or f"{where}.listen" in invalid:
                continue  # [metrics] without listen: no exporter
            ip = ip_address(listen.host)
            dual = isinstance(ip, IPv6Address) and ip.is_unspecified and _dual_stack(section, table)
            written = raw.get("listen", str(listen))
            yield _Listener(where, section, str(written), ip, listen.port, dual)


def _overlap(new: _Listener, old: _Listener) -> str | None:
    """Why ``new`` cannot bind beside ``old`` (bound first), or None if it can."""
    if new.port != old.port:
        return None
    if new.ip == old.ip:
        return f"{_SAME} (same as {old.key})"
    port = f"port {new.port}"
    if new.ip.version == old.ip.version and (new.wildcard or old.wildcard):
        family = f"every IPv{new.ip.version} address"
        if old.wildcard:
            return f"{_SAME} ({old.shown()} takes {port} on {family}, this one too)"
        return f"{_SAME} (this takes {port} on {family}, {old.shown()} too)"
    if new.ip.version == 4 and old.dual_stack:
        hint = f": set ipv6-only = true in {old.table}" if old.section == "server" else ""
        return (
            f"{_SAME} ({old.shown()} is dual-stack and takes {port} on every IPv4 address "
            f"too, this one too{hint})"
        )
    if old.ip.version == 4 and new.dual_stack:
        hint = ": set ipv6-only = true here" if new.section == "server" else ""
        return (
            f"{_SAME} (this is dual-stack and takes {port} on every IPv4 address too, "
            f"{old.shown()} too{hint})"
        )
    return None


def check_listeners(parsed: Parsed, report: Report, invalid: set[str]) -> None:
    """No two listeners of one protocol overlap on a port; ``ipv6-only`` only where it means
    something.  ``invalid``: key paths step 1 found wrong."""
    for sections in _PROTOCOLS:
        bound: list[_Listener] = []
        for listener in _listeners(parsed, sections, invalid):
            why = next(filter(None, (_overlap(listener, old) for old in bound)), None)
            if why is None:
                bound.append(listener)
            else:
                report(listener.key, listener.written, why)
    for where, raw, server in parsed.get("server", ()):
        if "ipv6-only" in raw and ip_address(server.listen.host).version == 4:
            report(
                f"{where}.ipv6-only",
                raw["ipv6-only"],
                "no ipv6-only unless listen is an IPv6 address (it sets IPV6_V6ONLY)",
            )


def check_nts_ke_cookies(data: Mapping[str, object], parsed: Parsed, report: Report) -> None:
    """An ``[[nts-ke-server]]`` hands out cookies for an NTP server that can open them: a
    ``[[server]]`` here, the ``ntp-server`` it names, or any process sharing the key file.
    With none of them (or a random in-memory key), no process ever can."""
    keyset = data.get("keyset")
    if data.get("server") or (keyset is not None and not isinstance(keyset, Mapping)):
        return  # a server table (a wrong one is reported already), or a [keyset] to fix first
    if isinstance(keyset, Mapping) and "key-storage-path" in keyset:
        return
    for where, raw, _ in parsed.get("nts-ke-server", ()):
        if "ntp-server" not in raw:
            report(
                f"{where}.ntp-server",
                MISSING,
                "a [[server]] in this process, an ntp-server, or a shared [keyset] "
                "key-storage-path (no process could open the cookies it hands out)",
            )


def check_nts_ke_ntp_address(parsed: Parsed, report: Report, invalid: set[str]) -> None:
    """Without ``ntp-server`` an NTS-KE client sends its NTP requests to the address it
    reached NTS-KE on, at ``ntp-port`` (default: the first ``[[server]]``'s port): some
    ``[[server]]`` of this file must listen there, or every client gets cookies for an address
    that answers nothing (QA s18 hunt-nts-server F4: a typo in ``ntp-port``, or NTS-KE on
    ``[::]`` beside a server on one LAN address).  Files without a ``[[server]]`` are
    ``check_nts_ke_cookies``' case."""
    servers = list(_listeners(parsed, ("server",), invalid))
    if not servers or "server[0].listen" in invalid:
        return
    first_port = servers[0].port
    kes = {ke.table: ke for ke in _listeners(parsed, ("nts-ke-server",), invalid)}
    for where, raw, table in parsed.get("nts-ke-server", ()):
        ke = kes.get(where)
        if ke is None or "ntp-server" in raw or f"{where}.ntp-port" in invalid:
            continue
        port = table.ntp_port if table.ntp_port is not None else first_port
        on_port = [s for s in servers if s.port == port]
        if all(_serves(on_port, ip) for ip in _reached(ke)):
            continue
        at = f"every address {ke.shown()} takes" if ke.wildcard else f"{ke.ip}"
        key = f"{where}.ntp-port" if "ntp-port" in raw else f"{where}.listen"
        report(
            key,
            raw.get("ntp-port", ke.written),
            f"a [[server]] listening on port {port} at {at}: clients send NTP to the address "
            "they reached NTS-KE on (or set ntp-server)",
        )


def _reached(ke: _Listener) -> list[IPv4Address | IPv6Address]:
    """The addresses (a wildcard standing for its family) a client may reach ``ke`` on."""
    return [ke.ip, IPv4Address(0)] if ke.dual_stack else [ke.ip]  # dual: the IPv6 wildcard


def _serves(servers: Sequence[_Listener], ip: IPv4Address | IPv6Address) -> bool:
    """Whether one of ``servers`` (on the negotiated port) receives what is sent to ``ip`` (a
    wildcard: to every address of its family)."""
    return any(receives_at(s.ip, s.dual_stack, ip) for s in servers)
