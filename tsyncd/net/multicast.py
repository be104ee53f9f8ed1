"""Multicast socket options for NTP's broadcast mode over multicast groups (RFC 5905 mode 5).

NTP's IANA groups are ``224.0.1.1`` and ``ff0X::101`` (X: the scope, e.g. 2 link, 5 site).  A
sender picks the outgoing interface (``IP_MULTICAST_IF`` / ``IPV6_MULTICAST_IF``, else the
kernel routes the group) and a hop limit (TTL 1 keeps the packets on the link, which is where
RFC 8633 §5.5 wants broadcast time: trusted networks only).  A receiver joins the group on an
interface (``IP_ADD_MEMBERSHIP`` / ``IPV6_JOIN_GROUP``; index 0 lets the kernel choose by
route) on a socket bound to the group's port.  Interfaces are named as ``ip link`` shows them.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Final

# Linux values; Python's socket module does not export them.
IP_MULTICAST_ALL: Final = 49
IPV6_MULTICAST_ALL: Final = 29
_IP_MREQN = struct.Struct("=4s4si")  # struct ip_mreqn: group, local address, ifindex
_IPV6_MREQ = struct.Struct("=16sI")  # struct ipv6_mreq: group, ifindex


def interface_index(name: str | None) -> int:
    """The index of interface ``name`` (0: none named); OSError if there is no such one."""
    return 0 if name is None else socket.if_nametoindex(name)


def join_group(sock: socket.socket, group: str, interface: str | None) -> None:
    """Make ``sock`` (bound to the group's port) receive datagrams sent to ``group``.

    Only to that group: Linux otherwise hands a wildcard-bound socket the datagrams of every
    group any socket on the host joined, on that port (``IP_MULTICAST_ALL``, on by default).
    """
    index = interface_index(interface)
    if ":" in group:
        mreq = _IPV6_MREQ.pack(socket.inet_pton(socket.AF_INET6, group), index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        with contextlib.suppress(OSError):  # Linux >= 4.20; else the source check still holds
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        with contextlib.suppress(OSError):  # a dual-stack socket hears IPv4 groups too
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    else:
        mreqn = _IP_MREQN.pack(socket.inet_aton(group), bytes(4), index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)


def set_multicast_sender(
    sock: socket.socket, family: socket.AddressFamily, interface: str | None, hops: int
) -> None:
    """Send ``sock``'s multicasts on ``interface`` (None: by route) with ``hops`` hops at most.

    Our own host's members hear them too (multicast loop stays on, the kernel's default).
    """
    index = interface_index(interface)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
        if index:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, hops)
        if index:
            sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _IP_MREQN.pack(bytes(4), bytes(4), index)
            )
