"""Host names where chronyc takes them (``allow``, ``deny``, ``accheck``): resolved here, in
tsyncctl, as chronyc resolves them, and the address sent to tsyncd, whose event loop serves
time and never waits on DNS for them (``tsyncd.config_fields.HostName``).

As chronyc (``DNS_Name2IPAddress`` asked for one address), a name stands for the first
address ``getaddrinfo`` gives, of either family, and a rule holds that address only.
"""

from __future__ import annotations

import socket

from tsyncctl.group import CliError
from tsyncd.config_fields import is_host_name


def first_address(command: str, name: str) -> str:
    """The first IPv4 or IPv6 address of ``name``, its zone dropped (chronyc keeps the
    address alone); CliError if it has none."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(f"{command}: cannot resolve {name!r}: {why}") from None
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return str(sockaddr[0]).split("%", 1)[0]
    raise CliError(f"{command}: {name!r} has no IPv4 or IPv6 address")


def for_tsyncd(command: str, text: str) -> str:
    """An address or SUBNET as tsyncd takes it: a host name becomes its first address,
    anything else goes as it is (tsyncd says what is wrong with it)."""
    return first_address(command, text) if is_host_name(text) else text
