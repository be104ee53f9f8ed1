"""Two SymmetricAssociations on virtual time, polling each other on their own timers."""

from __future__ import annotations

import ipaddress
import random

from symmetric_peers import T0, S, symmetric_peer

from tsyncd.servers.passive import is_symmetric_active, passive_reply
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.sync.symmetric import SymmetricAssociation
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns

OFFSET = 400_000  # B's clock minus A's, ns
ONE_WAY = 30_000


def peer(seed: int, stratum: int, *, xleave: bool = False) -> SymmetricAssociation:
    return symmetric_peer(seed, stratum, xleave=xleave)


def test_peers_measure_each_other_with_crossing_polls() -> None:
    a, b = peer(1, 3), peer(2, 4)
    a_samples, b_samples = [], []
    for i in range(6):
        t = T0 + i * S  # A's clock; B polls 300 ms after A, on its own clock
        packet_a = a.handle_timer(t)
        assert packet_a is not None and decode_ntp(packet_a).mode == Mode.SYMMETRIC_ACTIVE
        b_samples.append(b.handle_reply(packet_a, t + ONE_WAY + OFFSET))
        packet_b = b.handle_timer(t + 300_000_000 + OFFSET)
        assert packet_b is not None
        a_samples.append(a.handle_reply(packet_b, t + 300_000_000 + ONE_WAY))
    # B's first packet answers A's; A's first packet reached B before B had sent anything.
    assert b_samples[0] is None and b.stats.drops_by_reason == {"bogus": 1}
    good_a = [s for s in a_samples if s is not None]
    good_b = [s for s in b_samples if s is not None]
    assert len(good_a) == 6 and len(good_b) == 5
    for s in good_a:
        assert abs(s.offset_ns - OFFSET) <= 2 and abs(s.delay_ns - 2 * ONE_WAY) <= 2
        assert s.stratum == 4
    for s in good_b:
        assert abs(s.offset_ns + OFFSET) <= 2 and abs(s.delay_ns - 2 * ONE_WAY) <= 2
        assert s.stratum == 3
    assert a.reach & 0b111 == 0b111


def test_replayed_peer_packet_gives_no_second_sample() -> None:
    a, b = peer(1, 3), peer(2, 4)
    packet_a = a.handle_timer(T0)
    assert packet_a is not None
    b.handle_reply(packet_a, T0 + ONE_WAY)
    packet_b = b.handle_timer(T0 + S)
    assert packet_b is not None
    assert a.handle_reply(packet_b, T0 + S + ONE_WAY) is not None
    assert a.handle_reply(packet_b, T0 + S + 2 * ONE_WAY) is None
    assert a.stats.drops_by_reason == {"duplicate": 1}


def test_client_mode_packets_are_not_peer_packets() -> None:
    a = peer(1, 3)
    a.handle_timer(T0)
    server = encode_ntp(NtpPacket(mode=Mode.SERVER, transmit_ts=5, receive_ts=4))
    assert a.handle_reply(server, T0 + ONE_WAY) is None
    assert a.stats.drops_by_reason == {"not_symmetric_mode": 1}


def test_passive_reply_answers_symmetric_active_only() -> None:
    a = peer(1, 3)
    active = a.handle_timer(T0)
    assert active is not None and is_symmetric_active(active)
    responder = NtpResponder(AccessList((), ()))
    responder.template = ResponseTemplate(leap=Leap.NONE, stratum=8, precision=-20)
    peer_ip = ipaddress.ip_address("127.0.0.1")
    reason, reply, _ = passive_reply(active, responder, peer_ip, T0 + ONE_WAY, T0 + ONE_WAY + 1000)
    assert reason == "answered" and reply is not None and len(reply) <= len(active)
    answer = decode_ntp(reply)
    assert answer.mode == Mode.SYMMETRIC_PASSIVE and answer.stratum == 8
    assert answer.origin_ts == decode_ntp(active).transmit_ts
    sample = a.handle_reply(reply, T0 + 2 * ONE_WAY + 1000)
    assert sample is not None and abs(sample.offset_ns) <= 2
    assert not is_symmetric_active(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=1)))
    denied = NtpResponder(AccessList((), (ipaddress.ip_network("127.0.0.0/8"),)))
    assert passive_reply(active, denied, peer_ip, T0, T0) == ("denied", None, False)


def test_passive_answers_interleave_with_an_interleaving_peer() -> None:
    """A peer in symmetric interleaved mode (chronyd ``peer ... xleave``) gets, from our
    stateless mode 2 answers, the kernel TX stamp of our previous answer, as a client would."""
    lag = 20_000  # our clock read before sending -> the kernel's TX stamp
    a = peer(1, 3, xleave=True)
    responder = NtpResponder(AccessList((), ()))
    responder.template = ResponseTemplate(leap=Leap.NONE, stratum=8, precision=-20)
    peer_ip = ipaddress.ip_address("127.0.0.1")
    samples = []
    for i in range(6):
        t = T0 + i * S
        data = a.handle_timer(t)
        assert data is not None
        data = a.stamp_transmit(data, t)
        a.handle_sent(t)
        a.handle_tx_timestamp(t)  # the peer's kernel stamp
        rx = t + ONE_WAY
        reason, reply, want_tx = passive_reply(data, responder, peer_ip, rx, rx + 1000)
        assert reply is not None
        # Stamp our answer once the peer's packets carry a Receive field (from its second on).
        assert want_tx == (i > 0)
        tx = rx + 1000 + lag  # when the kernel says our answer left
        if want_tx:
            assert responder.handle_tx_timestamp(reply, tx)
        samples.append((reason, a.handle_reply(reply, tx + ONE_WAY)))
    reasons = [reason for reason, _ in samples]
    assert reasons[:2] == ["answered", "answered"] and set(reasons[2:]) == {"interleaved"}
    interleaved = [s for _, s in samples[2:] if s is not None]
    assert len(interleaved) >= 3 and all(s.interleaved for s in interleaved)
    # Exact with both kernel stamps: a basic answer's Transmit (before the lag) is not.
    assert all(abs(s.offset_ns) <= 2 and abs(s.delay_ns - 2 * ONE_WAY) <= 2 for s in interleaved)
    basic = samples[1][1]
    assert basic is not None and abs(basic.offset_ns) >= lag // 2 - 2


def test_transmit_is_re_stamped_just_before_sending() -> None:
    a, b = peer(1, 3), peer(2, 4)
    early = a.handle_timer(T0)
    assert early is not None
    late = a.stamp_transmit(early, T0 + 50_000)
    assert decode_ntp(late).transmit_ts == ntp64_from_unix_ns(T0 + 50_000)
    assert late[:40] == early[:40]
    a.handle_sent(T0 + 50_000)
    b.handle_reply(late, T0 + 50_000 + ONE_WAY)
    answer = b.handle_timer(T0 + S)
    assert answer is not None
    sample = a.handle_reply(answer, T0 + S + ONE_WAY)
    assert sample is not None and abs(sample.offset_ns) <= 2  # matched the new Transmit
    assert a.stamp_transmit(b"short", T0) == b"short"


def test_transmit_adds_the_send_lag_learnt_from_kernel_tx_stamps() -> None:
    a, b = peer(1, 3), peer(2, 4)
    lag = 37_000  # clock read to the kernel's TX stamp of each packet
    now = T0
    for _ in range(3):
        data = a.handle_timer(now)
        assert data is not None
        data = a.stamp_transmit(data, now)
        a.handle_sent(now)
        a.handle_tx_timestamp(now + lag)
        b.handle_reply(data, now + lag + ONE_WAY)
        answer = b.handle_timer(now + S // 2)
        assert answer is not None
        a.handle_reply(answer, now + S // 2 + ONE_WAY)
        now += S
    # The first packet could only carry the read; later ones carry when they leave.
    data = a.handle_timer(now)
    assert data is not None
    data = a.stamp_transmit(data, now)
    assert decode_ntp(data).transmit_ts == ntp64_from_unix_ns(now + lag)
    a.handle_sent(now)
    a.handle_tx_timestamp(now + lag)
    b.handle_reply(data, now + lag + ONE_WAY)
    answer = b.handle_timer(now + S // 2)
    assert answer is not None
    sample = a.handle_reply(answer, now + S // 2 + ONE_WAY)
    assert sample is not None and abs(sample.offset_ns) <= 2  # T1 is the kernel's stamp


def forged(rng: random.Random) -> bytes:
    """A packet that claims to come from the peer, by an off-path spoofer who sees nothing:
    every timestamp is a guess (RFC 5905 A.5.1.1 let it set our next Origin: CVE-2015-1799)."""
    ts = [rng.getrandbits(64) | 1 for _ in range(3)]
    return encode_ntp(
        NtpPacket(
            mode=Mode.SYMMETRIC_ACTIVE,
            stratum=2,
            origin_ts=ts[0],
            receive_ts=ts[1],
            transmit_ts=ts[2],
        )
    )


def test_spoofed_packets_do_not_change_what_we_answer() -> None:
    """Forged packets between the peer's packet and our next poll fail test 2; our next packet
    still answers the real peer, which keeps measuring us (before the fix, each forged packet
    became our next Origin and the peer dropped every packet of ours as bogus)."""
    a, b = peer(1, 3), peer(2, 4)
    rng = random.Random(7)
    a_samples, b_samples = [], []
    packet_b: bytes | None = None
    for i in range(6):
        t = T0 + i * S
        packet_a = a.handle_timer(t)
        assert packet_a is not None
        if packet_b is not None:
            assert decode_ntp(packet_a).origin_ts == decode_ntp(packet_b).transmit_ts
        b_samples.append(b.handle_reply(packet_a, t + ONE_WAY + OFFSET))
        packet_b = b.handle_timer(t + 300_000_000 + OFFSET)
        assert packet_b is not None
        a_samples.append(a.handle_reply(packet_b, t + 300_000_000 + ONE_WAY))
        for k in range(3):  # the spoofer's packets reach A before its next poll
            assert a.handle_reply(forged(rng), t + 400_000_000 + k) is None
    assert all(s is not None for s in a_samples) and all(s is not None for s in b_samples[1:])
    assert a.stats.drops_by_reason == {"bogus": 18} and b.stats.drops_by_reason == {"bogus": 1}
    assert b.reach & 0b11110 == 0b11110  # bit 0: B polled after its latest sample


def test_a_faster_peer_is_answered_at_its_latest_packet() -> None:
    """B polls twice per A's poll: its second packet answers A's latest packet again, gives no
    sample, but is the one A's next packet answers (B's test 2 checks its latest Transmit)."""
    a, b = peer(1, 3), peer(2, 4)
    a_samples, b_samples = [], []
    for i in range(6):
        t = T0 + i * S
        packet_a = a.handle_timer(t)
        assert packet_a is not None
        b_samples.append(b.handle_reply(packet_a, t + ONE_WAY + OFFSET))
        for after in (300_000_000, 700_000_000):
            packet_b = b.handle_timer(t + after + OFFSET)
            assert packet_b is not None
            a_samples.append(a.handle_reply(packet_b, t + after + ONE_WAY))
    assert [s is not None for s in a_samples] == [True, False] * 6
    assert all(s is not None for s in b_samples[1:])
    assert a.stats.drops_by_reason == {"bogus": 6}


def test_a_spoofed_packet_at_the_start_cannot_outlive_a_valid_one() -> None:
    """Before any valid packet, our poll answers the latest bogus packet (that is how the
    exchange starts); once the peer answered us, a forged packet no longer counts."""
    a, b = peer(1, 3), peer(2, 4)
    packet_a = a.handle_timer(T0)
    assert packet_a is not None
    assert b.handle_reply(packet_a, T0 + ONE_WAY) is None  # B had sent nothing: bogus
    packet_b = b.handle_timer(T0 + S // 2)
    assert packet_b is not None
    assert decode_ntp(packet_b).origin_ts == decode_ntp(packet_a).transmit_ts
    assert a.handle_reply(packet_b, T0 + S // 2 + ONE_WAY) is not None
    assert a.handle_reply(forged(random.Random(3)), T0 + S // 2 + 2 * ONE_WAY) is None
    again = a.handle_timer(T0 + S)
    assert again is not None
    assert decode_ntp(again).origin_ts == decode_ntp(packet_b).transmit_ts
    assert b.handle_reply(again, T0 + S + ONE_WAY) is not None
