"""An NTP server source's IO edge: one UDP socket with kernel receive timestamps.

Everything else (when to poll, whether a reply is good, filtering) lives in the sans-IO
``SyncCore``; this adapter only sends the core's requests and hands back what arrives.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from tsyncd.net.udp import (
    Address,
    SocketOptions,
    TimestampedUdp,
    TxStampHandler,
    normalize_ip,
    routed_source_ip,
)
from tsyncd.net.warmsend import client_warmer
from tsyncd.snapshots import SourceSnapshot
from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.core import SourceState
from tsyncd.sync.sample import ReplyHeader
from tsyncd.wire.ntp import Leap, refid_for_address, refid_to_str
from tsyncd.wire.timestamps import unix_ns_from_ntp64

log = logging.getLogger(__name__)

_NS = 1e-9
ReplyHandler = Callable[[str, bytes, int], None]  # (source name, data, kernel rx ns)
TxHandler = Callable[[str, int], None]  # (source name, kernel tx ns of its latest request)
DropHandler = Callable[[str, str], None]  # (source name, drop reason) of a datagram dropped here


class NtpSourceSocket:
    """The socket of one source address; replies from anywhere else are counted and dropped."""

    def __init__(
        self,
        *,
        name: str,
        mode: str,
        ip: str,
        port: int,
        options: SocketOptions | None = None,
        local_port: int = 0,
        connect: bool = True,
        bind_ip: str | None = None,
        xleave: bool = False,
    ) -> None:
        self.name = name
        # The source interleaves: its requests' send path is warmed before, not after, each
        # request (net/warmsend.py says why).
        self.xleave = xleave
        self.options = options
        self.local_port = local_port  # peers, broadcast clients: the port packets come to
        self.connect = connect  # peers: connected; broadcast clients accept any source port
        # Peers sharing a [[server]]'s port: that server's address, so our packets leave from
        # the address the peer sends to (None: the wildcard, packets leave as routed).
        self.bind_ip = bind_ip
        self.local_ip: str | None = None  # where our packets leave from, once open
        self._last_key = -1  # TX stamp key of our latest request
        self.mode = mode
        self.ip = str(normalize_ip(ip))
        self.port = port
        # A link-local IPv6 address names its interface ("fe80::1%eth0", as chrony takes it):
        # kept for sending, while ``ip`` (without it) is what replies are matched against.
        self.scope = ip.partition("%")[2] if ":" in self.ip else ""
        self.peer: Address = (
            (self.ip, port, 0, _scope_id(self.scope)) if self.scope else (self.ip, port)
        )
        self.wrong_address = 0
        self._udp: TimestampedUdp | None = None
        # chronyc ntpdata's TX/RX timestamping: "kernel" or "daemon" (the clock read around
        # sendto/recvmsg), for the last valid reply (``valid_reply``); None before one.
        self.tx_timestamping: str | None = None
        self.rx_timestamping: str | None = None
        self._datagram_kernel_rx = False  # the latest datagram passed on had a kernel stamp
        self._request_kernel_tx = False  # the latest request got its kernel TX stamp

    @property
    def address(self) -> str:
        """'ip:port' or '[ip6]:port'."""
        if ":" not in self.ip:
            return f"{self.ip}:{self.port}"
        return f"[{self.ip}%{self.scope}]:{self.port}" if self.scope else f"[{self.ip}]:{self.port}"

    def open(
        self,
        on_reply: ReplyHandler,
        on_tx: TxHandler | None = None,
        on_drop: DropHandler | None = None,
    ) -> None:
        """Bind an ephemeral port (on the running loop) and start reading.

        With ``on_tx``, the kernel's TX stamp of each request is reported (where the kernel
        gives one); stamps of older requests are ignored.  With ``on_drop``, a datagram from
        another address is reported there (``wrong_address``, for the association's drop
        counts), else counted here.
        """

        def on_datagram(data: bytes, address: Address, rx_ns: int) -> None:
            if str(normalize_ip(str(address[0]))) != self.ip or (
                self.connect and address[1] != self.port
            ):
                if on_drop is None:
                    self.wrong_address += 1
                else:
                    on_drop(self.name, "wrong_address")
                return
            self._datagram_kernel_rx = self._udp is not None and self._udp.rx_kernel_stamped
            on_reply(self.name, data, rx_ns)

        wildcard = "::" if ":" in self.ip else "0.0.0.0"
        self._udp = TimestampedUdp.bind(
            self.bind_ip or wildcard,
            self.local_port,
            on_datagram,
            on_tx_timestamp=self.tx_stamp_handler(on_tx),
            options=self.options,
            reuse_port=self.local_port != 0 and self.connect,
        )
        self._udp.yield_after_send = True  # our requests (TimestampedUdp._sendto_stamped)
        self._udp.warmer = client_warmer(self._udp.sock.family)
        self._udp.warm_before = self.xleave
        if self.local_port and self.connect:
            # A connected socket gets this peer's datagrams even where a server socket with
            # SO_REUSEPORT shares the port (the kernel prefers the connected match).
            self._udp.sock.connect(self.peer)
        self.local_ip = self._find_local_ip(self._udp)

    def _find_local_ip(self, udp: TimestampedUdp) -> str | None:
        """The address our packets to the source leave from: the socket's own (bound, or given
        by connecting), else the one the kernel routes from (None if it has no route now)."""
        try:
            host = str(udp.local_address[0])
            if not normalize_ip(host).is_unspecified:
                return str(normalize_ip(host))
        except (OSError, ValueError):
            pass
        return routed_source_ip(self.peer)

    def local_refids(self, own_ips: tuple[str, ...] = ()) -> frozenset[int]:
        """Refids naming us, for the association's loop test: of ``local_ip`` and of
        ``own_ips`` (the addresses our [[server]]s listen on, where others reach us)."""
        ips = (self.local_ip, *own_ips) if self.local_ip is not None else own_ips
        return frozenset(refid_for_address(ip) for ip in ips)

    def tx_stamp_handler(self, on_tx: TxHandler | None) -> TxStampHandler | None:
        """What passes the kernel's TX stamp of our latest request on to ``on_tx``."""
        if on_tx is None:
            return None

        def on_tx_stamp(key: int, tx_ns: int) -> None:
            if key == self._last_key:
                self._request_kernel_tx = True
                on_tx(self.name, tx_ns)

        return on_tx_stamp

    def send(self, data: bytes) -> bool:
        """Send one request now; False if the kernel refused it."""
        udp = self._request_socket()
        if udp is None:
            return False
        self._last_key = udp.sent
        self._request_kernel_tx = False
        return udp.sendto(data, self.peer)

    def valid_reply(self, answered_request: bool) -> None:
        """The datagram just passed on was a valid reply: keep how its receive time was taken
        and, if it ``answered_request`` of ours (not a broadcast), how that request's send time
        was (the association took the kernel's TX stamp if it had come by then)."""
        self.rx_timestamping = _stamp_kind(self._datagram_kernel_rx)
        if answered_request:
            self.tx_timestamping = _stamp_kind(self._request_kernel_tx)

    def _request_socket(self) -> TimestampedUdp | None:
        """The socket requests leave from (None: not open)."""
        return self._udp

    def close(self) -> None:
        """Close the socket."""
        if self._udp is not None:
            self._udp.close()

    def snapshot(
        self, state: SourceState, label: str, reason: str | None, now_ns: int
    ) -> SourceSnapshot:
        """What ``tsyncctl peers`` shows for this source."""
        a = state.association
        est = state.filter.output(now_ns)
        # A silent source keeps showing its last sample, as chronyc's sources does.
        s = est.sample if est is not None else state.filter.latest
        key = getattr(a.auth, "key", None)  # SymmetricKeyAuth's (symkey.py, loaded on use)
        return SourceSnapshot(
            name=self.name,
            address=self.address,
            mode=self.mode,
            state=label,
            state_reason=_stopped(a, reason or a.unusable_reason),
            offset=s.offset_ns * _NS if s else None,
            delay=s.delay_ns * _NS if s else None,
            jitter=est.jitter_ns * _NS if est else None,
            dispersion=est.dispersion_ns * _NS if est else None,
            root_delay=s.root_delay_ns * _NS if s else None,
            root_dispersion=s.root_dispersion_ns * _NS if s else None,
            stratum=s.stratum if s else None,
            reference_id=refid_to_str(s.reference_id, s.stratum) if s else None,
            leap=Leap(s.leap).name.lower() if s else None,
            reach=a.reach,
            poll=a.poll,
            last_rx=(now_ns - a.stats.last_rx_ns) * _NS if a.stats.last_rx_ns is not None else None,
            packets_sent=a.stats.packets_sent,
            packets_received=a.stats.packets_received,
            packets_dropped=a.stats.packets_dropped + self.wrong_address,
            kiss_code=a.stats.kiss_code,
            interleaved=a.interleaved,
            interleaved_replies=a.stats.interleaved_replies,
            online=a.polled_online,
            key_id=key.key_id if key is not None else None,
            key_type=key.kind if key is not None else None,
            options=state.options,
            local_address=self.local_ip,
            tx_timestamping=self.tx_timestamping,
            rx_timestamping=self.rx_timestamping,
            packets_received_total=a.stats.packets_received_total,
            **_header_fields(a.stats.last_reply, now_ns),
        )


def _header_fields(header: ReplyHeader | None, now_ns: int) -> dict[str, Any]:
    """The snapshot's fields from the last valid reply's header (none before one)."""
    if header is None:
        return {}
    ref_ns = unix_ns_from_ntp64(header.reference_ts, now_ns) if header.reference_ts else None
    return {
        "version": header.version,
        "precision": header.precision,
        "reference_time": ref_ns * _NS if ref_ns is not None else None,
        "response_time": header.response_ns * _NS if header.response_ns is not None else None,
    }


def _stamp_kind(kernel: bool) -> str:
    """chronyc ntpdata's words for who took a timestamp (lower case, as JSON has them)."""
    return "kernel" if kernel else "daemon"


def _stopped(association: NtpAssociation, reason: str | None) -> str | None:
    """``reason``, and for a source a KoD DENY/RSTR stopped, that it is not polled and what
    polls it again (QA s19 hunt-client F4: "offline"/"online" said "already")."""
    if not association.stopped:
        return reason
    return f"{reason or 'stopped'}; not polled until tsyncctl online or burst"


def _scope_id(scope: str) -> int:
    """The interface index a scope names ("eth0" or "2"); 0 (none) for an unknown name, so
    sending fails with the kernel's error, logged, rather than the daemon."""
    if scope.isdigit():
        return int(scope)
    try:
        return socket.if_nametoindex(scope)
    except OSError:
        return 0
