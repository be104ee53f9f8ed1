"""Simulated NTP servers: the real sans-IO ``NtpResponder`` on a perfect (or wrong) clock."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Final

from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns, short_from_ns

from .network import PathSpec

NS_PER_S: Final = 1_000_000_000
CLIENT_IP: Final = ipaddress.ip_address("192.0.2.1")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    """One stratum-1 server and the path to it."""

    name: str
    path: PathSpec = field(default_factory=PathSpec)
    offset_ns: int = 0  # the server's clock minus true time (a falseticker when large)
    dies_at_s: float | None = None  # stops answering at this simulated time
    processing_ns: int = 1_000  # between receive and transmit timestamps
    # KoD RATE rate limiting: a bucket of ``rate_burst`` requests refilled one per
    # ``rate_interval_s``; a request finding it empty gets a RATE kiss (RFC 5905 §7.4).
    rate_interval_s: float | None = None
    rate_burst: int = 4
    kod_poll: int = 0  # poll hint in the KoD (0: echo the request's)


class SimServer:
    """Answers requests with the real responder, or a KoD RATE, or not at all (dead)."""

    def __init__(self, spec: ServerSpec, start_ns: int) -> None:
        self.spec = spec
        self.start_ns = start_ns
        self.responder = NtpResponder(AccessList((), ()))
        self.responder.template = ResponseTemplate(
            leap=Leap.NONE,
            stratum=1,
            precision=-24,
            root_delay=0,
            root_dispersion=short_from_ns(10_000),
            reference_id=refid_from_ascii("GPS"),
        )
        self.requests = 0  # arrived (answered or not)
        self.request_times_ns: list[int] = []  # true arrival times
        self.kods_sent = 0
        self._tokens = float(spec.rate_burst)
        self._last_refill_ns = start_ns

    def alive(self, true_ns: int) -> bool:
        """Whether the server still answers at ``true_ns``."""
        dies = self.spec.dies_at_s
        return dies is None or true_ns < self.start_ns + round(dies * NS_PER_S)

    def handle(self, data: bytes, true_ns: int) -> bytes | None:
        """A request arriving at true time ``true_ns``: the response bytes, or None."""
        self.requests += 1
        self.request_times_ns.append(true_ns)
        if not self.alive(true_ns):
            return None
        local_ns = true_ns + self.spec.offset_ns
        if self._rate_limited(true_ns):
            return self._kod(data, local_ns)
        # The reference time is "the last time this server was set": one second ago.
        self.responder.template = dataclasses.replace(
            self.responder.template, reference_ts=ntp64_from_unix_ns(local_ns - NS_PER_S)
        )
        _, response = self.responder.handle_request(
            data, CLIENT_IP, local_ns, local_ns + self.spec.processing_ns
        )
        return response

    def _rate_limited(self, true_ns: int) -> bool:
        interval = self.spec.rate_interval_s
        if interval is None:
            return False
        elapsed = (true_ns - self._last_refill_ns) / NS_PER_S
        self._last_refill_ns = true_ns
        self._tokens = min(float(self.spec.rate_burst), self._tokens + elapsed / interval)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return False
        return True

    def _kod(self, data: bytes, local_ns: int) -> bytes | None:
        try:
            request = decode_ntp(data)
        except WireError:
            return None
        if request.mode != Mode.CLIENT:
            return None
        self.kods_sent += 1
        ts = ntp64_from_unix_ns(local_ns)
        return encode_ntp(
            NtpPacket(
                leap=Leap.UNSYNCHRONIZED,
                version=request.version,
                mode=Mode.SERVER,
                stratum=0,
                poll=self.spec.kod_poll or request.poll,
                precision=-24,
                reference_id=refid_from_ascii("RATE"),
                origin_ts=request.transmit_ts,
                receive_ts=ts,
                transmit_ts=ts,
            )
        )
