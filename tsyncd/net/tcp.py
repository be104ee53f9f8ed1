"""TCP listeners bound as tsyncd's UDP servers are: the IPv6 wildcard takes IPv4 clients too.

Why not ``asyncio.start_server(handler, host, port)``: asyncio turns ``IPV6_V6ONLY`` on for
every IPv6 listener, so an NTS-KE server or metrics exporter on ``[::]`` would refuse IPv4
clients while the NTP server on ``[::]`` answers them (QA s16).  Here the socket is made and
bound as ``net.udp.bind_udp`` does and handed to asyncio ready.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tsyncd.net.sockets import open_socket
from tsyncd.net.udp import dual_stack, family_for_host

__all__ = ["listen_tcp", "start_tcp_server"]

_BACKLOG = 128


def listen_tcp(host: str, port: int, backlog: int = _BACKLOG) -> socket.socket:
    """A non-blocking TCP socket listening on ``host``:``port`` (an IP literal), dual-stack
    for the IPv6 wildcard; OSError, with nothing left open, if refused."""
    family = family_for_host(host)
    sock = open_socket(family, socket.SOCK_STREAM)
    try:
        # A restart must not wait for the last run's connections in TIME_WAIT (asyncio's
        # default on Unix too).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not dual_stack(host)))
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def start_tcp_server(handler: Any, host: str, port: int, **kwargs: Any) -> asyncio.Server:
    """``asyncio.start_server`` on ``listen_tcp``'s socket (the config admits only IP literals
    for these listeners)."""
    return await asyncio.start_server(handler, sock=listen_tcp(host, port), **kwargs)
