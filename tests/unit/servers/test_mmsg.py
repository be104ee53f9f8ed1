"""Batched datagram IO of the workers: what recvmmsg/sendmmsg give must be what recvmsg and
sendto would (sizes, sender address texts, kernel stamps, answers to the right sender)."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tsyncd.net.udp import MAX_DATAGRAM, READ_SIZE, enable_rx_timestamps
from tsyncd.servers.mmsg import MessageBatch, SingleMessage, address_of

_TIMEOUT = struct.pack("@ll", 0, 200_000)
_TRANSMIT = 0x0102_0304_0506_0708


@pytest.mark.parametrize(
    ("family", "host", "source", "expected_host"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.5", "127.0.0.5"),
        (socket.AF_INET6, "::", "127.0.0.6", "::ffff:127.0.0.6"),  # dual stack: IPv4-mapped
        (socket.AF_INET6, "::", "::1", "::1"),
    ],
)
@pytest.mark.parametrize("kind", [MessageBatch, SingleMessage])
def test_batch_matches_recvmsg(
    family: int, host: str, source: str, expected_host: str, kind: type[MessageBatch]
) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as server:
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind((host, 0))
        enable_rx_timestamps(server)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
        port = server.getsockname()[1]
        io = kind(server)
        client_family = socket.AF_INET6 if ":" in source else socket.AF_INET
        with socket.socket(client_family, socket.SOCK_DGRAM) as client:
            client.bind((source, 0))
            client.settimeout(1.0)
            target = "::1" if client_family == socket.AF_INET6 else "127.0.0.1"
            _until_stamped(io, client, (target, port))
            for rnd in range(2):  # twice: the buffers must be ready again after a batch
                for k in range(3):
                    client.sendto(bytes([k]) * (48 + k), (target, port))
                got: list[tuple[bytes, tuple[object, ...], int | None]] = []
                while len(got) < 3:
                    batch = io.receive()
                    replies = []
                    for i, message in enumerate(batch):
                        got.append(message)
                        # The round's first reply gets its Transmit written as it goes out.
                        replies.append((i, b"r" * (50 + len(got) + rnd), len(got) == 1))
                    assert io.send(replies, _TRANSMIT) == len(batch)
                assert [d for d, _, _ in got] == [bytes([k]) * (48 + k) for k in range(3)]
                assert all(a[0] == expected_host for _, a, _ in got)
                assert all(a[1] == client.getsockname()[1] for _, a, _ in got)
                assert all(rx is not None and rx > 1_600_000_000 * 10**9 for _, _, rx in got)
                answers = sorted((client.recv(100) for _ in range(3)), key=len)
                assert [len(a) for a in answers] == [51 + rnd, 52 + rnd, 53 + rnd]
                assert answers[0] == b"r" * 40 + _TRANSMIT.to_bytes(8, "big") + b"r" * (3 + rnd)
                assert all(a == b"r" * len(a) for a in answers[1:])
            with pytest.raises(BlockingIOError):  # SO_RCVTIMEO bounds the wait
                io.receive()


@pytest.mark.parametrize("kind", [MessageBatch, SingleMessage])
def test_workers_read_as_much_of_a_datagram_as_the_event_loop(kind: type[MessageBatch]) -> None:
    """The same request is read the same on every path (``MAX_DATAGRAM``, as the event-loop
    server's ``TimestampedUdp``): before, the workers cut datagrams at 1024 bytes, so an NTS
    request with a long extension field was dropped there and answered in the event loop,
    and a valid 1024-byte start followed by garbage the other way round.  A longer datagram
    is read one byte past ``MAX_DATAGRAM`` (``READ_SIZE``), so it shows as too long."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
        io = kind(server)
        sizes = [1024, 1100, MAX_DATAGRAM, MAX_DATAGRAM + 100]
        for size in sizes:
            client.sendto(
                bytes(range(256)) * (size // 256) + b"x" * (size % 256), server.getsockname()
            )
        got: list[bytes] = []
        while len(got) < len(sizes):
            got += [data for data, _, _ in io.receive()]
        assert [len(d) for d in got] == [1024, 1100, MAX_DATAGRAM, READ_SIZE]
        # A reply as long as the longest request read goes out whole.
        assert io.send([(len(got) - 1, b"r" * MAX_DATAGRAM, False)]) == 1
        client.settimeout(1.0)
        assert client.recv(4096) == b"r" * MAX_DATAGRAM


def _until_stamped(io: MessageBatch | SingleMessage, client: socket.socket, target: object) -> None:
    """Wait until the kernel stamps arrivals: the first socket on a host to ask turns stamping
    on through a deferred work item (``net_enable_timestamp``), so the very first datagrams
    may come without a stamp (the workers then read the clock themselves)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        client.sendto(b"p" * 48, target)
        if all(rx is not None for _, _, rx in io.receive()):
            return
    pytest.fail("the kernel never stamped an arrival")


def test_address_of_ipv6_with_scope() -> None:
    name = struct.pack("@H", socket.AF_INET6) + struct.pack("!HI", 123, 7)
    name += socket.inet_pton(socket.AF_INET6, "fe80::1") + struct.pack("@I", 1)
    host, port, flowinfo, scope = address_of(name)
    assert (port, flowinfo, scope) == (123, 7, 1)
    assert host == f"fe80::1%{socket.if_indextoname(1)}"


def test_replies_to_some_requests_only_reach_their_senders() -> None:
    """A dropped request shifts the replies after it to other send slots; the send headers
    must name each reply's own sender, in that batch and in the next."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
        io = MessageBatch(server)
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for k, client in enumerate(clients):
                client.bind((f"127.0.0.{20 + k}", 0))
                client.settimeout(0.2)
            for skip in (0, None, 1, None):  # None: answer all
                for client in clients:
                    client.sendto(b"q" * 48, server.getsockname())
                got: list[tuple[bytes, tuple[object, ...], int | None]] = []
                while len(got) < 3:
                    got += io.receive()
                # Each reply is its sender's last address byte, as text, 24 times (48 bytes).
                replies = [
                    (i, str(a[0]).rsplit(".", 1)[1].encode() * 24, False)
                    for i, (_d, a, _rx) in enumerate(got)
                    if i != skip
                ]
                assert io.send(replies) == len(replies)
                for k, client in enumerate(clients):
                    if skip is not None and str(got[skip][1][0]) == f"127.0.0.{20 + k}":
                        with pytest.raises(TimeoutError):
                            client.recv(100)
                    else:
                        assert client.recv(100) == str(20 + k).encode() * 24
        finally:
            for client in clients:
                client.close()
