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
``_IBURST_COUNT`` requests at most 2 s apart.  DENY and RSTR stop polling (RFC 5905 §7.4
demobilizes the association) — like RATE, only after the origin check, so a spoofed KoD cannot
silence us (RFC 8633 §5.4).  A pool replaces such a member and a server given by name moves to
another address, but an address given as such would stay silent until a restart.  chronyd
ignores these kisses (they fail its test 6) and keeps polling, so a server whose access list
is fixed is used again; here the operator says so: ``start_burst`` (tsyncctl burst) and
``set_online(True)`` (tsyncctl online) poll a stopped association again (``kisses`` counts
the valid KoDs, for the IO edge's log).

KoD RATE: RFC 5905 §7.4 says the client must reduce its rate at once and further at each RATE.
The poll rises by one (at least to the server's poll hint), within ``max_poll``, and stays a
floor the discipline cannot undo.  At ``max_poll`` (always, with min-poll = max-poll) that
changes nothing, so as chronyd does (it waits 4 more poll intervals after each RATE), the next
poll after a RATE also waits ``_RATE_BACKOFF_POLLS`` more intervals, twice as many after each
further RATE without a valid reply in between, up to ``_RATE_BACKOFF_MAX_POLLS``: beyond
``max_poll`` while the server keeps kissing.  A valid reply ends the back-off.

The loop test (chronyd's test D; RFC 5905 fit() compares the refid with our address): a reply of
stratum 2 or more whose refid is one of ``local_refids`` (the refid of the address our packets
leave from, which the IO edge finds: the server is synchronized to us) is dropped as ``loop``,
and ``synchronized_to_us`` keeps that refid until a reply without it, so older samples do not
keep the source selectable (as ``server_unsynchronized`` does for test 6); such a reply still
counts for reach, as in chronyd.

Connectivity (chronyc ``offline``/``online``): an offline association sends nothing and its
reach register is cleared, as chronyd clears it: the source is not selectable (a system peer
taken offline would otherwise stay selected, its old samples steering nothing, for as long as
their dispersion takes to grow out of range), and the selection moves to the sources still
online at once.  It is not "unreachable" either (``pool.bad_reason``): nothing was learnt about
the server, so a pool does not replace it.  Replies to a request already sent still count.
Back online it polls within a moment from ``min_poll`` (with a burst for an ``iburst`` source),
as chronyd does.
A burst asked for while offline sends its requests, then the association is offline again.

Interleaved mode (RFC 9769 client/server, spec ntpv4.md §10), with ``xleave``: the server's
transmit timestamp in a basic reply is an estimate taken before sending; in interleaved mode the
server returns, one exchange later, the precise (kernel) transmit time of its *previous* reply.
An interleaved request carries Origin = the server's Receive timestamp from the last valid reply
(which names the reply whose precise TX we want), Receive = a random cookie, Transmit = another
random cookie.  The server answers interleaved (Origin = our Receive cookie) if it kept that
reply's TX time, else basic (Origin = our Transmit cookie); anything else is bogus.  An
interleaved reply measures the *previous* exchange: T1 = our TX of the previous request (kernel
stamp, ``handle_tx_timestamp``), T2 = the server's RX from the previous reply, T3 = this reply's
Transmit, T4 = our RX of the previous reply (RFC 9769's recommended set).  Invalid replies leave
that state alone.  After ``_XLEAVE_MAX_UNANSWERED`` interleaved requests without a valid reply
we send basic requests again until a reply arrives; a server that never interleaves just keeps
giving basic replies, which are used as such (the fallback).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Final, Protocol

from tsyncd.sync.sample import MAXDISP_NS, PHI_PPM, ReplyHeader, Sample
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, kiss_code
from tsyncd.wire.timestamps import ns_from_short, ntp64_diff_ns, ntp64_from_unix_ns

_IBURST_COUNT: Final = 4
_RATE_BACKOFF_POLLS: Final = 4  # extra poll intervals before the poll after a RATE (chronyd's)
_RATE_BACKOFF_MAX_POLLS: Final = 32  # ... doubling with each RATE in a row, up to this
_XLEAVE_MAX_UNANSWERED: Final = 4  # RFC 9769 example client
_BURST_SPACING_NS: Final = 2_000_000_000  # RFC 5905 BTIME
_MAX_SERVER_INTERVAL_NS: Final = 4_000_000_000  # chronyd's MAX_SERVER_INTERVAL (its test A)
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
    packets_received_total: int = 0  # every datagram from the source, valid or not
    drops_by_reason: dict[str, int] = field(default_factory=dict)
    # ... of which since the last valid reply: why a source has none ("no valid reply yet")
    drops_since_reply: dict[str, int] = field(default_factory=dict)
    kiss_code: str | None = None
    kisses: int = 0  # valid KoDs received (the IO edge logs each new one, or some, for RATE)
    last_rx_ns: int | None = None
    interleaved_replies: int = 0  # valid replies in interleaved mode
    last_reply: ReplyHeader | None = None  # of the last valid reply


@dataclass(slots=True)
class _Request:
    """The outstanding request: its cookies and our send time."""

    transmit_cookie: int  # its Transmit field; a basic reply's Origin
    receive_cookie: int  # its Receive field (0 in basic requests); an interleaved reply's Origin
    t1_ns: int  # our clock when it left (refined by the kernel TX stamp)
    kernel_stamped: bool = False  # t1_ns is the kernel's TX stamp


@dataclass(frozen=True, slots=True)
class _Exchange:
    """The last valid exchange, as an interleaved reply needs it (RFC 9769 client rules)."""

    t1_ns: int  # our TX of the request
    server_rx: int  # raw NTP timestamp: the reply's Receive field (T2)
    t4_ns: int  # our RX of the reply


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
        xleave: bool = False,
    ) -> None:
        self.xleave = xleave
        self.interleaved = False  # the last valid reply was interleaved
        self.min_poll = min_poll
        self.max_poll = max_poll
        self.poll = min_poll
        self.reach = 0
        self.state = AssociationState.INIT
        self.stats = AssociationStats()
        self.unusable_reason: str | None = None
        # The server's last reply said it is unsynchronized (leap alarm, stratum 0/16): not a
        # source now, whatever older samples say (chronyd's "s"); cleared by a synced reply.
        self.server_unsynchronized = False
        # Our own addresses as refids (the IO edge's: where our packets to this server leave
        # from); a reply of stratum >= 2 naming one is from a server synchronized to us.
        self.local_refids: frozenset[int] = frozenset()
        # The server's last reply said it is synchronized to us (that refid): not a source now.
        self.synchronized_to_us: int | None = None
        self.auth: RequestAuth | None = None  # NTS: set by the source before the first poll
        # The samples in the source's clock filter no longer describe the server: the core
        # empties the filter, and resets this, before it takes the reply's sample.  Only a
        # broadcast client sets it (heard again after being unreachable).
        self.filter_outdated = False
        self._precision_log2 = precision_log2
        self._rng = rng
        self._iburst = iburst
        self._burst_left = _IBURST_COUNT if iburst else 1
        self.online = True  # tsyncctl offline: no polls until tsyncctl online
        self._offline_burst = 0  # polls left of a burst asked for while offline
        self._kod_poll = min_poll  # raised by KoD RATE; set_system_poll never goes below it
        self._rate_kisses = 0  # KoD RATE in a row without a valid reply (the back-off grows)
        self._next_ns: int | None = now_ns + rng.randrange(0, 1 + poll_interval_ns(-4))
        self._pending: _Request | None = None  # the outstanding request
        self._t1_ns = 0  # our clock when the latest request left
        self._last_seen: tuple[int, int] | None = None  # test 1: (receive, transmit) last seen
        self._previous: _Exchange | None = None  # interleaved mode: the last valid exchange
        self._latest_answered = False  # the latest request got its valid reply
        self._xleave_unanswered = 0

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
        request = self._new_request(now_ns)
        self._next_ns = now_ns + self._interval_ns()
        return self._encode_request(request)

    def _new_request(self, now_ns: int) -> NtpPacket:
        """The next request, with fresh cookies; it becomes the outstanding one (sent now)."""
        transmit_cookie = self._rng.getrandbits(64) or 1
        origin = receive_cookie = 0
        if (
            self.xleave
            and self._previous is not None
            and self._xleave_unanswered < _XLEAVE_MAX_UNANSWERED
        ):
            origin = self._previous.server_rx
            receive_cookie = self._rng.getrandbits(64) or 1
            if receive_cookie == transmit_cookie:  # the server's test for an interleaved request
                receive_cookie ^= 1
            self._xleave_unanswered += 1
        self._pending = _Request(transmit_cookie, receive_cookie, now_ns)
        self._t1_ns = now_ns
        self._latest_answered = False
        return NtpPacket(
            leap=Leap.NONE,
            version=4,
            mode=Mode.CLIENT,
            poll=self.poll,
            origin_ts=origin,
            receive_ts=receive_cookie,
            transmit_ts=transmit_cookie,
        )

    def _encode_request(self, request: NtpPacket) -> bytes | None:
        """``request``'s bytes, protected when the source has ``auth`` (None: send nothing)."""
        data = encode_ntp(request)
        if self.auth is not None:
            protected = self.auth.protect(data)
            if protected is None:  # NTS without a cookie: the source re-runs NTS-KE first
                self._cookie = None
                return None
            data = protected
        self.stats.packets_sent += 1
        return data

    @property
    def polled(self) -> bool:
        """At least one poll went by: a source silent since is unreachable, not new."""
        return self.stats.packets_sent > 0

    def start_burst(self, now_ns: int) -> str | None:
        """Send the next requests quickly (like iburst), starting now (tsyncctl burst); while
        offline, those requests only, then offline again (chronyd's burst of an offline source).
        A source a KoD DENY/RSTR stopped polls again (chronyd would never have stopped).
        None once started, else why nothing will be sent (tsyncctl burst says so)."""
        self._restart_after_kiss()
        self._burst_left = _IBURST_COUNT
        self._next_ns = now_ns
        if not self.online:
            self._offline_burst = _IBURST_COUNT
        return None

    @property
    def stopped(self) -> bool:
        """A KoD DENY/RSTR stopped it (RFC 5905 §7.4): no polls until online or a burst."""
        return self.state is AssociationState.DEMOBILIZED

    @property
    def polled_online(self) -> bool:
        """Online and not stopped by a kiss: what ``activity``, ``sources`` and the metrics
        call online, so a stopped source is not shown as polled (QA s19: "Online: yes")."""
        return self.online and not self.stopped

    @property
    def polling(self) -> bool:
        """Polls are due at ``next_deadline_ns``: online, or in a burst asked for offline,
        and not stopped by a kiss."""
        return (self.online or self._offline_burst > 0) and not self.stopped

    @property
    def bursting(self) -> bool:
        """In a burst (iburst or tsyncctl burst): the next requests go out quickly."""
        return self.polling and self._burst_left > 1

    def set_online(self, online: bool, now_ns: int) -> bool:
        """Go online or offline (tsyncctl online/offline); False if it already was.  Back
        online, poll soon from ``min_poll`` (a burst if ``iburst``); online restarts a source a
        KoD DENY/RSTR stopped, as chronyd keeps polling one (offline leaves it stopped)."""
        if online == self.online and not (online and self.stopped):
            return False
        if online:
            self._restart_after_kiss()
        self.online = online
        self._offline_burst = 0
        if not online:
            self.reach = 0
        if online:
            self.poll = max(self.min_poll, self._kod_poll)
            self._burst_left = _IBURST_COUNT if self._iburst else 1
            self._next_ns = now_ns + self._rng.randrange(0, 1 + poll_interval_ns(-4))
        return True

    def _restart_after_kiss(self) -> None:
        """Undo a KoD DENY/RSTR's stop (the caller sets when to poll): the server may answer
        now; a new DENY stops it again."""
        if self.state is AssociationState.DEMOBILIZED:
            self.state = AssociationState.INIT
            self.unusable_reason = None

    def set_poll_limits(self, min_poll: int, max_poll: int, now_ns: int) -> None:
        """New poll limits (tsyncctl minpoll/maxpoll, as chronyc's): the poll moves inside
        them, and a next poll now further away than the new longest interval comes sooner.
        A floor a KoD RATE raised stays, within the new limits."""
        raised = self._kod_poll > self.min_poll
        self.min_poll, self.max_poll = min_poll, max_poll
        self._kod_poll = min(max(self._kod_poll, min_poll), max_poll) if raised else min_poll
        self.poll = min(max(self.poll, self._kod_poll), max_poll)
        if self._next_ns is not None:
            self._next_ns = min(self._next_ns, now_ns + poll_interval_ns(self.poll))

    def shift_times(self, delta_ns: int) -> None:
        """Our clock was stepped by ``delta_ns``: re-express every clock time kept here.

        The deadline moves with the clock (a step back of an hour must not stop polling for an
        hour, as chronyd's scheduler moves its timeouts), and so do the send and receive times
        of exchanges still to be measured, so no sample mixes times from both sides of the
        step."""
        if self._next_ns is not None:
            self._next_ns += delta_ns
        self._t1_ns += delta_ns
        if self._pending is not None:
            self._pending.t1_ns += delta_ns
        if self._previous is not None:
            p = self._previous
            self._previous = _Exchange(p.t1_ns + delta_ns, p.server_rx, p.t4_ns + delta_ns)
        if self.stats.last_rx_ns is not None:
            self.stats.last_rx_ns += delta_ns

    def filter_cleared(self) -> None:
        """The source's clock filter was emptied (tsyncctl reset sources); a client association
        keeps nothing that depends on it (a broadcast client does)."""

    def set_announced(
        self,
        *,
        leap: Leap,
        stratum: int,
        root_delay: int,
        root_dispersion: int,
        reference_id: int,
        reference_ts: int,
    ) -> None:
        """The system variables our packets would carry: a client's requests carry none (RFC
        9109); a symmetric association's do."""

    def polled_offline(self) -> None:
        """One poll of a burst asked for while offline has gone (the sync core counts them)."""
        self._offline_burst = max(0, self._offline_burst - 1)

    def set_system_poll(self, poll_log2: int) -> None:
        """Follow the discipline's poll (RFC 5905 §13 hpoll), within this source's limits.

        An unreachable source keeps backing off on its own.
        """
        if self.reach != 0:
            floor = max(self.min_poll, self._kod_poll)  # a RATE kiss is a floor we keep
            self.poll = max(floor, min(self.max_poll, poll_log2))

    def handle_sent(self, tx_ns: int) -> None:
        """Record T1, the clock read just before the request was handed to the kernel.

        A kernel TX stamp that came first (inside sendto, on loopback) is better and is kept.
        """
        if self._pending is not None and not self._pending.kernel_stamped:
            self._pending.t1_ns = tx_ns
            self._t1_ns = tx_ns

    def stamp_transmit(self, data: bytes, t1_ns: int) -> bytes:
        """``data`` as it goes out at ``t1_ns``: a client's Transmit is a cookie, unchanged."""
        return data

    def handle_tx_timestamp(self, tx_ns: int) -> None:
        """The kernel's TX stamp of the latest request (more precise than ``handle_sent``).

        It may come after that request's reply: then it refines the exchange an interleaved
        reply will measure next.
        """
        self._t1_ns = tx_ns
        if self._pending is not None:
            self._pending.t1_ns = tx_ns
            self._pending.kernel_stamped = True
        elif self._latest_answered and self._previous is not None:
            p = self._previous
            self._previous = _Exchange(tx_ns, p.server_rx, p.t4_ns)

    def _interval_ns(self) -> int:
        if self._burst_left > 1:
            self._burst_left -= 1
            return min(_BURST_SPACING_NS, poll_interval_ns(self.min_poll))
        base = poll_interval_ns(self.poll)
        # Spread requests by up to ±5 % so that many clients do not synchronize (RFC 5905 §13).
        return base + self._rng.randrange(-base // 20, base // 20 + 1)

    def _drop(self, reason: str) -> None:
        stats = self.stats
        stats.packets_dropped += 1
        stats.drops_by_reason[reason] = stats.drops_by_reason.get(reason, 0) + 1
        stats.drops_since_reply[reason] = stats.drops_since_reply.get(reason, 0) + 1

    def _replied(self, rx_ns: int) -> None:
        """A valid reply arrived at ``rx_ns``: reach, counters, and the end of a RATE back-off."""
        self.reach |= 1
        self.stats.packets_received += 1
        self.stats.last_rx_ns = rx_ns
        self.stats.kiss_code = None
        self.stats.drops_since_reply.clear()
        self._rate_kisses = 0

    def _keep_header(self, packet: NtpPacket, response_ns: int | None) -> None:
        """Keep what the valid reply ``packet`` said of its sender (``stats.last_reply``)."""
        self.stats.last_reply = ReplyHeader(
            version=packet.version,
            precision=packet.precision,
            reference_ts=packet.reference_ts,
            response_ns=response_ns,
        )

    def _decode(self, data: bytes, modes: tuple[Mode, ...], reason: str) -> NtpPacket | None:
        """The packet if it decodes and has one of ``modes``; else None, counted as dropped.

        Every datagram from the source passes here once: chronyc ntpdata's Total RX."""
        self.stats.packets_received_total += 1
        try:
            packet = decode_ntp(data)
        except WireError as exc:
            self._drop(exc.reason)
            return None
        # Authentication (NTS) comes first: unauthenticated KoDs and replays must not count.
        if self.auth is not None:
            auth_failure = self.auth.verify(data, packet)
            if auth_failure is not None:
                self._drop(auth_failure)
                return None
        if packet.mode not in modes:
            self._drop(reason)
            return None
        return packet

    def handle_reply(self, data: bytes, rx_ns: int) -> Sample | None:
        """Check a datagram from the server; return a sample if it is a good reply."""
        # Mode: only server replies answer client requests.
        packet = self._decode(data, (Mode.SERVER,), "not_server_mode")
        if packet is None:
            return None
        # Test 1, duplicate: the same server timestamps again are a replay (RFC 9769: both the
        # Receive and the Transmit field, as an interleaved reply's Transmit is an old time).
        if packet.transmit_ts != 0 and (packet.receive_ts, packet.transmit_ts) == self._last_seen:
            self._drop("duplicate")
            return None
        # Test 2, bogus: it must answer our outstanding request: Origin = our Transmit cookie
        # (basic reply) or our Receive cookie (interleaved reply, RFC 9769).
        pending = self._pending
        if pending is None or packet.origin_ts not in (
            pending.transmit_cookie,
            pending.receive_cookie or pending.transmit_cookie,
        ):
            self._drop("bogus")
            return None
        interleaved = packet.origin_ts == pending.receive_cookie
        # From here on the reply is genuinely for us: one answer per request (replay guard).
        self._pending = None
        self._last_seen = (packet.receive_ts, packet.transmit_ts)
        code = kiss_code(packet)
        if code is not None:
            self._handle_kod(code, packet)
            return None
        server_now = packet.receive_ts if interleaved else packet.transmit_ts
        checked = self._check_header(packet, server_now)
        if checked is None:
            return None
        stratum, root_delay_ns, root_disp_ns = checked
        # This exchange is what the next interleaved reply will measure.
        previous, self._previous = (
            self._previous,
            _Exchange(pending.t1_ns, packet.receive_ts, rx_ns),
        )
        self._latest_answered = True
        self._xleave_unanswered = 0
        self.interleaved = interleaved
        if interleaved and previous is not None:
            # RFC 9769: T1, T2, T4 of the previous exchange; T3 is this reply's Transmit.
            self.stats.interleaved_replies += 1
            times = (previous.t1_ns, previous.server_rx, packet.transmit_ts, previous.t4_ns)
        else:
            times = (pending.t1_ns, packet.receive_ts, packet.transmit_ts, rx_ns)
        # chronyd's test A: a server answers a client at once; a Transmit before its Receive,
        # or seconds after it, is no measurement (it would be taken as a tiny or huge delay).
        server_busy = ntp64_diff_ns(times[2], times[1])
        if not 0 <= server_busy <= _MAX_SERVER_INTERVAL_NS:
            self._drop("bad_server_interval")
            return None
        return self._sample(packet, times, rx_ns, stratum, root_delay_ns, root_disp_ns)

    def _check_header(
        self, packet: NtpPacket, server_now: int, *, answers: bool = True
    ) -> tuple[int, int, int] | None:
        """Tests 3, 6 and 7 (counted drops); (stratum, root delay ns, root dispersion ns).

        ``answers``: the packet answers one of ours, so its Receive field must be set too.
        """
        # Test 3, invalid: the server's timestamps must be set.
        if (answers and packet.receive_ts == 0) or packet.transmit_ts == 0:
            self._drop("invalid")
            return None
        # Test 6, unsynchronized: a server that does not know the time cannot teach it.
        stratum = packet.stratum if packet.stratum != 0 else 16
        if packet.leap == Leap.UNSYNCHRONIZED or stratum >= 16:
            self._drop("unsynchronized")
            self.server_unsynchronized = True
            return None
        self.server_unsynchronized = False
        # Test 7, bad header: distance too large, or a reference time in the future.  "Now" at
        # the server is its Transmit in a basic reply, but its Receive in an interleaved one
        # (whose Transmit is the send time of an older reply, RFC 9769).
        root_delay_ns = ns_from_short(packet.root_delay)
        root_disp_ns = ns_from_short(packet.root_dispersion)
        if root_delay_ns // 2 + root_disp_ns >= MAXDISP_NS or (
            packet.reference_ts != 0 and ntp64_diff_ns(packet.reference_ts, server_now) > 0
        ):
            self._drop("bad_header")
            return None
        # Test D, loop (chronyd's; RFC 5905 fit()): a server whose refid is our own address is
        # synchronized to us, so its time is ours come back; taking it would make a timing
        # loop.  Stratum 1 refids name reference clocks, not addresses.  The server does
        # answer, so it is reachable (as chronyd counts it): a peer shows it hears us.
        if stratum > 1 and packet.reference_id in self.local_refids:
            self._drop("loop")
            self.synchronized_to_us = packet.reference_id
            self.reach |= 1
            return None
        self.synchronized_to_us = None
        return stratum, root_delay_ns, root_disp_ns

    def _sample(
        self,
        packet: NtpPacket,
        times: tuple[int, int, int, int],
        rx_ns: int,
        stratum: int,
        root_delay_ns: int,
        root_disp_ns: int,
    ) -> Sample:
        """A sample from T1 (our ns), T2, T3 (raw server timestamps), T4 (our ns)."""
        t1_ns, t2, t3, t4_ns = times
        # RFC 5905 §8: subtract raw timestamps first (era-safe), then combine.
        t2_minus_t1 = ntp64_diff_ns(t2, ntp64_from_unix_ns(t1_ns))
        t3_minus_t4 = ntp64_diff_ns(t3, ntp64_from_unix_ns(t4_ns))
        server_busy = ntp64_diff_ns(t3, t2)
        precision_ns = _precision_ns(self._precision_log2)
        # A negative round trip (the peer claims to have held the packet longer than the whole
        # exchange took) is a lie of that size: as chronyd, take its magnitude, so the error
        # bound still covers the truth, rather than flooring it into the best sample there is.
        delay = max(abs(t4_ns - t1_ns - server_busy), precision_ns)
        offset = (t2_minus_t1 + t3_minus_t4) // 2
        dispersion = (
            _precision_ns(packet.precision)
            + precision_ns
            + abs(t4_ns - t1_ns) * PHI_PPM // 1_000_000
        )
        self._replied(rx_ns)
        self._keep_header(packet, server_busy)
        return Sample(
            offset_ns=offset,
            delay_ns=delay,
            dispersion_ns=dispersion,
            root_delay_ns=root_delay_ns,
            root_dispersion_ns=root_disp_ns,
            stratum=stratum,
            leap=int(packet.leap),
            reference_id=packet.reference_id,
            local_rx_ns=rx_ns,  # when we learnt it (an interleaved one measures an older T4)
            interleaved=t4_ns != rx_ns,
        )

    def handle_measured(self, sample: Sample) -> Sample:
        """Account for a sample measured by another protocol (TSQ) for the last poll.

        The exchange and its checks happened elsewhere; here it counts as a good reply: the
        outstanding request is answered, and reach and the receive statistics move on.
        """
        self._cookie = None
        self._replied(sample.local_rx_ns)
        return sample

    def record_drop(self, reason: str) -> None:
        """Count a reply rejected by another protocol's checks (TSQ) under ``reason``."""
        self._drop(reason)

    def _handle_kod(self, code: str, packet: NtpPacket) -> None:
        self.stats.kiss_code = code
        self.stats.kisses += 1
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
            # ... and less often again at each RATE, even at max_poll (chronyd waits 4 more
            # intervals): the next poll waits extra intervals, doubling per RATE in a row.
            self._rate_kisses += 1
            if self._next_ns is not None:
                self._next_ns = self._t1_ns + poll_interval_ns(self.poll) * (
                    1 + self.rate_backoff_polls
                )

    @property
    def kiss_effect(self) -> str | None:
        """What the latest KoD did, for the daemon's kiss log (``tsyncd.kiss_log``): a DENY or
        RSTR stopped polling, a RATE slowed it; None for other codes (dropped, nothing changes).
        Subclasses that send otherwise (a broadcast listener) say what a kiss does to them."""
        if self.stopped:
            return "not polling it until tsyncctl online or burst"
        if self.stats.kiss_code != "RATE":
            return None
        wait_s = poll_interval_ns(self.poll) * (1 + self.rate_backoff_polls) / 1e9
        return f"polling less often (poll {self.poll}, next request in {wait_s:.0f} s)"

    @property
    def rate_backoff_polls(self) -> int:
        """Poll intervals added after the latest KoD RATE (0: no RATE since a valid reply)."""
        if self._rate_kisses == 0:
            return 0
        return min(_RATE_BACKOFF_POLLS << (self._rate_kisses - 1), _RATE_BACKOFF_MAX_POLLS)


def _precision_ns(precision_log2: int) -> int:
    """2**precision seconds in ns (precision is usually negative: -20 is about 1 µs)."""
    if precision_log2 >= 0:
        return _NS_PER_S << min(precision_log2, 30)
    return _NS_PER_S >> min(-precision_log2, 62)
