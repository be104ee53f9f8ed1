"""Where a source's packets leave from: the addresses the loop test takes as ours (QA s16
hunt-sync F2)."""

from __future__ import annotations

import asyncio

from tsyncd.config import ServerConfig
from tsyncd.config_fields import Endpoint
from tsyncd.daemon_sources import own_server_ips
from tsyncd.sources.ntp import NtpSourceSocket


def servers(*listens: tuple[str, int], ipv6_only: bool | None = None) -> list[ServerConfig]:
    return [ServerConfig(listen=Endpoint(h, p), ipv6_only=ipv6_only) for h, p in listens]


def test_own_server_ips_leave_out_wildcards() -> None:
    listens = servers(("0.0.0.0", 123), ("::", 124), ("127.0.0.30", 125), ("::1", 126))
    assert own_server_ips(listens) == ("127.0.0.30", "::1")


def test_a_source_socket_knows_where_its_packets_leave_from() -> None:
    async def local_addresses() -> tuple[str | None, frozenset[int]]:
        client = NtpSourceSocket(name="c", mode="server", ip="127.0.0.31", port=9)
        client.open(lambda *_: None)
        try:
            return client.local_ip, client.local_refids(("127.0.0.40",))
        finally:
            client.close()

    client_ip, client_refids = asyncio.run(local_addresses())
    assert client_ip == "127.0.0.1"  # unbound: as the kernel routes to the server
    assert client_refids == {0x7F000001, 0x7F000028}
