"""Symmetric interleaved mode (RFC 9769) on virtual time: two peers polling each other on
their own timers, with kernel TX stamps that come ``LAG`` after the clock read before sending
(a basic packet carries that read plus the lag learnt from earlier stamps, ``SendLag``)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from symmetric_peers import T0, S, announce, symmetric_peer

from tsyncd.sync.core import SyncCore
from tsyncd.sync.sample import Sample
from tsyncd.sync.symmetric import SymmetricAssociation
from tsyncd.sync.symmetric_xleave import InterleavedSymmetricAssociation
from tsyncd.wire.ntp import NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns

OFFSET = 400_000  # B's clock minus A's (= true time), ns
ONE_WAY = 30_000  # ns
LAG = 20_000  # from the clock read before sending to the kernel's TX stamp, ns


def peer(seed: int, stratum: int, *, xleave: bool = True) -> SymmetricAssociation:
    return symmetric_peer(seed, stratum, xleave=xleave)


@dataclass
class Side:
    """One peer, its clock offset from true time, and what it sent and measured."""

    assoc: SymmetricAssociation
    clock_ns: int  # this peer's clock minus true time, at T0
    sent: list[NtpPacket] = field(default_factory=list)
    tx_ns: list[int] = field(default_factory=list)  # kernel TX stamps, own clock
    samples: list[Sample | None] = field(default_factory=list)
    ppm: int = 0  # how much faster than true time this peer's clock runs

    def clock(self, true_ns: int) -> int:
        """This peer's clock reading at true time ``true_ns``."""
        return true_ns + self.clock_ns + (true_ns - T0) * self.ppm // 1_000_000


def send(side: Side, true_ns: int) -> tuple[bytes, int]:
    """Poll ``side`` at true time ``true_ns``; (packet, true time it leaves)."""
    now = side.clock(true_ns)
    data = side.assoc.handle_timer(now)
    assert data is not None
    data = side.assoc.stamp_transmit(data, now)
    side.assoc.handle_sent(now)
    side.assoc.handle_tx_timestamp(now + LAG)
    side.sent.append(decode_ntp(data))
    side.tx_ns.append(now + LAG)
    return data, true_ns + LAG


def deliver(side: Side, data: bytes, left_true_ns: int) -> Sample | None:
    sample = side.assoc.handle_reply(data, side.clock(left_true_ns + ONE_WAY))
    side.samples.append(sample)
    return sample


def exchange_rounds(
    a: Side, b: Side, rounds: int, start: int = 0, b_after_ns: int = 300_000_000
) -> None:
    """A polls each second, B ``b_after_ns`` later; every packet arrives."""
    for i in range(start, start + rounds):
        t = T0 + i * S
        deliver(b, *send(a, t))
        deliver(a, *send(b, t + b_after_ns))


def is_exact(s: Sample, offset_ns: int) -> bool:
    return abs(s.offset_ns - offset_ns) <= 2 and abs(s.delay_ns - 2 * ONE_WAY) <= 2


def test_interleaved_peers_measure_with_kernel_tx_stamps() -> None:
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4), OFFSET)
    exchange_rounds(a, b, 8)
    good_a = [s for s in a.samples if s is not None]
    good_b = [s for s in b.samples if s is not None]
    # A's first packet reaches B before B sent anything (bogus); B's answer is basic, and from
    # then on every packet is interleaved.  B's first interleaved packet pairs with nothing
    # valid (A's first packet was bogus to it), so B measures from the third one.
    assert [s.interleaved for s in good_a] == [False] + [True] * 7
    assert a.assoc.stats.interleaved_replies == 7 and a.assoc.interleaved
    assert b.samples[:2] == [None, None] and len(good_b) == 6
    assert b.assoc.stats.drops_by_reason == {"bogus": 1, "interleaved_unpaired": 1}
    # Interleaved samples use both kernel TX stamps: exact.  Basic ones carry the TX lag.
    assert all(is_exact(s, OFFSET) for s in good_a if s.interleaved)
    assert all(s.interleaved and is_exact(s, -OFFSET) for s in good_b)
    assert all(not is_exact(s, OFFSET) for s in good_a if not s.interleaved)
    assert a.assoc.stats.drops_by_reason == {} and a.assoc.reach & 0b111 == 0b111


def test_interleaved_packet_fields() -> None:
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4), OFFSET)
    exchange_rounds(a, b, 4)
    last_from_b, mine = b.sent[-2], a.sent[-1]  # A's latest packet answers B's previous one
    assert mine.origin_ts == last_from_b.receive_ts  # B's RX of A's packet before
    rx_of_b = T0 + 2 * S + 300_000_000 + LAG + ONE_WAY  # A's RX of that packet of B's
    assert mine.receive_ts == ntp64_from_unix_ns(rx_of_b)
    assert mine.transmit_ts == ntp64_from_unix_ns(a.tx_ns[-2])  # kernel TX of the previous
    # Its Transmit is not re-stamped at sending, unlike a basic packet's.
    data = encode_ntp(mine)
    assert a.assoc.stamp_transmit(data, T0 + 9 * S) == data
    # B's answer names A's packet by its Receive field, not its Transmit.
    assert b.sent[-1].origin_ts == mine.receive_ts != mine.transmit_ts


def test_falls_back_to_basic_against_a_basic_peer_and_probes_again() -> None:
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4, xleave=False), OFFSET)
    exchange_rounds(a, b, 40)
    # An interleaved packet carries the TX stamp of the packet before it (moved up by an LSB
    # where it equals our last Transmit, which a basic packet's learnt lag makes exact here).
    interleaved_sent = [False] + [
        abs(p.transmit_ts - ntp64_from_unix_ns(tx)) <= 1
        for p, tx in zip(a.sent[1:], a.tx_ns, strict=False)
    ]
    # A interleaves 4 times, gets basic answers, falls back; one probe every 16 polls.
    first = interleaved_sent.index(True)
    assert interleaved_sent[first : first + 4] == [True] * 4
    assert sum(interleaved_sent[first + 4 :]) == 2
    assert a.assoc.stats.interleaved_replies == 0 and not a.assoc.interleaved
    # The basic peer measures A whenever A sends basic packets; A measures B throughout.
    b_measured = [s is not None for s in b.samples]
    assert sum(b_measured) >= 40 - 4 - 2 * 2 - 2
    assert all(s is not None for s in a.samples[2:])


def test_two_interleaving_peers_recover_from_a_lost_packet() -> None:
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4), OFFSET)
    exchange_rounds(a, b, 5)
    send(a, T0 + 5 * S)  # lost
    deliver(a, *send(b, T0 + 5 * S + 300_000_000))
    exchange_rounds(a, b, 6, start=6)
    assert a.samples[-1] is not None and a.samples[-1].interleaved
    assert b.samples[-1] is not None and b.samples[-1].interleaved
    for side, offset in ((a, OFFSET), (b, -OFFSET)):
        assert all(is_exact(s, offset) for s in side.samples if s is not None and s.interleaved)
        assert "interleaved_mismatch" not in side.assoc.stats.drops_by_reason


def interleaving_pair() -> tuple[Side, Side, bytes, int]:
    """Two peers past their first exchanges, and B's next (interleaved) packet in flight."""
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4), OFFSET)
    exchange_rounds(a, b, 4)
    deliver(b, *send(a, T0 + 4 * S))
    return a, b, *send(b, T0 + 4 * S + 300_000_000)


def test_duplicate_bogus_and_second_answers_give_no_sample() -> None:
    a, b, data, left = interleaving_pair()
    assert deliver(a, data, left) is not None
    assert deliver(a, data, left + 5_000) is None  # replayed
    forged = encode_ntp(dataclasses.replace(decode_ntp(data), origin_ts=12345, transmit_ts=12345))
    assert deliver(a, forged, left + 6_000) is None
    again, left2 = send(b, T0 + 4 * S + 600_000_000)  # B polls twice before A does
    assert deliver(a, again, left2) is None
    assert a.assoc.stats.drops_by_reason == {"duplicate": 1, "bogus": 2}
    # A's next packet answers B's newer packet, which B then pairs correctly (as chronyd does).
    answer, left3 = send(a, T0 + 5 * S)
    assert decode_ntp(answer).origin_ts == decode_ntp(again).receive_ts
    sample = deliver(b, answer, left3)
    assert sample is not None and sample.interleaved and is_exact(sample, -OFFSET)


def test_mismatched_interleaved_timestamps_are_dropped() -> None:
    a, _, data, left = interleaving_pair()
    packet = decode_ntp(data)
    # The TX of an older packet (a lost one in between): the delay would be over half a poll.
    stale = dataclasses.replace(packet, transmit_ts=packet.transmit_ts - (2 << 32))
    assert deliver(a, encode_ntp(stale), left) is None
    assert a.assoc.stats.drops_by_reason == {"interleaved_mismatch": 1}


def test_interleaved_packet_after_an_unusable_one_is_unpaired() -> None:
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4), OFFSET)
    exchange_rounds(a, b, 4)
    announce(b.assoc, 16)  # B loses its sync for one packet: A may not use its timestamps
    exchange_rounds(a, b, 1, start=4)
    announce(b.assoc, 4)
    exchange_rounds(a, b, 2, start=5)
    assert a.assoc.stats.drops_by_reason == {"unsynchronized": 1, "interleaved_unpaired": 1}
    last = a.samples[-1]
    assert last is not None and last.interleaved and is_exact(last, OFFSET)


def test_reference_time_after_the_receive_field_is_no_bad_header() -> None:
    """A peer on its local stratum refreshes its reference time at each update: later than its
    RX of our packet (an interleaved packet's Receive), yet not after it sent the packet."""
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4), OFFSET)
    for i, ahead_ns in enumerate([-1_000_000] * 6 + [10 * S]):
        t = T0 + i * S
        deliver(b, *send(a, t))
        b.assoc.reference_ts = ntp64_from_unix_ns(t + 300_000_000 + OFFSET + ahead_ns)
        deliver(a, *send(b, t + 300_000_000))
    assert a.assoc.stats.interleaved_replies == 5
    assert a.samples[-1] is None and a.assoc.stats.drops_by_reason == {"bad_header": 1}


def test_core_mobilizes_the_interleaved_class_for_xleave_peers() -> None:
    core = SyncCore(
        local_stratum=None, min_sources=1, precision_log2=-20, discipline=None, now_ns=T0
    )
    for name, xleave, cls in (
        ("x", True, InterleavedSymmetricAssociation),
        ("b", False, SymmetricAssociation),
    ):
        state = core.add_source(
            name,
            reference_id=1,
            min_poll=0,
            max_poll=0,
            iburst=False,
            rng=random.Random(1),
            now_ns=T0,
            symmetric=True,
            xleave=xleave,
        )
        assert type(state.association) is cls


def test_polls_close_in_phase_measure_over_the_shorter_span() -> None:
    """B polls 10 ms after A with a clock 100 ppm fast.  A's latest T1/T2 come almost a
    second after T3/T4, which would put 100 µs of frequency error in its delay; the previous
    exchange's T1/T2 lie 10 ms before T4 (under a tenth of T4 -> T1), as chronyd picks them."""
    ppm, after = 100, 10_000_000
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4), OFFSET, ppm=ppm)
    exchange_rounds(a, b, 8, b_after_ns=after)
    good_a = [s for s in a.samples if s is not None and s.interleaved]
    good_b = [s for s in b.samples if s is not None and s.interleaved]
    assert len(good_a) == 7 and len(good_b) == 6
    # A's first interleaved sample has no earlier interleaved exchange to take T1/T2 from: it
    # spans about a second, 100 µs of frequency error in its delay.
    assert abs(good_a[0].delay_ns - 2 * ONE_WAY - 100_000) <= 1_500
    # The rest span 10 ms: within its error (1 µs at 100 ppm).  B's own polls come 10 ms after
    # A's packets, so its latest T1/T2 are already the close ones.
    assert all(abs(s.delay_ns - 2 * ONE_WAY) <= 1_500 for s in good_a[1:] + good_b)
    for s in good_a[1:]:
        # B minus A near the exchange measured (a round before this packet), drifting 100 µs/s
        drift = (s.local_rx_ns - T0 - S) * ppm // 1_000_000
        assert abs(s.offset_ns - (OFFSET + drift)) <= 2_000, (s.offset_ns, OFFSET + drift)


def run_with_spoofer(b_xleave: bool, spoofing: bool) -> tuple[Side, Side]:
    """30 rounds; with ``spoofing``, a forged packet reaches A after each of B's packets."""
    rng = random.Random(7)
    a, b = Side(peer(1, 3), 0), Side(peer(2, 4, xleave=b_xleave), OFFSET)
    for i in range(30):
        t = T0 + i * S
        deliver(b, *send(a, t))
        deliver(a, *send(b, t + 300_000_000))
        if spoofing:
            stamps = [rng.getrandbits(64) | 1 for _ in range(3)]
            spoof = dataclasses.replace(
                b.sent[-1], origin_ts=stamps[0], receive_ts=stamps[1], transmit_ts=stamps[2]
            )
            assert deliver(a, encode_ntp(spoof), t + 400_000_000) is None
    return a, b


def test_spoofed_packets_do_not_stop_the_exchange() -> None:
    """Forged packets fail test 2 at A, and neither A's basic packets (to a basic peer, after
    the fallback) nor its interleaved ones answer them: B measures A as often as without the
    spoofer (before the fix, a basic B measured nothing)."""
    for b_xleave in (False, True):
        _, quiet_b = run_with_spoofer(b_xleave, spoofing=False)
        a, b = run_with_spoofer(b_xleave, spoofing=True)
        measured = [s is not None for s in b.samples]
        assert measured == [s is not None for s in quiet_b.samples]
        assert sum(measured) == (28 if b_xleave else 24)
        assert b.assoc.stats.drops_by_reason == quiet_b.assoc.stats.drops_by_reason
        assert a.assoc.stats.drops_by_reason == {"bogus": 30}
        assert all(s is not None for s in a.samples[::2])
