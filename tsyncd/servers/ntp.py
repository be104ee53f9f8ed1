"""The NTP server's IO edge on the event loop: a timestamped UDP socket feeding the responder.

This is the single-process server (``workers = 0``) and the shape the multi-core workers copy:
kernel RX timestamps in, and for interleaving clients the kernel's TX timestamp of each
response read back from the socket's error queue (``servers/txstamp.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tsyncd.clock.base import Clock
from tsyncd.net.udp import (
    Address,
    BroadcastRoutes,
    Control,
    SocketOptions,
    TimestampedUdp,
    ensure_port_free,
    listen_text,
    normalize_ip,
)
from tsyncd.net.warmsend import SendWarmer
from tsyncd.servers import txstamp
from tsyncd.servers.latetx import BASIC, LATE_KODS, SendLag
from tsyncd.servers.lonesend import LoneSend, SocketLoneSend, address_send, send_staged
from tsyncd.servers.passive import is_symmetric_active, passive_reply
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.servers.sealtx import LateTransmit

log = logging.getLogger(__name__)


class NtpServer:
    """Answers NTP client requests on one listening address."""

    def __init__(self, responder: NtpResponder, clock: Clock) -> None:
        self.responder = responder
        self._clock = clock
        self._udp: TimestampedUdp | None = None
        self._tx_stamps = False
        self._lag = SendLag()
        self._warmer: SendWarmer | None = None  # with the socket (warmsend.py)
        self._lone: LoneSend | SocketLoneSend | None = None  # basic replies (lonesend.py)
        self._late: LateTransmit | None = None  # NTS replies (sealtx.py)
        self._broadcast_routes: BroadcastRoutes | None = None  # bad sources (responder.py)
        self.passive_answered = 0  # symmetric active packets answered in mode 2
        self.steered = True  # one client log: each client always meets it (WorkerPool's)
        self.symmetric_passive = False  # off: the responder drops mode 1 like other modes

    @classmethod
    def create(
        cls,
        host: str,
        port: int,
        access: AccessList,
        clock: Clock,
        *,
        responder: NtpResponder | None = None,
        options: SocketOptions | None = None,
    ) -> NtpServer:
        """Bind and start serving (on the running loop); OSError if the address is taken."""
        if options is not None and options.reuse_port:
            ensure_port_free(host, port, options)  # shared with a peer's socket, not a stranger
        server = cls(responder or NtpResponder(access), clock)
        # On a wildcard, replies leave from their request's destination (udp.enable_pktinfo).
        server._udp = TimestampedUdp.bind(
            host, port, server._on_datagram, options=options, pktinfo=True
        )
        server._tx_stamps = server._udp.timestamps.name == "kernel-timestamping"
        server._lone = address_send(server._udp.sock)
        server._broadcast_routes = BroadcastRoutes()
        server.responder.broadcast_routes = server._broadcast_routes
        server._warmer = SendWarmer(server._udp.sock, server._lone.send_raw)
        # NTS replies' Transmit, read just before their seal (used once NTS is served).
        server._late = LateTransmit(clock.from_kernel_ns, server._warmer.warm)
        server.responder.late_transmit = server._late
        return server

    @property
    def listen(self) -> str:
        """The bound address as 'ip:port' or '[ip6]:port'."""
        if self._udp is None:
            return ""
        addr = self._udp.local_address
        return listen_text(str(addr[0]), addr[1])

    def _on_datagram(self, data: bytes, address: Address, rx_ns: int) -> None:
        assert self._udp is not None
        clock = self._clock
        rx = clock.from_kernel_ns(rx_ns)
        control = self._udp.reply_control  # the source address replies leave from, if chosen
        if self.symmetric_passive and is_symmetric_active(data):
            # A peer in mode 2, sent as a client's reply is (late Transmit or kernel TX stamp).
            reason, response, want_tx = passive_reply(
                data, self.responder, normalize_ip(str(address[0])), rx, clock.now_ns(), address[1]
            )
            self.passive_answered += response is not None
        else:
            late = self._late
            if late is not None:
                late.read_ns = 0  # set if an NTS seal reads the Transmit itself
            reason, response, want_tx = self.responder.respond(
                data, str(address[0]), rx, clock.now_ns(), address[1]
            )
            if response is not None and late is not None and late.read_ns:
                if self._tx_stamps and late.wants_stamp(want_tx):
                    late.send_stamped(self._udp.sock, response, address, self._on_stamp, control)
                else:
                    self._udp.sendto(response, address, control)
                if self._warmer is not None:
                    self._warmer.sent(late.read_ns)  # drain the warm-up (LateTransmit.warm)
                return
        if response is None:
            log.debug("dropped request from %s: %s", address[0], reason)
            return
        if (reason == BASIC or reason in LATE_KODS) and self._lone is not None:
            self._send_basic(self._lone, response, address, rx_ns, rx, want_tx, control)
            return
        sock = self._udp.sock
        if want_tx and self._tx_stamps:
            if txstamp.send_stamped(sock, response, address, control):
                for payload, tx_ns in txstamp.read_stamps(sock):
                    self._on_stamp(payload, tx_ns)
        else:
            self._udp.sendto(response, address, control)

    def _on_stamp(self, payload: bytes, tx_ns: int) -> None:
        """The kernel's TX stamp (host ns) of the reply whose header is ``payload``."""
        self.responder.handle_tx_timestamp(payload, self._clock.from_kernel_ns(tx_ns))

    def _send_basic(
        self,
        lone: LoneSend | SocketLoneSend,
        response: bytes,
        address: Address,
        rx_ns: int,
        rx: int,
        want_tx: bool,
        control: Control,
    ) -> None:
        """Send a basic reply (or a KoD) with its Transmit read right before the system call,
        plus the learnt lag (latetx.py): everything else is done before the read
        (lonesend.py).  ``control``: the source address (``udp.reply_control``)."""
        assert self._udp is not None
        clock, lag = self._clock, self._lag
        if self._warmer is not None:
            self._warmer.warm(rx_ns)  # after a quiet spell the send path is cold
        before = time.time_ns()  # the host clock, which kernel stamps use
        stamped = self._tx_stamps and (want_tx or lag.due(before))
        lone.stage_to(address, response, stamped, control)
        read = send_staged(
            lone,
            lag,
            self._udp.sock,
            response,
            stamped=stamped,
            busy_ns=before - rx_ns,
            shift_ns=clock.from_kernel_ns(before) - before,
            after_ns=rx,
            on_stamp=self._on_stamp,
        )
        if self._warmer is not None:
            self._warmer.sent(read)

    def set_template(self, template: ResponseTemplate) -> None:
        """Serve ``template`` from now on."""
        self.responder.template = template

    @property
    def access(self) -> AccessList:
        """The allow/deny rules clients are judged by."""
        return self.responder.access

    def set_access(self, access: AccessList) -> None:
        """Judge clients by ``access`` from now on, those already known too."""
        self.responder.set_access(access)

    def counters(self) -> dict[str, Any]:
        """The responder's counters (see ``NtpResponder.counters``)."""
        return self.responder.counters()

    def client_keys(self) -> tuple[list[str], int]:
        """The client log's keys (``WorkerPool.client_keys``' form: none unknown)."""
        return list(self.responder.clients.records), 0

    def client_rows(self, now_ns: int) -> list[dict[str, Any]]:
        """Per-client rows for ``tsyncctl clients``."""
        return self.responder.client_rows(now_ns)

    def close(self) -> None:
        """Stop serving."""
        if self._broadcast_routes is not None:
            self._broadcast_routes.close()
            self._broadcast_routes = None
        if self._warmer is not None:
            self._warmer.close()
            self._warmer = None
        if self._udp is not None:
            self._udp.close()
