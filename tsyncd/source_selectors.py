"""What ``tsyncctl offline``, ``online``, ``onoffline``, ``minpoll`` and the like select sources
by: a name as ``tsyncctl sources`` shows it, the configured name of the source that made an
association (a pool's name selects all its members), or an IP address or network
("192.0.2.0/24", "192.0.2.0/255.255.255.0", "2001:db8::/32") containing its address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from tsyncd.net.udp import normalize_ip

__all__ = ["Association", "select_associations"]


@dataclass(frozen=True, slots=True)
class Association:
    """What selectors are matched against: an association's name, its source's, its IP."""

    name: str
    source: str
    ip: str


def select_associations(
    selectors: Iterable[str], associations: Iterable[Association]
) -> tuple[list[str], list[str]]:
    """(names of the associations ``selectors`` pick, in order; selectors that pick none)."""
    candidates = list(associations)
    picked: dict[str, None] = {}
    unmatched: list[str] = []
    for selector in selectors:
        network = _network(selector)
        hits = [
            a.name
            for a in candidates
            if selector in (a.name, a.source) or (network is not None and _ip_in(a.ip, network))
        ]
        if not hits:
            unmatched.append(selector)
        picked.update(dict.fromkeys(hits))
    return list(picked), unmatched


def _network(selector: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(selector.strip("[]"), strict=False)
    except ValueError:
        return None


def _ip_in(ip: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return normalize_ip(ip) in network
    except ValueError:
        return False
