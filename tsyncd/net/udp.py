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
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tsyncd.net.sockets import open_socket, set_nonblocking
from tsyncd.net.warmsend import SendWarmer
from tsyncd.wire.ntp import MAX_PACKET_LEN

log = logging.getLogger(__name__)

# Linux asm-generic values; Python's socket module does not export them.
SO_TIMESTAMPNS: Final = 35
SO_TIMESTAMPING: Final = 37
SCM_TIMESTAMPNS: Final = SO_TIMESTAMPNS
SCM_TIMESTAMPING: Final = SO_TIMESTAMPING
SOF_TIMESTAMPING_RX_SOFTWARE: Final = 1 << 3
SOF_TIMESTAMPING_SOFTWARE: Final = 1 << 4
SOF_TIMESTAMPING_TX_SOFTWARE: Final = 1 << 1
SOF_TIMESTAMPING_OPT_ID: Final = 1 << 7  # number each datagram sent (ee_data)
SOF_TIMESTAMPING_OPT_TSONLY: Final = 1 << 11  # error queue carries the stamp, not the packet
IP_RECVERR: Final = 11
IP_PKTINFO: Final = 8  # Linux; Python's socket module lacks it
IPV6_RECVERR: Final = 25
SO_EE_ORIGIN_TIMESTAMPING: Final = 4

_TIMESPEC = struct.Struct("@qq")
_SCM_TIMESTAMPING = struct.Struct("@qqqqqq")  # struct scm_timestamping: ts[3]
_CMSG_SPACE: Final = socket.CMSG_SPACE(_SCM_TIMESTAMPING.size)
# The longest datagram read, on every path that reads NTP (the event loop here, the server
# workers' batches): NTP with NTS extension fields stays well under it, and one size for all
# means the same request is read, and so answered or dropped, the same way whichever path
# takes it; each server worker keeps a batch of these (twice 2048 cost 0.1 MB of the memory
# budget for nothing NTP sends).  Reads take ``READ_SIZE``, one byte more: a longer datagram,
# cut there by the kernel, shows as too long and is dropped, not taken for the valid packet
# its first 1152 bytes may be.
MAX_DATAGRAM: Final = MAX_PACKET_LEN
READ_SIZE: Final = MAX_DATAGRAM + 1
_BATCH: Final = 64  # datagrams read per wake-up before yielding to other tasks

# Room for a wildcard server socket's destination control messages: a dual-stack socket gets
# both for an IPv4 datagram (struct in6_pktinfo, then struct in_pktinfo).
_IN_PKTINFO_LEN: Final = 12
_IN6_PKTINFO_LEN: Final = 20
_IN_PKTINFO_SPACE: Final = socket.CMSG_SPACE(_IN_PKTINFO_LEN)
_IN_PKTINFO_CMSG_LEN: Final = socket.CMSG_LEN(_IN_PKTINFO_LEN)
_IN6_PKTINFO_SPACE: Final = socket.CMSG_SPACE(_IN6_PKTINFO_LEN)
_IN6_PKTINFO_CMSG_LEN: Final = socket.CMSG_LEN(_IN6_PKTINFO_LEN)
PKTINFO_SPACE: Final = _IN6_PKTINFO_SPACE + _IN_PKTINFO_SPACE
CMSGHDR: Final = struct.Struct("@Nii")  # struct cmsghdr: len, level, type
_ZERO4: Final = bytes(4)
_IN6_HEAD: Final = struct.Struct("!QI")  # an IPv6 address's first 64 bits, then 32 more
_LINK_LOCAL: Final = 0xFE80 >> 6  # fe80::/10

Address = tuple[str, int] | tuple[str, int, int, int]
Control = list[tuple[int, int, bytes]]  # control messages as ``socket.sendmsg`` takes them
DatagramHandler = Callable[[bytes, Address, int], None]
TxStampHandler = Callable[[int, int], None]  # (datagram key, kernel tx ns)
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err


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


def software_stamp_ns(data: bytes) -> int | None:
    """ts[0], the software stamp, of a ``struct scm_timestamping`` (Unix ns); None if the
    data is short or the kernel left it zero."""
    if len(data) < _SCM_TIMESTAMPING.size:
        return None
    sec, nsec = _TIMESPEC.unpack_from(data, 0)
    return int(sec) * 1_000_000_000 + int(nsec) if sec or nsec else None


def rx_timestamp_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive timestamp (Unix ns) from recvmsg ancillary data, if present."""
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == SCM_TIMESTAMPING:
            stamp = software_stamp_ns(data)
            if stamp is not None:
                return stamp
        elif kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data, 0)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


def family_for_host(host: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an IP literal."""
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def is_ip_literal(host: str) -> bool:
    """``host`` is an IP address (IPv6 with or without a scope), not a name to resolve."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ip_text(host: str) -> str:
    """``host`` as tsyncd writes an address: an IPv4-mapped IPv6 address with its IPv4 part
    dotted (``::ffff:127.0.0.3``, as inet_ntop and Python 3.13 write it; 3.11's ``str`` gives
    ``::ffff:7f00:3``, which hides which IPv4 address it is)."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def is_ipv6_wildcard(host: str) -> bool:
    """``host`` is the IPv6 unspecified address, however written (``::``, ``::0``, ``0:0::0``)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 6 and ip.is_unspecified


def dual_stack(host: str, ipv6_only: bool | None = None) -> bool:
    """Whether a socket bound to ``host`` also takes IPv4 (``IPV6_V6ONLY`` off): by default
    only the IPv6 wildcard is dual-stack; ``ipv6_only`` (the config's) decides when set."""
    if family_for_host(host) != socket.AF_INET6:
        return False
    return not ipv6_only if ipv6_only is not None else is_ipv6_wildcard(host)


def receives_from(
    host: str, ipv6_only: bool | None, client: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bool:
    """Whether a socket bound to ``host`` can receive from ``client`` (already normalised,
    IPv4-mapped -> IPv4): an IPv4 socket only from IPv4, an IPv6 one from IPv6, and from IPv4
    too when dual-stack on the wildcard or an IPv4-mapped address (which takes only IPv4)."""
    bound = ipaddress.ip_address(host.split("%", 1)[0])
    if bound.version == 4:
        return client.version == 4
    mapped = bound.ipv4_mapped is not None
    if client.version == 6:
        return not mapped
    return (bound.is_unspecified or mapped) and dual_stack(host, ipv6_only)


def canonical_host(host: str) -> str:
    """An IP literal as the kernel writes it (``0:0::0`` -> ``::``); anything else unchanged."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def listen_text(host: str, port: int) -> str:
    """A listening address as logs, control and metrics show it: ``ip:port`` or ``[ip6]:port``,
    the IP in its canonical form (``[0:0::0]`` -> ``[::]``)."""
    host = canonical_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_udp(
    host: str, port: int, options: SocketOptions | None = None, *, pktinfo: bool = False
) -> socket.socket:
    """A UDP socket bound to ``host``:``port`` with ``options`` (the IPv6 wildcard dual-stack
    unless ``options.ipv6_only`` says otherwise); OSError, with nothing left open, if refused.
    ``pktinfo``: a server's, whose replies leave from their requests' destinations
    (``enable_pktinfo``)."""
    family = family_for_host(host)
    sock = open_socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # Dual stack for the wildcard, so one [::] server also answers IPv4 clients.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not dual_stack(host)))
        if options is not None:
            options.apply(sock, family)
        if pktinfo:
            enable_pktinfo(sock, host)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def enable_pktinfo(sock: socket.socket, host: str) -> bool:
    """On a socket for ``host`` that is a wildcard (``0.0.0.0``, ``::``), ask for each
    datagram's destination (``IP_PKTINFO``; ``IPV6_RECVPKTINFO``, and ``IP_PKTINFO`` too for
    IPv4 on a dual-stack socket), so that a reply can leave from the address its request came
    to (``reply_pktinfo``); False, and nothing set, for a specific address, which needs none.
    False too where refused (replies then leave as the routes say).  Call it after
    ``IPV6_V6ONLY`` is settled."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if not ip.is_unspecified:
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
                return True
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    except OSError as exc:
        log.info("replies on %s may leave from another address: %s", host, exc)
        return False
    return True


def receives_pktinfo(sock: socket.socket) -> bool:
    """Whether ``enable_pktinfo`` set ``sock`` up."""
    try:
        if sock.family == socket.AF_INET6:
            return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO))
        return bool(sock.getsockopt(socket.IPPROTO_IP, IP_PKTINFO))
    except OSError:
        return False


def reply_pktinfo(buf: bytearray | memoryview, at: int, level: int, kind: int) -> bool:
    """Turn a received ``level``/``kind`` control message whose data starts at ``buf[at]``,
    in place, into the one a reply is sent with so it leaves from the request's destination;
    False if it is not one to echo.

    ``struct in_pktinfo``: the kernel sends from ``ipi_spec_dst``, which it set on receipt to
    the destination (for a broadcast, the interface's address); ``struct in6_pktinfo``: from
    ``ipi6_addr``, the destination (a multicast one is not echoed: the kernel picks).  The
    interface index is zeroed, as chronyd does, so the routes pick the way out (a request may
    come in where its reply does not go out), except for a link-local address, which needs
    it.  An IPv4-mapped ``in6_pktinfo`` (IPv4 on a dual-stack socket) is not echoed: the
    ``in_pktinfo`` beside it is."""
    if level == socket.IPPROTO_IP:
        if kind != IP_PKTINFO:
            return False
        buf[at : at + 4] = _ZERO4
        return True
    if level != socket.IPPROTO_IPV6 or kind != socket.IPV6_PKTINFO:
        return False
    high, mid = _IN6_HEAD.unpack_from(buf, at)
    if high >> 56 == 0xFF or (not high and mid == 0xFFFF):  # multicast, IPv4-mapped
        return False
    if high >> 54 != _LINK_LOCAL:
        buf[at + 16 : at + 20] = _ZERO4
    return True


def find_pktinfo(buf: bytearray | memoryview, at: int, end: int) -> int:
    """The offset of the control message among those in ``buf[at:end]`` that a reply echoes,
    made ready by ``reply_pktinfo``, shifted left 8 bits, plus its length; 0 if none."""
    # An IPv4 datagram's (dual stack too) is the last the kernel writes: one look, one write.
    last = end - _IN_PKTINFO_SPACE
    if last >= at:
        length, level, kind = CMSGHDR.unpack_from(buf, last)
        if length == _IN_PKTINFO_CMSG_LEN and kind == IP_PKTINFO and level == socket.IPPROTO_IP:
            buf[last + CMSGHDR.size : last + CMSGHDR.size + 4] = _ZERO4  # as reply_pktinfo
            return last << 8 | _IN_PKTINFO_CMSG_LEN
    last = end - _IN6_PKTINFO_SPACE  # and an IPv6 datagram's
    if last >= at:
        length, level, kind = CMSGHDR.unpack_from(buf, last)
        if length == _IN6_PKTINFO_CMSG_LEN and reply_pktinfo(buf, last + CMSGHDR.size, level, kind):
            return last << 8 | _IN6_PKTINFO_CMSG_LEN
    while at + CMSGHDR.size <= end:
        length, level, kind = CMSGHDR.unpack_from(buf, at)
        if length < CMSGHDR.size:
            break
        if level != socket.SOL_SOCKET and reply_pktinfo(buf, at + CMSGHDR.size, level, kind):
            found: int = at << 8 | length
            return found
        at += (length + 7) & ~7
    return 0


def reply_control(ancdata: list[tuple[int, int, bytes]]) -> Control:
    """The control message a reply to the datagram with ``ancdata`` echoes (``reply_pktinfo``),
    as ``socket.sendmsg`` takes it; empty if none."""
    for level, kind, data in ancdata:
        payload = bytearray(data)
        if level != socket.SOL_SOCKET and reply_pktinfo(payload, 0, level, kind):
            return [(level, kind, bytes(payload))]
    return []


def cmsg_bytes(control: Control) -> bytes:
    """``control`` as the raw ``struct cmsghdr`` sequence ``sendmsg`` reads."""
    out = b""
    for level, kind, data in control:
        n = socket.CMSG_LEN(len(data))
        out += CMSGHDR.pack(n, level, kind) + data + bytes(socket.CMSG_SPACE(len(data)) - n)
    return out


def send_with(
    sock: socket.socket, data: bytes, address: Address, control: Control, flags: int = 0
) -> None:
    """``sock.sendto``, or ``sendmsg`` when there are control messages (``reply_control``)."""
    if control:
        sock.sendmsg([data], control, flags, address)
    else:
        sock.sendto(data, flags, address)


def ensure_port_free(host: str, port: int, options: SocketOptions | None = None) -> None:
    """OSError (EADDRINUSE) if a socket already holds ``host``:``port``, even one that would
    let a ``SO_REUSEPORT`` socket join it: a probe bound without sharing options, closed at
    once.  Port 0 is always free."""
    if port == 0:
        return
    shared = options or SocketOptions()
    bind_udp(host, port, SocketOptions(ipv6_only=shared.ipv6_only)).close()


def routed_source_ip(address: Address) -> str | None:
    """The address the kernel sends datagrams to ``address`` from, when the socket is not bound
    to one (None: no route, or the lookup was refused).  Connecting a UDP socket sends nothing;
    it only looks the route up."""
    try:
        with open_socket(family_for_host(str(address[0])), socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return str(normalize_ip(str(probe.getsockname()[0])))
    except (OSError, ValueError):
        return None


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
    On a socket that ``enable_pktinfo`` set up (a server's on a wildcard), ``reply_control``
    is, during the call, what a reply to the datagram sends with (``sendto``'s ``control``).
    """

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: DatagramHandler,
        *,
        on_tx_timestamp: TxStampHandler | None = None,
    ) -> None:
        self.sock = sock
        self._on_datagram = on_datagram
        self._on_tx_timestamp = on_tx_timestamp
        self.sent = 0  # datagrams handed to the kernel; the next one gets key ``sent``
        # A client's request: give the CPU up right after sending (``_sendto_stamped``), and
        # warm the kernel's send path (``warmsend.client_warmer``) after the request, or before
        # it with ``warm_before`` (interleaved: net/warmsend.py says why).
        self.yield_after_send = False
        self.warmer: SendWarmer | None = None
        self.warm_before = False
        self.tx_timestamps = False
        if on_tx_timestamp is not None and enable_tx_timestamps(sock):
            self.tx_timestamps = True
            self.timestamps = TimestampSource("kernel-timestamping")
        else:
            self.timestamps = enable_rx_timestamps(sock)
        self.pktinfo = receives_pktinfo(sock)
        self._cmsg_space = _CMSG_SPACE + PKTINFO_SPACE if self.pktinfo else _CMSG_SPACE
        self.reply_control: Control = []
        # During ``on_datagram``: the kernel stamped that datagram (False: the clock was read
        # after recvmsg), for chronyc ntpdata's "RX timestamping".
        self.rx_kernel_stamped = False
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
        on_tx_timestamp: TxStampHandler | None = None,
        options: SocketOptions | None = None,
        pktinfo: bool = False,
    ) -> TimestampedUdp:
        """Bind a socket on an IP literal (``::`` listens on IPv4 too) and start reading;
        ``pktinfo``: a server's (``bind_udp``)."""
        if reuse_port:
            options = dataclasses.replace(options or SocketOptions(), reuse_port=True)
        sock = bind_udp(host, port, options, pktinfo=pktinfo)
        return cls(sock, on_datagram, on_tx_timestamp=on_tx_timestamp)

    @property
    def local_address(self) -> Address:
        """The bound (host, port, ...) of the socket."""
        addr: Address = self.sock.getsockname()
        return addr

    def _read_ready(self) -> None:
        if self.tx_timestamps:
            # A queued TX stamp wakes the reader (EPOLLERR) until it is read.
            self.read_tx_timestamps()
        for _ in range(_BATCH):
            try:
                data, ancdata, _flags, address = self.sock.recvmsg(
                    READ_SIZE, self._cmsg_space, self._flags
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors (port unreachable) surface here on Linux; they are not fatal.
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.debug("recvmsg failed: %s", exc)
                continue
            rx_ns = rx_timestamp_ns(ancdata)
            self.rx_kernel_stamped = rx_ns is not None
            if rx_ns is None:
                rx_ns = time.time_ns()
            if self.pktinfo:
                self.reply_control = reply_control(ancdata)
            self._on_datagram(data, address, rx_ns)

    def sendto(self, data: bytes, address: Address, control: Control | None = None) -> bool:
        """Send one datagram now, with ``control`` (``reply_control``); False if the kernel
        refused it (logged, never raised)."""
        try:
            if self.tx_timestamps:
                return self._sendto_stamped(data, address, control or [])
            send_with(self.sock, data, address, control or [], self._flags)
            self.sent += 1
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

    def _sendto_stamped(self, data: bytes, address: Address, control: Control) -> bool:
        """Send with the socket out of the event loop's epoll set, then read the TX stamp.

        The kernel queues the TX stamp and wakes the socket's waiters between taking the stamp
        and handing the datagram on; an epoll registration makes that wake-up run epoll's
        callback, which on loopback delayed the datagram by about 1.5 µs after its stamp (a
        bias of half that in every offset).  Two epoll_ctl calls per request are cheap.
        """
        fd = self.sock.fileno()
        warmer = self.warmer
        now_ns = time.monotonic_ns() if warmer is not None else 0
        self._loop.remove_reader(fd)
        try:
            if warmer is not None and self.warm_before:
                warmer.warm(now_ns)
            send_with(self.sock, data, address, control, self._flags)
            self.sent += 1
            if warmer is not None and not self.warm_before:
                warmer.warm(now_ns)  # for the server, which runs next (net/warmsend.py)
            if self.yield_after_send:
                # The server our request just woke is usually queued on this CPU (a socket's
                # readers are woken "sync", to run where the waker runs): yielding lets it
                # answer now, on a CPU whose send path is warm, instead of after our
                # bookkeeping or on the other CPU, cold.  Its Transmit, read before its send,
                # then errs less: on loopback against chronyd (bench/README.md, "Precision")
                # basic-mode p95 3.3-3.9 µs against 5.0-6.0 µs without, chronyd's own client
                # 2.5-2.9 µs in the same runs.
                os.sched_yield()
        finally:
            self._loop.add_reader(fd, self._read_ready)
        # On loopback and most NICs the software stamp is queued inside sendto.
        self.read_tx_timestamps()
        if warmer is not None:
            warmer.sent(now_ns)  # drain the warm-up datagram
        return True

    def read_tx_timestamps(self) -> None:
        """Drain the error queue: report each kernel TX stamp with its datagram's key."""
        for _ in range(_BATCH):
            try:
                _data, ancdata, _flags, _address = self.sock.recvmsg(
                    0, _TX_CMSG_SPACE, socket.MSG_ERRQUEUE | self._flags
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("reading the error queue failed: %s", exc)
                return
            stamp = tx_timestamp(ancdata)
            if stamp is not None and self._on_tx_timestamp is not None:
                self._on_tx_timestamp(*stamp)


_TX_CMSG_SPACE: Final = _CMSG_SPACE + socket.CMSG_SPACE(_SOCK_EXTENDED_ERR.size + 32)


def enable_tx_timestamps(sock: socket.socket) -> bool:
    """Ask for software RX and TX stamps (TX ones numbered, without the packet); False if
    the kernel refuses, and then RX stamps are set up as ``enable_rx_timestamps`` does."""
    try:
        sock.setsockopt(
            socket.SOL_SOCKET,
            SO_TIMESTAMPING,
            SOF_TIMESTAMPING_RX_SOFTWARE
            | SOF_TIMESTAMPING_TX_SOFTWARE
            | SOF_TIMESTAMPING_SOFTWARE
            | SOF_TIMESTAMPING_OPT_ID
            | SOF_TIMESTAMPING_OPT_TSONLY,
        )
        return True
    except OSError:
        return False


def tx_timestamp(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """(datagram key, Unix ns) of a TX stamp read from the error queue, if it is one.

    The key is the kernel's ``SOF_TIMESTAMPING_OPT_ID`` counter: 0 for the first datagram
    sent after the option was set, then one more per datagram (``TimestampedUdp.sent``).
    """
    ns: int | None = None
    key: int | None = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING:
            ns = software_stamp_ns(data) or ns
        elif _is_recverr(level, kind) and len(data) >= _SOCK_EXTENDED_ERR.size:
            fields = _SOCK_EXTENDED_ERR.unpack_from(data)
            if fields[1] == SO_EE_ORIGIN_TIMESTAMPING:  # ee_origin; ee_data is the key
                key = int(fields[6])
    if ns is None or key is None:
        return None
    return key, ns


def _is_recverr(level: int, kind: int) -> bool:
    return (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR))


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """Per-socket options from the config: DSCP (RFC 2474 code point) and IPV6_V6ONLY."""

    dscp: int = 0  # 0..63; 46 (EF) is the usual choice for time traffic
    ipv6_only: bool | None = None  # None: the default for the bound address
    reuse_addr: bool = False  # SO_REUSEADDR: share a port that receives broadcasts
    broadcast: bool = False  # SO_BROADCAST: may send to a broadcast address
    reuse_port: bool = False  # SO_REUSEPORT: a server port a symmetric peer's socket shares

    def apply(self, sock: socket.socket, family: socket.AddressFamily) -> None:
        """Set the options on an unbound socket of ``family``."""
        if self.reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            if self.ipv6_only is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(self.ipv6_only))
            if self.dscp:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, self.dscp << 2)
        if self.dscp:
            # A dual-stack IPv6 socket sends IPv4 with the IPv4 TOS; setting it is harmless.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self.dscp << 2)


class BroadcastRoutes:
    """Asks the kernel's routes whether an address is an IPv4 broadcast one: the limited
    broadcast or a directed broadcast of one of our interfaces (loopback's 127.255.255.255
    too), which the host's netmasks decide.  A UDP socket without ``SO_BROADCAST`` is refused
    (EACCES) a ``connect()`` there; nothing is sent.  One socket, reused (about 1 µs a
    question, against 8 µs with a socket each); ``close()`` it.  Without a socket (refused:
    a simulator), every answer is no."""

    def __init__(self) -> None:
        try:
            self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            self._sock = None

    def __call__(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether ``ip`` (IPv4-mapped addresses already made IPv4) is a broadcast address."""
        if self._sock is None or ip.version != 4:
            return False  # IPv6 has no broadcast
        try:
            self._sock.connect((str(ip), 123))
        except PermissionError:
            return True
        except OSError:
            return False  # no route, or a simulator's refusal: not known to be broadcast
        return False

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
