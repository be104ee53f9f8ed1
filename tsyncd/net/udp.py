"""UDP sockets that report when each datagram arrived, by the kernel's clock.

NTP's accuracy lives in T4 (when the reply arrived) and T2 (when a request arrived): a timestamp
taken in Python after the event loop woke up is tens of microseconds late and jittery.  Linux
stamps every datagram on arrival if asked with ``SO_TIMESTAMPING`` (software RX stamps); we read
the stamp from the ``recvmsg`` ancillary data.  Where the option is refused we fall back to
``SO_TIMESTAMPNS``, and last to reading the clock right after ``recvmsg``
(ARCHITECTURE.md, "Kernel timestamps").

The socket is driven by ``loop.add_reader`` rather than a ``DatagramProtocol`` because asyncio's
datagram transports use ``recvfrom`` and drop the ancillary data.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tsyncd.net.sockets import open_socket, set_nonblocking

log = logging.getLogger(__name__)

# Linux asm-generic values; Python's socket module does not export them.
SO_TIMESTAMPNS: Final = 35
SO_TIMESTAMPING: Final = 37
SCM_TIMESTAMPNS: Final = SO_TIMESTAMPNS
SCM_TIMESTAMPING: Final = SO_TIMESTAMPING
SOF_TIMESTAMPING_RX_SOFTWARE: Final = 1 << 3
SOF_TIMESTAMPING_SOFTWARE: Final = 1 << 4

_TIMESPEC = struct.Struct("@qq")
_SCM_TIMESTAMPING = struct.Struct("@qqqqqq")  # struct scm_timestamping: ts[3]
_CMSG_SPACE: Final = socket.CMSG_SPACE(_SCM_TIMESTAMPING.size)
_MAX_DATAGRAM: Final = 2048  # NTP with NTS extension fields stays well under this
_BATCH: Final = 64  # datagrams read per wake-up before yielding to other tasks

Address = tuple[str, int] | tuple[str, int, int, int]
DatagramHandler = Callable[[bytes, Address, int], None]


@dataclass(frozen=True, slots=True)
class TimestampSource:
    """Which clock stamped received datagrams: 'kernel-timestamping', 'kernel-ns' or 'user'."""

    name: str


def enable_rx_timestamps(sock: socket.socket) -> TimestampSource:
    """Ask the kernel to stamp received datagrams; return what it agreed to."""
    try:
        sock.setsockopt(
            socket.SOL_SOCKET,
            SO_TIMESTAMPING,
            SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE,
        )
        return TimestampSource("kernel-timestamping")
    except OSError:
        pass
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return TimestampSource("kernel-ns")
    except OSError:
        return TimestampSource("user")


def rx_timestamp_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive timestamp (Unix ns) from recvmsg ancillary data, if present."""
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == SCM_TIMESTAMPING and len(data) >= _SCM_TIMESTAMPING.size:
            sec, nsec = _TIMESPEC.unpack_from(data, 0)  # ts[0] is the software stamp
            if sec or nsec:
                return int(sec) * 1_000_000_000 + int(nsec)
        elif kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data, 0)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


def family_for_host(host: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an IP literal."""
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def normalize_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The client's IP; IPv4-mapped IPv6 addresses become IPv4 so ACLs and refids match."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TimestampedUdp:
    """A non-blocking UDP socket on the event loop whose datagrams come with RX timestamps.

    ``on_datagram(data, address, rx_ns)`` is called for each datagram, on the loop.  ``rx_ns``
    is Unix nanoseconds by the host's CLOCK_REALTIME as the kernel stamped it (or as read right
    after ``recvmsg`` where the kernel gives no stamp); map it with ``Clock.from_kernel_ns``.
    """

    def __init__(self, sock: socket.socket, on_datagram: DatagramHandler) -> None:
        self.sock = sock
        self._on_datagram = on_datagram
        self.timestamps = enable_rx_timestamps(sock)
        self._flags = set_nonblocking(sock)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read_ready)
        self._closed = False

    @classmethod
    def bind(
        cls,
        host: str,
        port: int,
        on_datagram: DatagramHandler,
        *,
        reuse_port: bool = False,
    ) -> TimestampedUdp:
        """Bind a socket on an IP literal (``::`` listens on IPv4 too) and start reading."""
        family = family_for_host(host)
        sock = open_socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # Dual stack for the wildcard, so one [::] server also answers IPv4 clients.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        return cls(sock, on_datagram)

    @property
    def local_address(self) -> Address:
        """The bound (host, port, ...) of the socket."""
        addr: Address = self.sock.getsockname()
        return addr

    def _read_ready(self) -> None:
        for _ in range(_BATCH):
            try:
                data, ancdata, _flags, address = self.sock.recvmsg(
                    _MAX_DATAGRAM, _CMSG_SPACE, self._flags
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors (port unreachable) surface here on Linux; they are not fatal.
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.debug("recvmsg failed: %s", exc)
                continue
            rx_ns = rx_timestamp_ns(ancdata)
            if rx_ns is None:
                rx_ns = time.time_ns()
            self._on_datagram(data, address, rx_ns)

    def sendto(self, data: bytes, address: Address) -> bool:
        """Send one datagram now; False if the kernel refused it (logged, never raised)."""
        try:
            self.sock.sendto(data, self._flags, address)
            return True
        except (BlockingIOError, InterruptedError):
            log.debug("send buffer full, dropped datagram to %s", address)
        except OSError as exc:
            log.debug("sendto %s failed: %s", address, exc)
        return False

    def close(self) -> None:
        """Stop reading and close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
