"""Name resolution for sources: the system resolver, or DNS servers named in the config.

With no ``[resolver] servers`` configured, names go through ``getaddrinfo`` (and so
/etc/resolv.conf, /etc/hosts, nsswitch).  With servers, we ask them directly over UDP with the
sans-IO codec in ``tsyncd.wire.dns``: A and AAAA, each server in turn, a few tries with a
timeout.  That lets an operator point time sources at a dedicated resolver, and lets the tests
resolve a pool name through a real dnsmasq on a loopback port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Final

from tsyncd.asyncwait import wait_for
from tsyncd.config import Endpoint
from tsyncd.net.udp import ip_text, is_ip_literal
from tsyncd.wire.dns import DnsError, QType, decode_response, encode_query
from tsyncd.wire.errors import WireError

log = logging.getLogger(__name__)

_TIMEOUT_S: Final = 2.0
_TRIES: Final = 2


class _OneShot(asyncio.DatagramProtocol):
    """Collects datagrams for one query until the caller is satisfied."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)


async def _query(server: Endpoint, name: str, qtype: QType) -> list[str]:
    """Ask one server one question; OSError on timeout or a DNS error (NXDOMAIN: no records)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    transport, proto = await loop.create_datagram_endpoint(
        _OneShot, remote_addr=(server.host, server.port), family=family
    )
    try:
        for _ in range(_TRIES):
            # With the random port, a blind spoofer must guess this.  os.urandom, not secrets: that
            # imports hmac and with it libcrypto, which a daemon without NTS never needs.
            query_id = int.from_bytes(os.urandom(2), "big")
            transport.sendto(encode_query(query_id, name, qtype))
            deadline = loop.time() + _TIMEOUT_S
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await wait_for(proto.queue.get(), left)
                except TimeoutError:
                    break
                try:
                    return list(decode_response(data, query_id, name, qtype).addresses)
                except DnsError as exc:
                    if exc.rcode == 3:  # NXDOMAIN: the name has no records of any type
                        return []
                    raise OSError(f"{server}: {exc}") from exc
                except WireError as exc:
                    log.debug("ignoring a DNS message from %s: %s", server, exc)
        raise OSError(f"no answer from DNS server {server}")
    finally:
        transport.close()


async def resolve(host: str, port: int, servers: tuple[Endpoint, ...] = ()) -> list[str]:
    """The IP addresses of ``host`` (IPv4 first, then IPv6), without duplicates.

    IP literals come back as they are.  Raises OSError when nothing could be found.
    """
    if is_ip_literal(host):
        return [ip_text(host)]
    ips: list[str] = []
    if not servers:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
        )
        ips = [str(info[4][0]) for info in infos]
    else:
        # Each type on its own: some servers refuse AAAA for names they only know an A for.
        errors: list[str] = []
        for qtype in (QType.A, QType.AAAA):
            for server in servers:
                try:
                    ips += await _query(server, host, qtype)
                    break
                except OSError as exc:
                    errors.append(f"{qtype.name}: {exc}")
        if not ips and errors:
            raise OSError("; ".join(errors))
    unique = list(dict.fromkeys(ip_text(ip) for ip in ips))
    if not unique:
        raise OSError(f"no addresses for {host}")
    return unique
