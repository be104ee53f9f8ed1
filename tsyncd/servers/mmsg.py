"""Batched datagram IO for the server workers: ``recvmmsg``/``sendmmsg`` through ctypes (Linux).

Why: a worker's per-answer cost is mostly the kernel's, and two system calls per answer
(``recvmsg``, ``sendto``) are part of it; so are Python's per-call objects (the ancillary data
list, the address tuple parsed back into a ``sockaddr`` on every send).  One ``recvmmsg``
fetches every queued request (up to ``size``) with its kernel receive stamp into buffers
allocated once; the answers go out with one ``sendmmsg``, each to the very ``sockaddr`` its
request came from (no address parsing at all).  Measured on pre-queued requests here: 5.5 ->
5.0 µs per answer, against a 4.5 µs kernel floor.

The worker reads each message straight from the buffers (``message``) and queues its answer
with ``answer``; ``flush`` sends what is queued.  Address
texts are formatted as ``socket.recvmsg`` would and cached by raw ``sockaddr`` (bounded), so
the responder's client log keys are the same as on the unbatched path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
from typing import Any, Final

from tsyncd.net.udp import SO_TIMESTAMPING

_MSG_WAITFORONE: Final = 0x10000
_NAME_LEN: Final = 28  # sizeof(struct sockaddr_in6), the largest we receive
# struct cmsghdr (len, level, type) and the first timespec of struct scm_timestamping
_STAMP: Final = struct.Struct("@Niiqq")
_STAMP_CMSG: Final = _STAMP.size
_U32: Final = struct.Struct("@I")
_SIZE: Final = struct.Struct("@N")
_PTR: Final = struct.Struct("@P")
_NS_PER_S: Final = 1_000_000_000
_MAX_CACHED: Final = 4096  # address texts kept (a spoofed flood must not grow this forever)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_HDR: Final = ctypes.sizeof(_Mmsghdr)
_OFF_NAMELEN: Final = _Msghdr.namelen.offset
_OFF_CONTROLLEN: Final = _Msghdr.controllen.offset
_OFF_NAME: Final = _Msghdr.name.offset
_OFF_LEN: Final = _Mmsghdr.len.offset
_IOV: Final = ctypes.sizeof(_Iovec)
_OFF_IOV_LEN: Final = _Iovec.len.offset


def _libc_calls() -> tuple[Any, Any] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    args: list[Any] = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
    ]  # fd, vec, vlen, flags
    recvmmsg.argtypes = [*args, ctypes.c_void_p]  # and a timeout, never passed
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = args
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


def address_of(name: bytes) -> tuple[Any, ...]:
    """The address tuple ``socket.recvmsg`` gives for a raw ``sockaddr``."""
    family = int.from_bytes(name[:2], sys.byteorder)
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, name[4:8]), port
    flowinfo = int.from_bytes(name[4:8], "big")
    scope_id = int.from_bytes(name[24:28], sys.byteorder)
    host = socket.inet_ntop(socket.AF_INET6, name[8:24])
    if scope_id:
        try:
            host = f"{host}%{socket.if_indextoname(scope_id)}"
        except OSError:
            host = f"{host}%{scope_id}"
    return host, port, flowinfo, scope_id


class MessageBatch:
    """Receive and send buffers for ``size`` datagrams of up to ``slot`` bytes each."""

    def __init__(self, sock: socket.socket, size: int = 16, slot: int = 1024) -> None:
        calls = _libc_calls()
        if calls is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg not available")
        self._recvmmsg, self._sendmmsg = calls
        self._fd = sock.fileno()
        self.size, self.slot = size, slot
        self._control = socket.CMSG_SPACE(48)  # struct scm_timestamping
        self._rdata = ctypes.create_string_buffer(size * slot)
        self._names = ctypes.create_string_buffer(size * _NAME_LEN)
        self._controls = ctypes.create_string_buffer(size * self._control)
        self._sdata = ctypes.create_string_buffer(size * slot)
        self._riov = (_Iovec * size)()
        self._siov = (_Iovec * size)()
        self._rhdr = (_Mmsghdr * size)()
        self._shdr = (_Mmsghdr * size)()
        rbase, sbase = ctypes.addressof(self._rdata), ctypes.addressof(self._sdata)
        self._nbase = ctypes.addressof(self._names)
        cbase = ctypes.addressof(self._controls)
        for i in range(size):
            self._riov[i].base, self._riov[i].len = rbase + i * slot, slot
            self._siov[i].base, self._siov[i].len = sbase + i * slot, 0
            r = self._rhdr[i].hdr
            r.name, r.namelen = self._nbase + i * _NAME_LEN, _NAME_LEN
            r.iov, r.iovlen = ctypes.addressof(self._riov[i]), 1
            r.control, r.controllen = cbase + i * self._control, self._control
            s = self._shdr[i].hdr
            s.iov, s.iovlen = ctypes.addressof(self._siov[i]), 1
        self._rhdr_p, self._shdr_p = ctypes.addressof(self._rhdr), ctypes.addressof(self._shdr)
        self.rdata = memoryview(self._rdata).cast("B")
        self._sview = memoryview(self._sdata).cast("B")
        self._nview = memoryview(self._names).cast("B")
        self._cview = memoryview(self._controls).cast("B")
        self._rview = memoryview(self._rhdr).cast("B")
        self._shview = memoryview(self._shdr).cast("B")
        self._siview = memoryview(self._siov).cast("B")
        self._addresses: dict[bytes, tuple[Any, ...]] = {}
        self._received = 0
        self.queued = 0

    def receive(self) -> int:
        """Wait (``SO_RCVTIMEO`` bounds it) for at least one datagram; take all queued ones.

        Returns how many; ``BlockingIOError`` on the receive timeout, ``InterruptedError`` on
        a signal, other ``OSError`` (ICMP errors of earlier sends) as the socket would raise.
        """
        view, control, pack_size, pack_u32 = (
            self._rview,
            self._control,
            _SIZE.pack_into,
            _U32.pack_into,
        )
        for i in range(self._received):  # the kernel shrank these to what it filled in
            pack_size(view, i * _HDR + _OFF_CONTROLLEN, control)
            pack_u32(view, i * _HDR + _OFF_NAMELEN, _NAME_LEN)
        n: int = self._recvmmsg(self._fd, self._rhdr_p, self.size, _MSG_WAITFORONE, None)
        if n < 0:
            self._received = 0
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))  # the subclass for the errno, as sockets do
        self._received = n
        return n

    def message(self, i: int) -> tuple[bytes, tuple[Any, ...], int | None]:
        """Datagram ``i``: its bytes, its sender as ``socket.recvmsg`` reports it, and the
        kernel's receive stamp (host CLOCK_REALTIME ns) if it came with one."""
        hdr = i * _HDR
        view = self._rview
        start = i * self.slot
        data = bytes(self.rdata[start : start + _U32.unpack_from(view, hdr + _OFF_LEN)[0]])
        start = i * _NAME_LEN
        name = bytes(self._nview[start : start + _U32.unpack_from(view, hdr + _OFF_NAMELEN)[0]])
        address = self._addresses.get(name)
        if address is None:
            if len(self._addresses) >= _MAX_CACHED:
                self._addresses.clear()
            address = self._addresses[name] = address_of(name)
        rx: int | None = None
        if _SIZE.unpack_from(view, hdr + _OFF_CONTROLLEN)[0] >= _STAMP_CMSG:
            start = i * self._control
            _len, level, kind, sec, nsec = _STAMP.unpack_from(self._cview, start)
            if kind == SO_TIMESTAMPING and level == socket.SOL_SOCKET:
                rx = sec * _NS_PER_S + nsec
        return data, address, rx

    def answer(self, i: int, response: bytes) -> None:
        """Queue ``response`` to the sender of datagram ``i`` (sent by ``flush``)."""
        j = self.queued
        n = len(response)
        if n > self.slot:
            return  # never: a response is never longer than its request
        start = j * self.slot
        self._sview[start : start + n] = response
        _SIZE.pack_into(self._siview, j * _IOV + _OFF_IOV_LEN, n)
        hdr = j * _HDR
        _PTR.pack_into(self._shview, hdr + _OFF_NAME, self._nbase + i * _NAME_LEN)
        namelen = _U32.unpack_from(self._rview, i * _HDR + _OFF_NAMELEN)[0]
        _U32.pack_into(self._shview, hdr + _OFF_NAMELEN, namelen)
        self.queued = j + 1

    def flush(self) -> int:
        """Send every queued answer; how many the kernel took (a failed one is skipped)."""
        sent = start = 0
        total = self.queued
        self.queued = 0
        while start < total:
            n = self._sendmmsg(self._fd, self._shdr_p + start * _HDR, total - start, 0)
            if n <= 0:
                start += 1  # this one failed (full buffer, unreachable): the request is lost
                continue
            sent += n
            start += n
        return sent


class SingleMessage:
    """``MessageBatch``'s interface over plain ``recvmsg``/``sendto``, one datagram at a time
    (where ``recvmmsg`` is missing)."""

    def __init__(self, sock: socket.socket, slot: int = 1024) -> None:
        self._sock = sock
        self._slot = slot
        self._control = socket.CMSG_SPACE(48)
        self._message: tuple[bytes, tuple[Any, ...], int | None] = (b"", (), None)

    def receive(self) -> int:
        """One datagram (``socket.recvmsg``'s exceptions)."""
        data, ancdata, _flags, address = self._sock.recvmsg(self._slot, self._control)
        rx = None
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(cdata) >= 16:
                sec, nsec = struct.unpack_from("@qq", cdata)
                rx = sec * _NS_PER_S + nsec
        self._message = (data, address, rx)
        return 1

    def message(self, i: int) -> tuple[bytes, tuple[Any, ...], int | None]:
        """The datagram ``receive`` got."""
        return self._message

    def answer(self, i: int, response: bytes) -> None:
        """Send ``response`` to its sender now."""
        try:  # noqa: SIM105 - no context manager per packet
            self._sock.sendto(response, self._message[1])
        except OSError:
            pass  # full send buffer or unreachable client: the request is lost either way

    def flush(self) -> int:
        """Nothing is queued."""
        return 0


def datagram_io(sock: socket.socket, size: int = 16) -> MessageBatch | SingleMessage:
    """Batched IO where the C library has it, else one datagram at a time."""
    try:
        return MessageBatch(sock, size)
    except OSError:
        return SingleMessage(sock)
