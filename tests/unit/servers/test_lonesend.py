"""A lone reply staged before the clock read: it must reach the request's sender with the
Transmit written at send time, ask for its kernel TX stamp only when told, and the warm-up send
must reach the address it is given; over ctypes (``MessageBatch``) and sockets alike."""

from __future__ import annotations

import socket
import struct

import pytest

from tsyncd.net.udp import MAX_DATAGRAM
from tsyncd.servers import txstamp
from tsyncd.servers.lonesend import (
    LoneSend,
    SocketLoneSend,
    address_send,
    lone_send,
    sockaddr_of,
)
from tsyncd.servers.mmsg import MessageBatch, SingleMessage, address_of

_TIMEOUT = struct.pack("@ll", 0, 500_000)


@pytest.mark.parametrize(
    ("family", "host", "source"),
    [(socket.AF_INET, "127.0.0.1", "127.0.0.7"), (socket.AF_INET6, "::1", "::1")],
)
@pytest.mark.parametrize("kind", [MessageBatch, SingleMessage])
def test_staged_reply_reaches_the_sender_with_its_transmit(
    family: int, host: str, source: str, kind: type[MessageBatch]
) -> None:
    with (
        socket.socket(family, socket.SOCK_DGRAM) as server,
        socket.socket(family, socket.SOCK_DGRAM) as client,
        socket.socket(family, socket.SOCK_DGRAM) as sink,
    ):
        server.bind((host, 0))
        assert txstamp.enable(server)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
        io = kind(server)
        lone = lone_send(io, server)
        client.bind((source, 0))
        client.settimeout(1.0)
        sink.bind((host, 0))
        sink.settimeout(1.0)
        for stamped, transmit in ((True, 0x1122_3344_5566_7788), (False, 0x0A0B_0C0D_0E0F_1011)):
            client.sendto(b"q" * 48, server.getsockname())
            [(_data, _address, _rx)] = io.receive()
            reply = b"a" * 40 + bytes(8)  # a bare header, as basic replies are
            lone.stage(0, reply, stamped)
            assert lone.send(transmit)
            got = client.recv(100)
            assert got == b"a" * 40 + transmit.to_bytes(8, "big")
            stamps = list(txstamp.read_stamps(server))
            if stamped:  # the kernel queued the reply itself with its stamp
                assert [payload[:40] for payload, _ns in stamps] == [b"a" * 40]
                assert stamps[0][1] > 1_600_000_000 * 10**9
            else:
                assert stamps == []
        # The warm-up send: any address, the payload as given (its Transmit made up).
        assert lone.send_raw(sink.getsockname(), bytes(48))
        assert len(sink.recv(100)) == 48


@pytest.mark.parametrize(
    "address",
    [("127.0.0.9", 123), ("::1", 4460, 0, 0), ("fe80::1", 123, 5, 1), ("::ffff:10.0.0.1", 1, 0, 0)],
)
def test_sockaddr_of_inverts_address_of(address: tuple[object, ...]) -> None:
    back = address_of(sockaddr_of(address))
    host = str(back[0]).split("%", 1)[0]  # a scope comes back with the interface's name
    assert (host, *back[1:]) == address


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
@pytest.mark.parametrize("kind", ["ctypes", "socket"])
def test_stage_to_an_address_tuple(family: int, host: str, kind: str) -> None:
    with (
        socket.socket(family, socket.SOCK_DGRAM) as server,
        socket.socket(family, socket.SOCK_DGRAM) as client,
    ):
        server.bind((host, 0))
        assert txstamp.enable(server)
        client.bind((host, 0))
        client.settimeout(1.0)
        lone = LoneSend(server.fileno()) if kind == "ctypes" else SocketLoneSend(server)
        for transmit in (7, 8):  # the second time from the cached sockaddr
            lone.stage_to(client.getsockname(), b"b" * 40 + bytes(8), True)
            assert lone.send(transmit)
            assert client.recv(100) == b"b" * 40 + transmit.to_bytes(8, "big")
            assert [p[:40] for p, _ns in txstamp.read_stamps(server)] == [b"b" * 40]


def test_the_event_loop_sender_takes_a_reply_as_long_as_a_request_read() -> None:
    """The event-loop server reads requests of up to ``MAX_DATAGRAM`` bytes, and an NTS reply
    is about as long as its request: its sender must take one that long (before: 1024)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        client.settimeout(1.0)
        lone = address_send(server)
        assert isinstance(lone, LoneSend)
        reply = b"c" * 40 + bytes(8) + b"e" * (MAX_DATAGRAM - 48)
        lone.stage_to(client.getsockname(), reply, False)
        assert lone.send(9)
        assert client.recv(4096) == b"c" * 40 + (9).to_bytes(8, "big") + b"e" * (MAX_DATAGRAM - 48)
