"""Symmetric interleaved mode (RFC 9769 "Interleaved Symmetric Mode"), sans-IO: a symmetric
active association (``mode = "peer"``) with ``xleave = true``.

Theory of operation
-------------------
In basic symmetric mode our Transmit field is the clock read just before sending; the kernel's
TX stamp of that packet, known only after it left, is more precise.  In interleaved mode each
packet carries, one packet late, the precise TX time of the *previous* packet we sent:

* Origin = the Receive field of the last valid packet from the peer (its RX of our packet);
* Receive = our receive time of that packet (as in basic mode);
* Transmit = our TX time of our previous packet (kernel stamp, ``handle_tx_timestamp``).

A packet from the peer is valid when its Origin is our latest Transmit (a basic packet) or our
latest Receive field (an interleaved one; RFC 9769, as chronyd tells them apart), and only the
first valid packet after each of ours counts.  An interleaved packet measures: T1 = our TX of our
latest packet, T2 = its Receive (the peer's RX of that packet), T3 = its Transmit (the peer's
precise TX of its previous packet), T4 = our RX of the previous valid packet — the RFC's set.
T4 comes before T1 here, yet offset and delay keep their usual formulas.

Which T1/T2 (as chronyd chooses): the previous interleaved exchange's T1/T2 (our TX of the
packet before, the peer's RX of it) pair with the same T3/T4 just as well, and where the peers'
polls are close in phase they are much nearer in time to T4 than the latest ones are.  A sample
spanning less time carries less of the frequency error between the two clocks (at 10 ppm, 1 µs
per 0.1 s spanned), so the previous pair is used when our local interval T1' -> T4 is under a
tenth of T4 -> T1 (chronyd's MAX_INTERLEAVED_L2L_RATIO, 0.1).

Packet counting (RFC 9769; chronyd's ``peer ... xleave`` does the same): the precise Transmit we
send is paired by the peer with its RX of our previous packet, which is only right if that
packet reached it and was the only one since.  So we interleave only when a valid packet came
since our last one *and* exactly one of ours went out between the last two valid packets;
otherwise we send a basic packet.  On receipt, an interleaved sample whose timestamps show a
missed packet (T3 more than 1.5 polls after the previous valid packet's Transmit, a delay over
half a poll, or T3 not before T2) is dropped as ``interleaved_mismatch``; one with no usable
previous packet as ``interleaved_unpaired``.

Fallback: a peer that does not interleave (chronyd ``peer`` without ``xleave``, tsyncd without
it) finds our interleaved packets bogus and answers them in basic mode (its protocol restart),
so it measures nothing.  After ``_XLEAVE_MAX_BASIC`` such basic answers in a row we send basic
packets, and try one interleaved packet every ``_XLEAVE_RETRY_POLLS`` polls; any valid
interleaved packet from the peer switches us back at once.  Two tsyncd peers therefore cannot
both get stuck in basic mode: a probe from either side is interleaved for the other.

Observed against chronyd 4.3 (``peer ... xleave``, loopback, poll -2; tests/interop/
test_peer_xleave_chronyd.py), matching RFC 9769 and this module: chronyd's interleaved packets
carry Origin = the Receive field of our latest packet and Transmit = its kernel TX stamp of its
previous packet; it took ours as interleaved from its second sample on (its measurements log:
"I", kernel TX and RX stamps), and after packets cross it takes a basic sample or two, then
interleaves again.  chronyd ``peer`` without ``xleave`` fails our interleaved packets on its
test 2, answers them in basic mode and measures us once we fall back.
"""

from __future__ import annotations

from typing import Final

from tsyncd.sync.association import poll_interval_ns
from tsyncd.sync.sample import Sample
from tsyncd.sync.symmetric import SymmetricAssociation
from tsyncd.wire.ntp import Mode, NtpPacket, kiss_code
from tsyncd.wire.timestamps import ntp64_add_ns, ntp64_diff_ns, ntp64_from_unix_ns

_XLEAVE_MAX_BASIC: Final = 4  # basic answers in a row to our interleaved packets: fall back
_XLEAVE_RETRY_POLLS: Final = 16  # polls in fallback before one interleaved packet again
_L2L_RATIO: Final = 10  # take the previous T1/T2 when T1' -> T4 is under 1/10 of T4 -> T1
_MODES: Final = (Mode.SYMMETRIC_ACTIVE, Mode.SYMMETRIC_PASSIVE)
_NTP64_MASK: Final = (1 << 64) - 1


class InterleavedSymmetricAssociation(SymmetricAssociation):
    """A symmetric active association that interleaves (``mode = "peer"``, ``xleave = true``)."""

    _sent_rec: int = 0  # Receive field of our latest packet: an interleaved answer's Origin
    _sent_interleaved: bool = False  # our latest packet was interleaved
    _prev_tx_ns: int = 0  # our TX of the packet before the one being built (its Transmit)
    _tx_count: int = 0  # our packets since the last valid packet
    _prev_tx_count: int = 0  # our packets between the last two valid packets
    _seen: tuple[int, int] | None = None  # (Receive, Transmit) of the last packet taken (test 1)
    _remote_rx: int = 0  # Receive field of the last valid packet (the peer's RX of ours)
    _remote_tx: int = 0  # Transmit field of the last valid packet
    _valid_rx_ns: int | None = None  # our RX of the last valid packet
    _valid_usable: bool = False  # ... which passed the header tests (T4 of the next sample)
    _prev_pair: tuple[int, int] | None = None  # (T1, T2) of the last valid interleaved packet
    _basic_answers: int = 0  # basic answers in a row to our interleaved packets
    _basic_polls: int = 0  # polls since we fell back to basic

    def handle_timer(self, now_ns: int) -> bytes | None:
        """Poll: the packet to send now (or None); arms the next deadline."""
        self._prev_tx_ns = self._t1_ns if self.stats.packets_sent else 0
        return super().handle_timer(now_ns)

    def _packet_timestamps(self, now_ns: int) -> tuple[int, int, int]:
        """(Origin, Receive, Transmit): interleaved when the packet counts allow it."""
        if self._basic_answers >= _XLEAVE_MAX_BASIC:
            self._basic_polls += 1
            if self._basic_polls >= _XLEAVE_RETRY_POLLS:  # probe: one interleaved packet
                self._basic_answers, self._basic_polls = _XLEAVE_MAX_BASIC - 1, 0
        interleave = (
            self.xleave
            and self._basic_answers < _XLEAVE_MAX_BASIC
            and self._tx_count == 0
            and self._prev_tx_count == 1
            and self._remote_rx != 0
            and self._valid_rx_ns is not None
            and self._prev_tx_ns != 0
        )
        basic_origin, basic_receive = self._answer_to_peer()
        if interleave and self._valid_rx_ns is not None:
            origin = self._remote_rx
            receive = ntp64_from_unix_ns(self._valid_rx_ns)
            transmit = ntp64_from_unix_ns(self._prev_tx_ns)
        else:
            origin, receive = basic_origin, basic_receive
            transmit = ntp64_from_unix_ns(now_ns)
        # Distinct fields keep the two kinds of answer apart: Receive must differ from the last
        # one (or an answer to our previous packet would match it), Transmit from Receive,
        # Origin and our last Transmit (RFC 9769; 1 LSB is 0.23 ns).
        if receive != 0:
            receive = _distinct(receive, (origin, self._sent_rec))
        transmit = _distinct(transmit, (receive, origin, self._xmt))
        self._tx_count += 1
        self._answered = False
        self._sent_interleaved = interleave
        self._sent_rec, self._xmt = receive, transmit
        return origin, receive, transmit

    def stamp_transmit(self, data: bytes, t1_ns: int) -> bytes:
        """A basic packet's Transmit is re-read just before sending; an interleaved packet's is
        the TX time of our previous packet and stays."""
        if self._sent_interleaved:
            return data
        return super().stamp_transmit(data, t1_ns)

    def handle_reply(self, data: bytes, rx_ns: int) -> Sample | None:
        """Check a packet from the peer; a sample if it is the first valid one after ours."""
        packet = self._decode(data, _MODES, "not_symmetric_mode")
        if packet is None:
            return None
        # Test 1, duplicate: RFC 9769 compares Receive and Transmit, as an interleaved packet's
        # Transmit is the time of an older packet.
        seen = (packet.receive_ts, packet.transmit_ts)
        if packet.transmit_ts == 0 or seen == self._seen:
            self._drop("duplicate")
            return None
        self._seen = seen
        # Test 2, bogus: it must answer our latest packet, in basic or interleaved mode.  Only
        # then may our next basic packet answer it (a spoofer's must not: see symmetric.py).
        basic = self._xmt != 0 and packet.origin_ts == self._xmt
        interleaved = not basic and self._sent_rec != 0 and packet.origin_ts == self._sent_rec
        if not (basic or interleaved):
            self._keep_unanswering(packet.transmit_ts, rx_ns)
            self._drop("bogus")
            return None
        if self._answered:
            # A second answer to the same packet (the peer polled twice): no sample, but our
            # next packet answers the newer one (as chronyd does).
            if ntp64_diff_ns(packet.transmit_ts, self._remote_tx) > 0:
                self._take_valid(packet, rx_ns, interleaved)
            self._drop("bogus")
            return None
        self._answered = True
        self._prev_tx_count, self._tx_count = self._tx_count, 0
        previous_rx_ns = self._valid_rx_ns if self._valid_usable else None
        previous_remote_tx, previous_pair = self._remote_tx, self._prev_pair
        self._take_valid(packet, rx_ns, interleaved)
        self._heard(packet, rx_ns)
        self.interleaved = interleaved
        if interleaved:
            self._basic_answers = self._basic_polls = 0
        elif self._sent_interleaved:
            self._basic_answers += 1
        code = kiss_code(packet)
        if code is not None:
            self._handle_kod(code, packet)
            return None
        checked = self._check_header(packet, self._peer_now(packet, interleaved))
        if checked is None:
            return None
        self._valid_usable = True
        stratum, root_delay_ns, root_disp_ns = checked
        if not interleaved:
            times = (self._t1_ns, packet.receive_ts, packet.transmit_ts, rx_ns)
        elif previous_rx_ns is None:
            self._drop("interleaved_unpaired")
            return None
        else:
            t1_ns, t2 = self._t1_ns, packet.receive_ts
            if previous_pair is not None and _L2L_RATIO * (previous_rx_ns - previous_pair[0]) < (
                t1_ns - previous_rx_ns
            ):
                t1_ns, t2 = previous_pair  # a shorter span: less of the frequency error
            times = (t1_ns, t2, packet.transmit_ts, previous_rx_ns)
            if not self._plausible(packet, times, previous_remote_tx):
                self._drop("interleaved_mismatch")
                return None
            self.stats.interleaved_replies += 1
        return self._sample(packet, times, rx_ns, stratum, root_delay_ns, root_disp_ns)

    def _peer_now(self, packet: NtpPacket, interleaved: bool) -> int:
        """The latest time the peer can have sent ``packet`` at, for test 7 (a reference time
        in the future).  A basic packet carries it; an interleaved one only its RX of our
        packet, after which the peer sends at its next poll (2 polls: slack for jitter).  A
        tsyncd peer on its local stratum announces a reference time refreshed at each update,
        so its Receive field alone would make the test fail."""
        if not interleaved:
            return packet.transmit_ts
        return ntp64_add_ns(packet.receive_ts, 2 * poll_interval_ns(max(-7, packet.poll)))

    def _take_valid(self, packet: NtpPacket, rx_ns: int, interleaved: bool) -> None:
        """``packet`` is the last valid packet: our next interleaved packet answers it, and if
        it is interleaved its T1/T2 may serve the next sample (chronyd: prev_local_tx)."""
        self._remote_rx, self._remote_tx = packet.receive_ts, packet.transmit_ts
        self._valid_rx_ns, self._valid_usable = rx_ns, False
        self._take_answer(packet.transmit_ts, rx_ns)
        self._prev_pair = (self._t1_ns, packet.receive_ts) if interleaved else None

    def _plausible(
        self, packet: NtpPacket, times: tuple[int, int, int, int], previous_remote_tx: int
    ) -> bool:
        """Whether an interleaved sample's timestamps belong together: a lost or crossed packet
        pairs the peer's TX of one packet with our RX of another (chronyd's test A does the
        same checks)."""
        t1_ns, t2, t3, t4_ns = times
        interval_ns = poll_interval_ns(max(-7, min(packet.poll, self.poll)))
        # The peer got our latest packet after sending its previous one (whichever T1/T2 the
        # sample uses: the previous pair's T2 comes before T3 by design).
        if ntp64_diff_ns(packet.receive_ts, packet.transmit_ts) <= 0:
            return False
        if (t4_ns - t1_ns) - ntp64_diff_ns(t3, t2) > interval_ns // 2:
            return False
        return not (
            previous_remote_tx != 0
            and packet.poll <= self.poll
            and ntp64_diff_ns(t3, previous_remote_tx) > interval_ns * 3 // 2
        )


def _distinct(value: int, avoid: tuple[int, ...]) -> int:
    """``value``, moved up by single LSBs until it equals none of ``avoid``."""
    while value in avoid:
        value = (value + 1) & _NTP64_MASK
    return value
