"""BroadcastAssociation fed by the real broadcast packet builder, on virtual time."""

from __future__ import annotations

import random

from tsyncd.servers.broadcast import broadcast_packet
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.sync.broadcast import BroadcastAssociation
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp

S = 1_000_000_000
T0 = 1_800_000_000 * S
TEMPLATE = ResponseTemplate(leap=Leap.NONE, stratum=3, precision=-20)


def make(delay_ns: int) -> BroadcastAssociation:
    a = BroadcastAssociation(
        min_poll=0, max_poll=0, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )
    a.broadcast_delay_ns = delay_ns
    return a


def test_offset_is_t3_minus_t4_plus_half_the_assumed_round_trip() -> None:
    a = make(delay_ns=200_000)
    offset, one_way = 5_000_000, 100_000
    packet = broadcast_packet(TEMPLATE, 1.0, T0 + offset)
    assert packet is not None and decode_ntp(packet).mode == Mode.BROADCAST
    sample = a.handle_reply(packet, T0 + one_way)
    assert sample is not None and abs(sample.offset_ns - offset) <= 2
    assert sample.stratum == 3 and a.reach == 1
    assert a.handle_reply(packet, T0 + 2 * one_way) is None  # replayed
    assert a.stats.drops_by_reason == {"duplicate": 1}


def test_timer_never_sends_and_reach_ages() -> None:
    a = make(delay_ns=0)
    for i in range(8):
        assert a.handle_timer(T0 + i * S) is None
    assert a.reach == 0 and a.next_deadline_ns() == T0 + 8 * S


def test_other_modes_and_unsynchronized_servers_are_not_used() -> None:
    a = make(delay_ns=0)
    assert broadcast_packet(ResponseTemplate(), 1.0, T0) is None  # we know no time: silent
    server = encode_ntp(NtpPacket(mode=Mode.SERVER, stratum=2, transmit_ts=9, receive_ts=8))
    assert a.handle_reply(server, T0) is None
    unsynced = encode_ntp(NtpPacket(mode=Mode.BROADCAST, leap=Leap.UNSYNCHRONIZED, transmit_ts=9))
    assert a.handle_reply(unsynced, T0) is None
    assert a.stats.drops_by_reason == {"not_broadcast_mode": 1, "unsynchronized": 1}
