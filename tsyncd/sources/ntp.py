"""An NTP server source's IO edge: one UDP socket with kernel receive timestamps.

Everything else (when to poll, whether a reply is good, filtering) lives in the sans-IO
``SyncCore``; this adapter only sends the core's requests and hands back what arrives.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from tsyncd.net.udp import (
    Address,
    SocketOptions,
    TimestampedUdp,
    TxStampHandler,
    normalize_ip,
    routed_source_ip,
)
from tsyncd.snapshots import SourceSnapshot
from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.core import SourceState
from tsyncd.wire.ntp import Leap, refid_for_address, refid_to_str

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
    ) -> None:
        self.name = name
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
                on_tx(self.name, tx_ns)

        return on_tx_stamp

    def send(self, data: bytes) -> bool:
        """Send one request now; False if the kernel refused it."""
        udp = self._request_socket()
        if udp is None:
            return False
        self._last_key = udp.sent
        return udp.sendto(data, self.peer)

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
        )


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
