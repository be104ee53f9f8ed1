"""A symmetric active association (RFC 5905 modes 1 and 2), sans-IO: two peers that measure
each other, each polling on its own timer.

Theory of operation
-------------------
Unlike a client, a peer cannot send a random cookie: the other side measures *us* with our
packet's Transmit field as its T3, so it carries our real time (the clock read when the poll
fired).  Each packet we send carries (RFC 5905 §9 and Figure 22):

* Origin = the Transmit timestamp of the last packet we received from the peer (``p.org``);
* Receive = our receive time of that packet (``p.rec``);
* Transmit = our time now (``p.xmt``).

A packet from the peer (mode 1, or mode 2 from a passive peer) answers our latest packet when
its Origin equals our latest Transmit (test 2); then T1 = our send time of that packet (the
kernel's TX stamp where there is one), T2 = its Receive, T3 = its Transmit, T4 = our receive
time.  Only the first packet that answers each of ours measures, so a replay gives no second
sample; a later one with a newer Transmit (the peer polls faster than we do) still moves
``p.org``/``p.rec`` on, so our next packet answers the peer's latest.

Only such a packet, one that passed tests 1 and 2 (and authentication, if any), sets
``p.org``/``p.rec``: anyone can send a packet from the peer's address, and a forged Transmit in
our next Origin would make the real peer drop that packet as bogus, so a spoofer could stop the
association for good (CVE-2015-1799; chronyd keeps its remote timestamps the same way).
Packets cross in flight, so a packet whose Origin is older (or 0: the peer has not heard us
yet) is "bogus" for measuring, and kept aside: if no packet answered our latest one by our next
poll, that poll answers the latest bogus packet instead, which is how the exchange starts and
restarts after a loss (RFC 5905 A.5.1.1; chronyd's "init" timestamps).  A spoofed packet can
therefore only delay a start, never break a running exchange.  Reach, poll, KoD and the header
tests are the client's (``NtpAssociation``).  Symmetric interleaved mode (RFC 9769,
``xleave = true``) is the subclass in ``tsyncd/sync/symmetric_xleave.py``.

When we send is not the client's free-running poll timer: as chronyd does, our packets are
timed to the peer's (``tsyncd/sync/peer_timing.py``), so that the peer with the higher stratum
is answered as soon as its packet comes and measures us over a short span.
"""

from __future__ import annotations

from tsyncd.sync import peer_timing
from tsyncd.sync.association import AssociationState, NtpAssociation, poll_interval_ns
from tsyncd.sync.sample import Sample
from tsyncd.sync.sendlag import SendLag
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, encode_ntp, kiss_code
from tsyncd.wire.timestamps import ntp64_diff_ns, ntp64_from_unix_ns


class SymmetricAssociation(NtpAssociation):
    """A symmetric active association with one peer address (``mode = "peer"``)."""

    # What we announce in our packets: the daemon keeps it current (stratum 16 = unsynced).
    leap: Leap = Leap.UNSYNCHRONIZED
    stratum: int = 16
    root_delay: int = 0  # raw NTP short
    root_dispersion: int = 0  # raw NTP short
    reference_id: int = 0
    reference_ts: int = 0  # raw NTP64
    _org: int = 0  # peer's Transmit of the last valid packet (passed tests 1 and 2)
    _rec: int = 0  # our receive time of that packet (raw NTP64)
    _init_org: int = 0  # peer's Transmit of the latest bogus packet (0: none since a valid one)
    _init_rec: int = 0  # our receive time of that packet (raw NTP64)
    _init_updated: bool = False  # _init_org was set since our latest packet
    _answered: bool = False  # a valid packet answered our latest packet (only it measures)
    _xmt: int = 0  # Transmit of our latest packet (0: none yet)
    _lag: SendLag | None = None  # clock read to kernel TX stamp of our packets
    _read_ns: int = 0  # the clock read of the packet in flight, until its TX stamp comes
    _remote_poll: int | None = None  # the poll of the peer's last valid packet (log2 s)
    _remote_stratum: int = peer_timing.STRATUM_UNKNOWN  # ... and its stratum

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
        """The system variables our packets carry (the peer may synchronize to us)."""
        self.leap = leap
        self.stratum = stratum
        self.root_delay = root_delay
        self.root_dispersion = root_dispersion
        self.reference_id = reference_id
        self.reference_ts = reference_ts

    def handle_timer(self, now_ns: int) -> bytes | None:
        """Poll: the packet to send now (or None); arms the next deadline."""
        if self.state is AssociationState.DEMOBILIZED or self.next_deadline_ns() is None:
            return None
        reach, answered = self.reach, self._answered and self._xmt != 0
        super().handle_timer(now_ns)  # reach, poll backoff, counters, next deadline, T1
        if answered:  # our latest packet's bit went in when its answer came (``_heard``)
            self.reach = reach
        origin, receive, transmit = self._packet_timestamps(now_ns)
        packet = NtpPacket(
            leap=self.leap,
            version=4,
            mode=Mode.SYMMETRIC_ACTIVE,
            stratum=self.stratum if self.stratum < 16 else 0,
            poll=self.poll,
            precision=self._precision_log2,
            root_delay=self.root_delay,
            root_dispersion=self.root_dispersion,
            reference_id=self.reference_id,
            reference_ts=self.reference_ts,
            origin_ts=origin,
            receive_ts=receive,
            transmit_ts=transmit,
        )
        data = encode_ntp(packet)
        return data if self.auth is None else self.auth.protect(data)

    def _interval_ns(self) -> int:
        """From our packet just sent to the next: by the peer's timing (``peer_timing``); a
        burst keeps the client's spacing."""
        if self._burst_left > 1:
            return super()._interval_ns()
        return self._peer_delay_ns(None)

    def _peer_delay_ns(self, since_tx_ns: int | None) -> int:
        """``peer_timing``'s delay of our next packet, randomly lengthened."""
        reachable = self.reach != 0
        floor = max(self.min_poll, self._kod_poll)
        poll = peer_timing.transmit_poll(self.poll, self._remote_poll, floor, reachable)
        if since_tx_ns is None:
            peer = peer_timing.wait_poll(self.poll, self._remote_poll, poll, reachable)
        else:
            peer = poll if self._remote_poll is None else self._remote_poll
        delay = peer_timing.transmit_delay_ns(
            poll_interval_ns(poll),
            peer_timing.stratum_diff(self._remote_stratum, self.stratum),
            since_tx_ns,
            poll_interval_ns(peer),
        )
        return peer_timing.lengthened(delay, self._rng)

    def _heard(self, packet: NtpPacket, rx_ns: int) -> None:
        """``packet`` is the first valid one (tests 1 and 2) since our latest: note the peer's
        poll and stratum, shift reach, and time our next packet to it (``peer_timing``;
        chronyd restarts its timer here too, whatever the later tests say).  A burst keeps its
        spacing, and an offline peer's next poll is set when it goes online."""
        self._remote_poll = packet.poll
        self._remote_stratum = packet.stratum
        # Reach shifts here, when our latest packet is answered, not when the next one goes
        # (as chronyd's does): a lower-stratum peer sends right after the other's packet, so
        # shifted on sending its register always showed the newest bit 0 (376, chronyd 377).
        self.reach = (self.reach << 1) & 0xFF
        if self._next_ns is not None and self.online and self._burst_left <= 1:
            self._next_ns = rx_ns + self._peer_delay_ns(rx_ns - self._t1_ns)

    def _packet_timestamps(self, now_ns: int) -> tuple[int, int, int]:
        """(Origin, Receive, Transmit) of the packet sent now: basic mode (RFC 5905 §9)."""
        origin, receive = self._answer_to_peer()
        self._answered = False
        self._xmt = ntp64_from_unix_ns(now_ns)
        return origin, receive, self._xmt

    def _answer_to_peer(self) -> tuple[int, int]:
        """(Origin, Receive) of a basic packet sent now: the last valid packet's, or, if none
        answered our latest packet, the latest bogus one's (a start or a restart)."""
        self._init_updated = False
        if not self._answered and self._init_org != 0:
            return self._init_org, self._init_rec
        return self._org, self._rec

    def _take_answer(self, transmit_ts: int, rx_ns: int) -> None:
        """A valid packet (tests 1 and 2 passed): our next basic packet answers it."""
        self._org, self._rec = transmit_ts, ntp64_from_unix_ns(rx_ns)
        self._init_org = self._init_rec = 0

    def _keep_unanswering(self, transmit_ts: int, rx_ns: int) -> None:
        """A bogus packet: kept aside for a start or restart (``_answer_to_peer``).  The first
        since our latest packet is taken whatever its Transmit (the peer's clock may have
        stepped back), later ones only if newer, so a replay cannot roll it back."""
        if not self._init_updated or ntp64_diff_ns(transmit_ts, self._init_org) > 0:
            self._init_org, self._init_rec = transmit_ts, ntp64_from_unix_ns(rx_ns)
            self._init_updated = True

    def stamp_transmit(self, data: bytes, t1_ns: int) -> bytes:
        """Put the clock read just before sending in the Transmit field, plus how long our
        packets took from that read to their kernel TX stamps (``SendLag``, learnt in
        ``handle_tx_timestamp``): the peer takes it as its T3, so every microsecond between
        the read and the packet leaving is an error in the peer's measurement of us (about
        40 µs through the event loop here: ``python -m bench.peer_xleave``, basic rows)."""
        if len(data) < 48 or self._xmt == 0 or data[40:48] != self._xmt.to_bytes(8, "big"):
            return data
        if self._lag is None:
            self._lag = SendLag()
        self._read_ns = t1_ns
        self._xmt = ntp64_from_unix_ns(t1_ns + self._lag.lag_ns)
        stamped = data[:40] + self._xmt.to_bytes(8, "big")
        if self.auth is not None:  # a symmetric key's MAC covers the Transmit: sign again
            return self.auth.protect(stamped) or stamped
        return stamped + data[48:]

    def handle_tx_timestamp(self, tx_ns: int) -> None:
        """The kernel's TX stamp of our latest packet: T1, and a measure of the send lag."""
        super().handle_tx_timestamp(tx_ns)
        if self._read_ns and self._lag is not None:
            self._lag.observe(self._read_ns, tx_ns)
            self._read_ns = 0

    def handle_reply(self, data: bytes, rx_ns: int) -> Sample | None:
        """Check a packet from the peer; a sample if it answers our latest packet."""
        modes = (Mode.SYMMETRIC_ACTIVE, Mode.SYMMETRIC_PASSIVE)
        packet = self._decode(data, modes, "not_symmetric_mode")
        if packet is None:
            return None
        # Test 1, duplicate: the peer's Transmit seen before is a replay.
        if packet.transmit_ts == 0 or packet.transmit_ts == self._org:
            self._drop("duplicate")
            return None
        # Test 2, bogus: it must answer our latest packet; a crossing packet does not, nor does
        # a spoofed one, which must not change what our next packet tells the peer.
        if self._xmt == 0 or packet.origin_ts != self._xmt:
            self._keep_unanswering(packet.transmit_ts, rx_ns)
            self._drop("bogus")
            return None
        if self._answered:
            # A second answer to the same packet (the peer polled twice): no sample, but our
            # next packet answers the newer one (as chronyd does).
            if ntp64_diff_ns(packet.transmit_ts, self._org) > 0:
                self._take_answer(packet.transmit_ts, rx_ns)
            self._drop("bogus")
            return None
        self._answered = True  # one sample per packet we sent
        self._take_answer(packet.transmit_ts, rx_ns)
        self._heard(packet, rx_ns)
        t1_ns = self._t1_ns
        code = kiss_code(packet)
        if code is not None:
            self._handle_kod(code, packet)
            return None
        checked = self._check_header(packet, packet.transmit_ts)
        if checked is None:
            return None
        stratum, root_delay_ns, root_disp_ns = checked
        times = (t1_ns, packet.receive_ts, packet.transmit_ts, rx_ns)
        return self._sample(packet, times, rx_ns, stratum, root_delay_ns, root_disp_ns)
