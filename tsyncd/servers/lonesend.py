"""A lone basic reply, made ready before its Transmit is read, so that only the system call follows.

Why: a basic reply's Transmit is a clock read plus the send lag ``latetx.SendLag`` learns, so its
error is how much the time from that read to the kernel's TX stamp varies.  Measured in a worker
at a client's pace (chronyd polling 16 times a second): the worker wakes slowly from idle (its
request's RX stamp to the read took 150-260 µs, p5-p95), and it runs slowly for a while after:
the few Python steps between the read and the system call (convert, patch the reply, build the
control message, parse the address) took 23-33 µs, against 10-15 µs in the kernel from the call to
the TX stamp.  The lag's median absorbs the mean; the spread stays in the client's offsets (chronyd
measuring the worker: p25-p75 of +0.2..+1.5 µs, chronyd measuring chronyd: -1.3..-0.8).

So the reply is copied into a buffer of its own, addressed to its request's sender and given its
TX-stamp request *before* the read; after the read the worker only converts the time and calls
``send``, which writes the Transmit with one ``pack_into`` and makes one ``sendmsg`` through ctypes
(no argument conversion: see ``mmsg._libc_calls``).  The send path's warm-up (``warmsend.py``) goes
through ``send_raw``, the same call, so the code after the read has just run.  With both, in three
alternating runs against the code before: p95 |offset| 1.15-2.10 µs against 2.49-4.29.

A wildcard server socket's reply also carries its request's destination as a control message,
so it leaves from that address (``udp.reply_pktinfo``): a batch's reply points at the received
one, in place; a stamped reply has it copied beside its TX-stamp request.

``SocketLoneSend`` is the same interface over plain socket calls, for ``mmsg.SingleMessage``.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from tsyncd.net.sockets import libc
from tsyncd.net.udp import READ_SIZE, SO_TIMESTAMPING, Control, cmsg_bytes, send_with
from tsyncd.servers import txstamp
from tsyncd.servers.latetx import TRANSMIT_AT, pack_transmit_into, transmit_ntp, with_transmit
from tsyncd.servers.mmsg import Iovec, MessageBatch, Msghdr, SingleMessage
from tsyncd.sync.sendlag import SendLag

__all__ = [
    "LoneSend",
    "SocketLoneSend",
    "address_send",
    "lone_send",
    "send_staged",
    "sockaddr_of",
]

# struct cmsghdr asking for this datagram's software TX stamp (txstamp.py)
_TX_REQUEST: Final = struct.pack(
    "@NiiI",
    socket.CMSG_LEN(4),
    socket.SOL_SOCKET,
    SO_TIMESTAMPING,
    txstamp.SOF_TIMESTAMPING_TX_SOFTWARE,
)
_CONTROL_LEN: Final = socket.CMSG_SPACE(4)
_ECHO_SPACE: Final = socket.CMSG_SPACE(20)  # struct in6_pktinfo, the larger (udp.reply_pktinfo)
_MAX_NAMES: Final = 4096  # addresses whose sockaddr is kept (stage_to: one per client)


def sockaddr_of(address: tuple[Any, ...]) -> bytes:
    """The raw ``sockaddr`` of a numeric address tuple as sockets give it (``mmsg.address_of``
    backwards): (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6."""
    host: str = address[0]
    port: int = address[1]
    if len(address) == 2:
        return (
            socket.AF_INET.to_bytes(2, sys.byteorder)
            + port.to_bytes(2, "big")
            + socket.inet_pton(socket.AF_INET, host)
            + bytes(8)
        )
    flowinfo: int = address[2]
    scope_id: int = address[3]
    return (
        socket.AF_INET6.to_bytes(2, sys.byteorder)
        + port.to_bytes(2, "big")
        + flowinfo.to_bytes(4, "big")
        + socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        + scope_id.to_bytes(4, sys.byteorder)
    )


class LoneSend:
    """One reply at a time through ``sendmsg`` (ctypes): to the sender of a datagram ``batch``
    received (``stage``), or to an address tuple (``stage_to``: the event-loop server)."""

    def __init__(self, fd: int, batch: MessageBatch | None = None, slot: int = READ_SIZE) -> None:
        self._batch = batch
        self._fd = fd
        self._sendmsg = libc().sendmsg
        self._data = ctypes.create_string_buffer(slot)
        self._view = memoryview(self._data).cast("B")
        self._iov = Iovec(ctypes.addressof(self._data), 0)
        self._control = ctypes.create_string_buffer(_TX_REQUEST, _CONTROL_LEN + _ECHO_SPACE)
        self._control_at = ctypes.addressof(self._control)
        self._hdr = Msghdr()
        self._hdr.iov, self._hdr.iovlen = ctypes.addressof(self._iov), 1
        self._hdr_p = ctypes.c_void_p(ctypes.addressof(self._hdr))
        self._names: dict[tuple[Any, ...], ctypes.Array[ctypes.c_char]] = {}

    def stage(self, i: int, response: bytes, stamped: bool) -> None:
        """Make ``response`` ready for the sender of the batch's ``i``-th datagram, asking for
        its TX stamp if ``stamped``."""
        assert self._batch is not None
        self._stage(*self._batch.name_of(i), response, stamped, *self._batch.control_of(i))

    def stage_to(
        self,
        address: tuple[Any, ...],
        response: bytes,
        stamped: bool,
        control: Control | None = None,
    ) -> None:
        """Make ``response`` ready for ``address`` (a numeric address tuple), sent with
        ``control`` (``udp.reply_control``)."""
        name = self._names.get(address)
        if name is None:
            if len(self._names) >= _MAX_NAMES:
                self._names.clear()
            raw = sockaddr_of(address)
            name = self._names[address] = ctypes.create_string_buffer(raw, len(raw))
        echo = echo_len = 0
        if control:
            raw = cmsg_bytes(control)
            echo, echo_len = self._control_at + _CONTROL_LEN, len(raw)
            ctypes.memmove(echo, raw, echo_len)
        self._stage(ctypes.addressof(name), len(name), response, stamped, echo, echo_len)

    def send(self, transmit: int) -> bool:
        """Write the raw NTP ``transmit`` into the staged reply and send it; False if not sent."""
        pack_transmit_into(self._view, TRANSMIT_AT, transmit)
        n: int = self._sendmsg(self._fd, self._hdr_p, 0)
        return n > 0

    def send_raw(self, address: tuple[Any, ...], payload: bytes) -> bool:
        """Send ``payload`` (at least a header long) to ``address`` through the same call as
        replies, with a made-up Transmit (for the send path's warm-up)."""
        self.stage_to(address, payload, False)
        return self.send(0)

    def _stage(
        self, name: int, namelen: int, data: bytes, stamped: bool, echo: int, echo_len: int
    ) -> None:
        """``echo``: the address of ``echo_len`` bytes of control message the reply carries
        (its source address) besides any TX-stamp request; 0 for none."""
        n = len(data)
        self._view[:n] = data
        self._iov.len = n
        hdr = self._hdr
        hdr.name, hdr.namelen = name, namelen
        if stamped:
            control = self._control_at
            if echo_len and echo != control + _CONTROL_LEN:
                ctypes.memmove(control + _CONTROL_LEN, echo, echo_len)
            hdr.control, hdr.controllen = control, _CONTROL_LEN + echo_len
        elif echo_len:
            hdr.control, hdr.controllen = echo, echo_len
        else:
            hdr.control, hdr.controllen = None, 0


class SocketLoneSend:
    """``LoneSend``'s interface over socket calls, for datagrams from ``SingleMessage``."""

    def __init__(self, sock: socket.socket, single: SingleMessage | None = None) -> None:
        self._sock = sock
        self._single = single
        self._staged: tuple[bytes, Any, bool, Control] = (b"", None, False, [])

    def stage(self, i: int, response: bytes, stamped: bool) -> None:
        """Keep ``response`` for the sender of the last datagram (``i`` is always 0)."""
        assert self._single is not None
        self.stage_to(self._single.address, response, stamped, self._single.reply_control(i))

    def stage_to(
        self,
        address: tuple[Any, ...],
        response: bytes,
        stamped: bool,
        control: Control | None = None,
    ) -> None:
        """Keep ``response`` for ``address``, to send with ``control``."""
        self._staged = (response, address, stamped, control or [])

    def send(self, transmit: int) -> bool:
        """Send the staged reply with ``transmit`` written in; False if not sent."""
        response, address, stamped, control = self._staged
        response = with_transmit(response, transmit)
        if stamped:
            return txstamp.send_stamped(self._sock, response, address, control)
        try:
            send_with(self._sock, response, address, control)
        except OSError:
            return False
        return True

    def send_raw(self, address: tuple[Any, ...], payload: bytes) -> bool:
        """Send ``payload`` to ``address`` as it is."""
        try:
            self._sock.sendto(payload, address)
        except OSError:
            return False
        return True


def lone_send(io: MessageBatch | SingleMessage, sock: socket.socket) -> LoneSend | SocketLoneSend:
    """The lone-reply sender for the datagrams ``io`` receives on ``sock``."""
    if isinstance(io, MessageBatch):
        return LoneSend(sock.fileno(), io, io.slot)
    return SocketLoneSend(sock, io)


def address_send(sock: socket.socket) -> LoneSend | SocketLoneSend:
    """A lone-reply sender to address tuples on ``sock`` (``stage_to``), through ctypes where
    the C library allows."""
    try:
        return LoneSend(sock.fileno())
    except (OSError, AttributeError):
        return SocketLoneSend(sock)


def send_staged(
    lone: LoneSend | SocketLoneSend,
    lag: SendLag,
    sock: socket.socket,
    response: bytes,
    *,
    stamped: bool,
    busy_ns: int,
    shift_ns: int,
    after_ns: int,
    on_stamp: Callable[[bytes, int], object],
) -> int:
    """Send the reply ``lone`` has staged (``response``, asking for its TX stamp if
    ``stamped``): read the clock, add the lag predicted for ``busy_ns`` (the request's wait,
    ``SendLag.lag_for``) and ``shift_ns`` (daemon minus host time), keep it after ``after_ns``
    (RFC 9769: never equal to a Receive), send.  Then learn the lag from the reply's kernel TX
    stamp, and hand every stamp read to ``on_stamp(payload, host ns)``.  The clock read (host
    ns), for the warm-up's bookkeeping."""
    lag_ns = lag.lag_for(busy_ns)
    read = time.time_ns()
    tx = read + lag_ns + shift_ns
    if lone.send(transmit_ntp(tx if tx > after_ns else after_ns + 1)) and stamped:
        head = response[:TRANSMIT_AT]
        for payload, tx_ns in txstamp.read_stamps(sock):
            if payload[:TRANSMIT_AT] == head:
                lag.observe(read, tx_ns, busy_ns)
            on_stamp(payload, tx_ns)
    return read
