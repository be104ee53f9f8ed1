"""One NTP client association, sans-IO: when to poll, what to send, whether a reply is good.

Theory of operation
-------------------
The IO adapter calls ``handle_timer(now)`` when ``next_deadline_ns()`` has passed and sends the
bytes it gets back, then reports the real send time with ``handle_sent``.  Each datagram from the
server goes to ``handle_reply(data, rx_ns)``, which runs the RFC 5905 §9.2 (Figure 22) checks in
a fixed order, each with a stable drop reason, and returns a ``Sample`` for a good reply.

Privacy (RFC 9109 / RFC 8633): requests carry nothing about us, and their transmit timestamp is a
random cookie rather than our clock; we remember our real send time locally.  The cookie is also
what makes the origin check (test 2) strong: a blind spoofer must guess 64 random bits.

Reachability is the RFC 5905 §13 eight-bit shift register, shifted at each poll and with bit 0 set
by a good reply.  Poll intervals start at ``min_poll`` and follow the discipline's recommendation
(``set_system_poll``) within ``min_poll``..``max_poll``; ``iburst`` sends the first
``_IBURST_COUNT`` requests at most 2 s apart.  A KoD RATE doubles the interval; DENY and RSTR stop
the association for good (RFC 5905 §7.4) — both only after the origin check, so a spoofed KoD
cannot silence us (RFC 8633 §5.4).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Final, Protocol

from tsyncd.sync.sample import MAXDISP_NS, PHI_PPM, Sample
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, kiss_code
from tsyncd.wire.timestamps import ns_from_short, ntp64_diff_ns, ntp64_from_unix_ns

_IBURST_COUNT: Final = 4
_BURST_SPACING_NS: Final = 2_000_000_000  # RFC 5905 BTIME
_NS_PER_S: Final = 1_000_000_000


class AssociationState(enum.Enum):
    """Lifecycle of an association, as ``tsyncctl peers`` shows it."""

    INIT = "init"  # no poll yet
    ACTIVE = "active"  # polling
    DEMOBILIZED = "demobilized"  # told to go away (KoD DENY/RSTR): no more requests


@dataclass(slots=True)
class AssociationStats:
    """Counters an association keeps for snapshots."""

    packets_sent: int = 0
    packets_received: int = 0
    packets_dropped: int = 0
    drops_by_reason: dict[str, int] = field(default_factory=dict)
    kiss_code: str | None = None
    last_rx_ns: int | None = None


class RequestAuth(Protocol):
    """Protects requests and authenticates replies (NTS, RFC 8915; see tsyncd/nts/client.py).

    ``protect`` returns the request with its protection appended, or None when it cannot
    protect it (no NTS cookie left): then nothing is sent.  ``verify`` runs first on every
    datagram and returns a drop reason, or None for an authentic answer to our request.
    """

    def protect(self, request: bytes) -> bytes | None: ...

    def verify(self, data: bytes, packet: NtpPacket) -> str | None: ...


def poll_interval_ns(poll_log2: int) -> int:
    """2**poll seconds in nanoseconds (negative polls give sub-second intervals)."""
    if poll_log2 >= 0:
        return _NS_PER_S << poll_log2
    return _NS_PER_S >> -poll_log2


class NtpAssociation:
    """A client association with one server address (RFC 5905 client mode)."""

    def __init__(
        self,
        *,
        min_poll: int,
        max_poll: int,
        iburst: bool,
        precision_log2: int,
        rng: random.Random,
        now_ns: int,
    ) -> None:
        self.min_poll = min_poll
        self.max_poll = max_poll
        self.poll = min_poll
        self.reach = 0
        self.state = AssociationState.INIT
        self.stats = AssociationStats()
        self.unusable_reason: str | None = None
        self.auth: RequestAuth | None = None  # NTS: set by the source before the first poll
        self._precision_log2 = precision_log2
        self._rng = rng
        self._burst_left = _IBURST_COUNT if iburst else 1
        self._kod_poll = min_poll  # raised by KoD RATE; set_system_poll never goes below it
        self._next_ns: int | None = now_ns + rng.randrange(0, 1 + poll_interval_ns(-4))
        self._cookie: int | None = None  # transmit timestamp of the outstanding request
        self._t1_ns = 0  # our clock when that request left
        self._last_server_tx: int | None = None  # test 1 (duplicate)

    def next_deadline_ns(self) -> int | None:
        """When ``handle_timer`` should run next (Unix ns), or None when demobilized."""
        return self._next_ns

    def handle_timer(self, now_ns: int) -> bytes | None:
        """Poll: return the request to send now (or None), and arm the next deadline."""
        if self.state is AssociationState.DEMOBILIZED or self._next_ns is None:
            return None
        self.state = AssociationState.ACTIVE
        self.reach = (self.reach << 1) & 0xFF
        if self.reach == 0 and self.stats.packets_sent >= 8:
            # RFC 5905 §13: an unreachable server is polled ever less often.
            self.poll = min(self.poll + 1, self.max_poll)
        self._cookie = self._rng.getrandbits(64) or 1
        self._t1_ns = now_ns
        self._next_ns = now_ns + self._interval_ns()
        request = NtpPacket(
            leap=Leap.NONE,
            version=4,
            mode=Mode.CLIENT,
            poll=self.poll,
            transmit_ts=self._cookie,
        )
        data = encode_ntp(request)
        if self.auth is not None:
            protected = self.auth.protect(data)
            if protected is None:  # NTS without a cookie: the source re-runs NTS-KE first
                self._cookie = None
                return None
            data = protected
        self.stats.packets_sent += 1
        return data

    def start_burst(self, now_ns: int) -> None:
        """Send the next requests quickly (like iburst), starting now (tsyncctl burst)."""
        if self.state is AssociationState.DEMOBILIZED:
            return
        self._burst_left = _IBURST_COUNT
        self._next_ns = now_ns

    def set_system_poll(self, poll_log2: int) -> None:
        """Follow the discipline's poll (RFC 5905 §13 hpoll), within this source's limits.

        An unreachable source keeps backing off on its own.
        """
        if self.reach != 0:
            floor = max(self.min_poll, self._kod_poll)  # a RATE kiss is a floor we keep
            self.poll = max(floor, min(self.max_poll, poll_log2))

    def handle_sent(self, tx_ns: int) -> None:
        """Record T1, the clock read just before the request was handed to the kernel."""
        if self._cookie is not None:
            self._t1_ns = tx_ns

    def _interval_ns(self) -> int:
        if self._burst_left > 1:
            self._burst_left -= 1
            return min(_BURST_SPACING_NS, poll_interval_ns(self.min_poll))
        base = poll_interval_ns(self.poll)
        # Spread requests by up to ±5 % so that many clients do not synchronize (RFC 5905 §13).
        return base + self._rng.randrange(-base // 20, base // 20 + 1)

    def _drop(self, reason: str) -> None:
        self.stats.packets_dropped += 1
        self.stats.drops_by_reason[reason] = self.stats.drops_by_reason.get(reason, 0) + 1

    def handle_reply(self, data: bytes, rx_ns: int) -> Sample | None:
        """Check a datagram from the server; return a sample if it is a good reply."""
        try:
            packet = decode_ntp(data)
        except WireError as exc:
            self._drop(exc.reason)
            return None
        # Authentication (NTS) comes first: unauthenticated KoDs and replays must not count.
        if self.auth is not None:
            reason = self.auth.verify(data, packet)
            if reason is not None:
                self._drop(reason)
                return None
        # Mode: only server replies answer client requests.
        if packet.mode != Mode.SERVER:
            self._drop("not_server_mode")
            return None
        # Test 1, duplicate: the same server transmit time again is a replay.
        if packet.transmit_ts != 0 and packet.transmit_ts == self._last_server_tx:
            self._drop("duplicate")
            return None
        # Test 2, bogus: it must answer our outstanding request (origin = our cookie).
        if self._cookie is None or packet.origin_ts != self._cookie:
            self._drop("bogus")
            return None
        # From here on the reply is genuinely for us: one answer per request (replay guard).
        self._cookie = None
        self._last_server_tx = packet.transmit_ts
        code = kiss_code(packet)
        if code is not None:
            self._handle_kod(code, packet)
            return None
        # Test 3, invalid: the server's timestamps must be set.
        if packet.receive_ts == 0 or packet.transmit_ts == 0:
            self._drop("invalid")
            return None
        # Test 6, unsynchronized: a server that does not know the time cannot teach it.
        stratum = packet.stratum if packet.stratum != 0 else 16
        if packet.leap == Leap.UNSYNCHRONIZED or stratum >= 16:
            self._drop("unsynchronized")
            return None
        # Test 7, bad header: distance too large, or a reference time in the future.
        root_delay_ns = ns_from_short(packet.root_delay)
        root_disp_ns = ns_from_short(packet.root_dispersion)
        if root_delay_ns // 2 + root_disp_ns >= MAXDISP_NS or (
            packet.reference_ts != 0 and ntp64_diff_ns(packet.reference_ts, packet.transmit_ts) > 0
        ):
            self._drop("bad_header")
            return None
        return self._sample(packet, rx_ns, stratum, root_delay_ns, root_disp_ns)

    def _sample(
        self, packet: NtpPacket, rx_ns: int, stratum: int, root_delay_ns: int, root_disp_ns: int
    ) -> Sample:
        t1 = ntp64_from_unix_ns(self._t1_ns)
        t4 = ntp64_from_unix_ns(rx_ns)
        # RFC 5905 §8: subtract raw timestamps first (era-safe), then combine.
        t2_minus_t1 = ntp64_diff_ns(packet.receive_ts, t1)
        t3_minus_t4 = ntp64_diff_ns(packet.transmit_ts, t4)
        server_busy = ntp64_diff_ns(packet.transmit_ts, packet.receive_ts)
        precision_ns = _precision_ns(self._precision_log2)
        delay = max(rx_ns - self._t1_ns - server_busy, precision_ns)
        offset = (t2_minus_t1 + t3_minus_t4) // 2
        dispersion = (
            _precision_ns(packet.precision)
            + precision_ns
            + (rx_ns - self._t1_ns) * PHI_PPM // 1_000_000
        )
        self.reach |= 1
        self.stats.packets_received += 1
        self.stats.last_rx_ns = rx_ns
        self.stats.kiss_code = None
        return Sample(
            offset_ns=offset,
            delay_ns=delay,
            dispersion_ns=dispersion,
            root_delay_ns=root_delay_ns,
            root_dispersion_ns=root_disp_ns,
            stratum=stratum,
            leap=int(packet.leap),
            reference_id=packet.reference_id,
            local_rx_ns=rx_ns,
        )

    def handle_measured(self, sample: Sample) -> Sample:
        """Account for a sample measured by another protocol (TSQ) for the last poll.

        The exchange and its checks happened elsewhere; here it counts as a good reply: the
        outstanding request is answered, and reach and the receive statistics move on.
        """
        self._cookie = None
        self.reach |= 1
        self.stats.packets_received += 1
        self.stats.last_rx_ns = sample.local_rx_ns
        self.stats.kiss_code = None
        return sample

    def record_drop(self, reason: str) -> None:
        """Count a reply rejected by another protocol's checks (TSQ) under ``reason``."""
        self._drop(reason)

    def _handle_kod(self, code: str, packet: NtpPacket) -> None:
        self.stats.kiss_code = code
        self._drop("kiss_of_death")
        if code in ("DENY", "RSTR"):
            self.state = AssociationState.DEMOBILIZED
            self.unusable_reason = f"server sent kiss-o'-death {code}: access denied"
            self._next_ns = None
        elif code == "RATE":
            self._kod_poll = min(self.max_poll, max(self.poll + 1, packet.poll))
            # RFC 5905 §7.4: poll less often; never below the server's own poll hint.
            self.poll = min(self.max_poll, max(self.poll + 1, packet.poll))
            self._burst_left = 1
            if self._next_ns is not None:
                self._next_ns = self._t1_ns + poll_interval_ns(self.poll)


def _precision_ns(precision_log2: int) -> int:
    """2**precision seconds in ns (precision is usually negative: -20 is about 1 µs)."""
    if precision_log2 >= 0:
        return _NS_PER_S << min(precision_log2, 30)
    return _NS_PER_S >> min(-precision_log2, 62)
