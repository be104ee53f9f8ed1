"""The NTP server's per-packet decision, sans-IO: request bytes in, (reason, response) out.

Every request ends as exactly one ``(reason, response)`` pair: ``response`` is None when we stay
silent, and ``reason`` is a stable snake_case label the counters and tests use
(STYLE.md §3).  The response is filled from a ``ResponseTemplate`` that the system process keeps
current, so the per-packet work is parse, check, fill, encode.

Rules (RFC 5905 §9.2, RFC 8633):
* only client-mode (3) requests are answered; symmetric, broadcast and the amplification-prone
  control (6) and private (7) modes are dropped;
* the reply echoes the request's version and poll, and its transmit timestamp as our origin;
* the reply is never longer than the request (no amplification): we answer with a bare 48-byte
  header, and requests are at least that long;
* access control applies to the client's IP, IPv4-mapped IPv6 addresses compared as IPv4, deny
  winning over allow.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Final, Protocol

from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ANSWERED: Final = "answered"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseTemplate:
    """The system variables a reply carries; replaced whole when the system state changes."""

    leap: Leap = Leap.UNSYNCHRONIZED
    stratum: int = 0  # 0 on the wire means unspecified (16, unsynchronized)
    precision: int = -20  # log2 s
    root_delay: int = 0  # raw NTP short
    root_dispersion: int = 0  # raw NTP short
    reference_id: int = 0
    reference_ts: int = 0  # raw NTP64


class ExtensionResponder(Protocol):
    """Answers requests that carry extension fields (NTS, RFC 8915); see tsyncd/nts/server.py.

    Gets the request bytes, the decoded request and the plain response we would send, and
    returns the (reason, response) pair instead; it must never answer with more bytes than it
    received.
    """

    def respond(
        self, data: bytes, request: NtpPacket, plain: NtpPacket
    ) -> tuple[str, bytes | None]: ...


class AccessList:
    """Allow/deny by CIDR.  Empty allow means everyone; deny always wins."""

    def __init__(self, allow: tuple[IPNetwork, ...], deny: tuple[IPNetwork, ...]) -> None:
        self._allow = allow
        self._deny = deny

    def permits(self, ip: IPAddress) -> bool:
        """Whether ``ip`` (already normalised: IPv4-mapped -> IPv4) may be served."""
        if any(ip in net for net in self._deny):
            return False
        return not self._allow or any(ip in net for net in self._allow)


class NtpResponder:
    """Answers client requests from the current template; counts every outcome."""

    def __init__(self, access: AccessList) -> None:
        self.template = ResponseTemplate()
        self.access = access
        self.received = 0
        self.sent = 0
        self.outcomes: Counter[str] = Counter()
        self.extensions: ExtensionResponder | None = None  # NTS, when configured

    def handle_request(
        self, data: bytes, client: IPAddress, rx_ns: int, tx_ns: int
    ) -> tuple[str, bytes | None]:
        """Decide on one request received at ``rx_ns``; ``tx_ns`` is the clock read just now."""
        self.received += 1
        reason, response = self._decide(data, client, rx_ns, tx_ns)
        self.outcomes[reason] += 1
        if response is not None:
            self.sent += 1
        return reason, response

    def _decide(
        self, data: bytes, client: IPAddress, rx_ns: int, tx_ns: int
    ) -> tuple[str, bytes | None]:
        if not self.access.permits(client):
            return "denied", None
        try:
            request = decode_ntp(data)
        except WireError as exc:
            return f"malformed_{exc.reason}", None
        if request.mode != Mode.CLIENT:
            return "not_client_mode", None
        t = self.template
        receive_ts = ntp64_from_unix_ns(rx_ns)
        transmit_ts = ntp64_from_unix_ns(max(tx_ns, rx_ns))
        if transmit_ts == receive_ts:
            # RFC 9769: a reply whose transmit equals its receive would look interleaved.
            transmit_ts = (transmit_ts + 1) & 0xFFFF_FFFF_FFFF_FFFF
        response = NtpPacket(
            leap=t.leap,
            version=request.version,
            mode=Mode.SERVER,
            stratum=t.stratum,
            poll=request.poll,
            precision=t.precision,
            root_delay=t.root_delay,
            root_dispersion=t.root_dispersion,
            reference_id=t.reference_id,
            reference_ts=t.reference_ts,
            origin_ts=request.transmit_ts,
            receive_ts=receive_ts,
            transmit_ts=transmit_ts,
        )
        if request.extensions and self.extensions is not None:
            return self.extensions.respond(data, request, response)
        return ANSWERED, encode_ntp(response)

    @property
    def dropped(self) -> int:
        """Requests that got no answer."""
        return self.received - self.sent

    def drops_by_reason(self) -> dict[str, int]:
        """Outcome counts except answered ones."""
        answered = (ANSWERED, "answered_nts", "nts_nak")  # the NTS NAK is a KoD, i.e. an answer
        return {k: v for k, v in self.outcomes.items() if k not in answered}
