"""Cross-field checks of broadcast and multicast configuration (``config.py``'s step 2).

A broadcast source's ``address`` is either the server's IPv4 address (IPv4 broadcast, as
before) or a multicast group (IPv6 ``ff0X::101``, IPv4 ``224.0.1.1``, NTP's IANA groups).  A
group says nothing about who sends to it, so a group needs ``broadcast-server``: the one
sender whose packets this source uses, and its unicast port for calibration.  With an IPv4
broadcast ``address``, ``broadcast-server`` may only repeat that IP (to give the server's
unicast port when it differs from the broadcasts' port).  IPv6 has no broadcast: a
``[[broadcast]]`` to an IPv6 address must be a group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from ipaddress import ip_address
from typing import TYPE_CHECKING

from tsyncd.config_fields import MISSING

if TYPE_CHECKING:
    from tsyncd.config import BroadcastConfig, SourceConfig

Report = Callable[[str, object, str], None]  # (key path, value, expected)

_GROUPS = "a multicast group (IPv6 ff0X::101, IPv4 224.0.1.1)"


def is_multicast(host: str) -> bool:
    """``host`` is a multicast group's IP literal (IPv4 224.0.0.0/4, IPv6 ff00::/8)."""
    try:
        return ip_address(host).is_multicast
    except ValueError:
        return False


def _same_ip(a: str, b: str) -> bool:
    try:
        return ip_address(a) == ip_address(b)
    except ValueError:
        return False


def _same_family(a: str, b: str) -> bool:
    return ip_address(a).version == ip_address(b).version


def check_broadcast_source(
    where: str, raw: Mapping[str, object], source: SourceConfig, report: Report
) -> None:
    """The broadcast-* keys: only on broadcast sources; a group needs its server named."""
    for key in ("broadcast-calibrate", "broadcast-server", "broadcast-interface"):
        if key in raw and source.mode != "broadcast":
            report(f"{where}.{key}", raw[key], f'no {key} unless mode = "broadcast"')
    if source.mode != "broadcast":
        return
    group = is_multicast(source.address.host)
    server = source.broadcast_server
    if group and server is None:
        report(
            f"{where}.broadcast-server",
            MISSING,
            "the IP[:port] of the server whose multicasts to use (address is a group)",
        )
    elif (
        group
        and server is not None
        and (is_multicast(server.host) or not _same_family(server.host, source.address.host))
    ):
        family = f"IPv{ip_address(source.address.host).version}"
        report(
            f"{where}.broadcast-server",
            raw["broadcast-server"],
            f"a unicast {family}[:port], as the group is {family}",
        )
    elif not group and server is not None and not _same_ip(server.host, source.address.host):
        report(
            f"{where}.broadcast-server",
            raw["broadcast-server"],
            f"the address's IP ({source.address.host}) with the server's port, or no "
            "broadcast-server (it names another sender only when address is a multicast group)",
        )
    if "broadcast-interface" in raw and not group:
        report(
            f"{where}.broadcast-interface",
            raw["broadcast-interface"],
            "no broadcast-interface unless address is a multicast group",
        )


def check_broadcast(
    where: str, raw: Mapping[str, object], bcast: BroadcastConfig, report: Report
) -> None:
    """A [[broadcast]]: IPv4 broadcast or a group; interface and ttl only for groups."""
    host = bcast.address.host
    group = is_multicast(host)
    if not group and ip_address(host).version != 4:
        report(f"{where}.address", raw["address"], f"an IPv4 broadcast address or {_GROUPS}")
    for key in ("interface", "ttl"):
        if key in raw and not group:
            report(f"{where}.{key}", raw[key], f"no {key} unless address is a multicast group")
