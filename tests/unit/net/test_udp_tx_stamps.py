"""TimestampedUdp on loopback: kernel TX stamps from the error queue, socket options."""

from __future__ import annotations

import asyncio
import socket
import time

from tsyncd.net.udp import SocketOptions, TimestampedUdp, tx_timestamp


def test_tx_stamps_are_numbered_and_close_to_the_send() -> None:
    async def main() -> list[tuple[int, int, int]]:
        stamps: list[tuple[int, int, int]] = []
        received: list[bytes] = []
        sink = TimestampedUdp.bind("127.0.0.1", 0, lambda d, a, rx: received.append(d))
        before: list[int] = []
        udp = TimestampedUdp.bind(
            "0.0.0.0",
            0,
            lambda d, a, rx: None,
            on_tx_timestamp=lambda key, ns: stamps.append((key, ns, before[-1])),
        )
        assert udp.tx_timestamps and udp.timestamps.name == "kernel-timestamping"
        for _ in range(3):
            before.append(time.time_ns())
            assert udp.sendto(b"x" * 48, sink.local_address)
        for _ in range(100):
            if len(received) == 3 and len(stamps) == 3:
                break
            await asyncio.sleep(0.01)
        udp.close()
        sink.close()
        return stamps

    stamps = asyncio.run(main())
    assert [key for key, _, _ in stamps] == [0, 1, 2]
    for _, ns, before in stamps:
        assert 0 <= ns - before < 1_000_000_000  # after the clock read that preceded sendto


def test_tx_timestamp_ignores_other_ancillary_data() -> None:
    assert tx_timestamp([]) is None
    assert tx_timestamp([(socket.SOL_SOCKET, 37, b"\0" * 48)]) is None


def test_socket_options_set_dscp_and_v6only() -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        SocketOptions(dscp=46, ipv6_only=True).apply(sock, socket.AF_INET6)
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == 46 << 2
        SocketOptions(ipv6_only=False).apply(sock, socket.AF_INET6)
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    finally:
        sock.close()
    sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        SocketOptions(dscp=46).apply(sock4, socket.AF_INET)
        assert sock4.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 46 << 2
    finally:
        sock4.close()
