"""Broadcast server: every ``interval`` seconds, one mode 5 packet to a broadcast address or
a multicast group (IPv6 ``ff0X::101``, IPv4 ``224.0.1.1``; IPv6 has no broadcast).

Off unless a ``[[broadcast]]`` table is configured.  RFC 8633 §5.5 advises against broadcast
mode: clients cannot measure the path delay (they assume one) and, without authentication,
anyone on the segment can impersonate the server.  Use it only on a trusted LAN for clients
that need no better than milliseconds.  The packet carries our system variables from the same
template the unicast server answers from, and our time as its Transmit, read just before
sending; an unsynchronized tsyncd (stratum 16) sends nothing, so broadcast clients never learn
time from a server that does not know it.  Multicast packets leave on ``interface`` (else as
the kernel routes the group) with at most ``ttl`` hops (1 by default: this link only, where the
RFC 8633 advice keeps broadcast time anyway); members of the group on this host hear them too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable

from tsyncd.clock.base import Clock
from tsyncd.config_broadcast import is_multicast
from tsyncd.net.multicast import set_multicast_sender
from tsyncd.net.udp import SocketOptions, TimestampedUdp, family_for_host
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, encode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns

log = logging.getLogger(__name__)


def broadcast_packet(template: ResponseTemplate, interval_s: float, now_ns: int) -> bytes | None:
    """The mode 5 packet to send now, or None while we have no time to give."""
    if template.leap == Leap.UNSYNCHRONIZED or not 1 <= template.stratum <= 15:
        return None
    return encode_ntp(
        NtpPacket(
            leap=template.leap,
            version=4,
            mode=Mode.BROADCAST,
            stratum=template.stratum,
            poll=max(-128, min(127, math.ceil(math.log2(interval_s)))),
            precision=template.precision,
            root_delay=template.root_delay,
            root_dispersion=template.root_dispersion,
            reference_id=template.reference_id,
            reference_ts=template.reference_ts,
            transmit_ts=ntp64_from_unix_ns(now_ns),
        )
    )


class BroadcastSender:
    """Sends our time to one broadcast address or multicast group until cancelled."""

    def __init__(
        self,
        host: str,
        port: int,
        interval_s: float,
        clock: Clock,
        template: Callable[[], ResponseTemplate],
        *,
        dscp: int = 0,
        interface: str | None = None,
        ttl: int = 1,
    ) -> None:
        self.host = host
        self.port = port
        self.interval_s = interval_s
        self.sent = 0
        self._clock = clock
        self._template = template
        self._dscp = dscp
        self._interface = interface  # multicast: the outgoing interface (None: by route)
        self._ttl = ttl  # multicast: hop limit

    async def run(self) -> None:
        """Open the socket and send every ``interval_s`` (the first packet at once)."""
        family = family_for_host(self.host)
        udp = TimestampedUdp.bind(
            "0.0.0.0" if family == socket.AF_INET else "::",
            0,
            lambda _data, _address, _rx: None,
            options=SocketOptions(dscp=self._dscp, broadcast=family == socket.AF_INET),
        )
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if is_multicast(self.host):
            try:
                set_multicast_sender(udp.sock, family, self._interface, self._ttl)
            except OSError as exc:  # no such interface: say so, send nothing
                log.error(
                    "cannot send NTP multicasts to %s (interface %s): %s",
                    where,
                    self._interface,
                    exc,
                )
                udp.close()
                return
        log.warning(
            "sending NTP broadcasts to %s every %g s (RFC 8633: trusted networks only)",
            where,
            self.interval_s,
        )
        try:
            while True:
                packet = broadcast_packet(self._template(), self.interval_s, self._clock.now_ns())
                if packet is not None and udp.sendto(packet, (self.host, self.port)):
                    self.sent += 1
                await asyncio.sleep(self.interval_s)
        finally:
            udp.close()
