"""NtpAssociation on virtual time, talking to the real sans-IO responder."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest

from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.sync.association import AssociationState, NtpAssociation, poll_interval_ns
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns, short_from_ns

S = 1_000_000_000
T0 = 1_800_000_000 * S  # an arbitrary Unix time in 2027
CLIENT = ipaddress.ip_address("127.0.0.1")


def make(iburst: bool = False, min_poll: int = 4, max_poll: int = 6) -> NtpAssociation:
    return NtpAssociation(
        min_poll=min_poll,
        max_poll=max_poll,
        iburst=iburst,
        precision_log2=-20,
        rng=random.Random(1),
        now_ns=T0,
    )


def server(stratum: int = 2) -> NtpResponder:
    r = NtpResponder(AccessList((), ()))
    r.template = ResponseTemplate(
        leap=Leap.NONE,
        stratum=stratum,
        precision=-20,
        root_delay=short_from_ns(1_000_000),
        root_dispersion=short_from_ns(2_000_000),
        reference_id=refid_from_ascii("GPS"),
        reference_ts=ntp64_from_unix_ns(T0 - S),
    )
    return r


def exchange(
    a: NtpAssociation, r: NtpResponder, now: int, *, offset: int, one_way: int
) -> tuple[bytes, bytes]:
    """Client at ``now``; server clock = client clock + offset; symmetric path delay."""
    request = a.handle_timer(now)
    assert request is not None
    server_rx = now + one_way + offset
    _, reply = r.handle_request(request, CLIENT, server_rx, server_rx + 1000)
    assert reply is not None
    return request, reply


def test_first_request_is_private_client_mode() -> None:
    a = make()
    deadline = a.next_deadline_ns()
    assert deadline is not None and T0 <= deadline <= T0 + poll_interval_ns(-4)
    request = decode_ntp(a.handle_timer(T0) or b"")
    assert request.mode == Mode.CLIENT and request.version == 4
    # RFC 9109: nothing about us but a random transmit cookie.
    assert request.reference_id == 0 and request.reference_ts == 0 and request.origin_ts == 0
    assert request.transmit_ts != 0 and request.transmit_ts != ntp64_from_unix_ns(T0)


def test_good_reply_gives_offset_and_delay() -> None:
    a, r = make(), server()
    offset, one_way = 250_000, 40_000
    _, reply = exchange(a, r, T0, offset=offset, one_way=one_way)
    sample = a.handle_reply(reply, T0 + 2 * one_way + 1000)
    assert sample is not None
    assert abs(sample.offset_ns - offset) <= 2  # ns rounding of NTP fixed point
    assert abs(sample.delay_ns - 2 * one_way) <= 2
    assert sample.stratum == 2
    assert sample.root_delay_ns >= 1_000_000
    assert a.reach == 1 and a.stats.packets_received == 1


def test_replay_and_wrong_origin_are_dropped() -> None:
    a, r = make(), server()
    _, reply = exchange(a, r, T0, offset=0, one_way=1000)
    assert a.handle_reply(reply, T0 + 3000) is not None
    assert a.handle_reply(reply, T0 + 4000) is None  # same reply again
    assert a.stats.drops_by_reason == {"duplicate": 1}
    forged = encode_ntp(
        NtpPacket(mode=Mode.SERVER, stratum=1, origin_ts=12345, receive_ts=1, transmit_ts=2)
    )
    assert a.handle_reply(forged, T0 + 5000) is None
    assert a.stats.drops_by_reason["bogus"] == 1


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (ResponseTemplate(leap=Leap.UNSYNCHRONIZED, stratum=0), "unsynchronized"),
        (ResponseTemplate(leap=Leap.NONE, stratum=16), "unsynchronized"),
        (
            ResponseTemplate(leap=Leap.NONE, stratum=3, root_dispersion=short_from_ns(17 * S)),
            "bad_header",
        ),
    ],
)
def test_unfit_server_is_not_used(template: ResponseTemplate, reason: str) -> None:
    a, r = make(), server()
    r.template = template
    _, reply = exchange(a, r, T0, offset=0, one_way=1000)
    assert a.handle_reply(reply, T0 + 3000) is None
    assert a.stats.drops_by_reason == {reason: 1}
    assert a.reach == 0
    assert a.server_unsynchronized is (reason == "unsynchronized")


def test_a_synchronized_reply_clears_the_unsynchronized_mark() -> None:
    a, r = make(), server()
    r.template = ResponseTemplate(leap=Leap.UNSYNCHRONIZED, stratum=0)
    _, reply = exchange(a, r, T0, offset=0, one_way=1000)
    assert a.handle_reply(reply, T0 + 3000) is None and a.server_unsynchronized
    r.template = ResponseTemplate(leap=Leap.NONE, stratum=3)
    _, reply = exchange(a, r, T0 + 10 * S, offset=0, one_way=1000)
    assert a.handle_reply(reply, T0 + 10 * S + 3000) is not None
    assert not a.server_unsynchronized


def test_a_server_synchronized_to_us_is_a_loop() -> None:
    """chronyd's test D: a reply of stratum >= 2 naming our address is our own time come
    back; it counts for reach, not as a sample, until a reply names another reference."""
    a, r = make(), server(stratum=3)
    a.local_refids = frozenset({0x7F000001})
    r.template = dataclasses.replace(r.template, reference_id=0x7F000001)
    _, reply = exchange(a, r, T0, offset=0, one_way=1000)
    assert a.handle_reply(reply, T0 + 3000) is None
    assert a.stats.drops_by_reason == {"loop": 1} and a.synchronized_to_us == 0x7F000001
    assert a.reach == 1 and a.stats.packets_received == 0
    assert a.stats.drops_since_reply == {"loop": 1}
    r.template = dataclasses.replace(r.template, reference_id=0x0A000001)
    _, reply = exchange(a, r, T0 + 16 * S, offset=0, one_way=1000)
    assert a.handle_reply(reply, T0 + 16 * S + 3000) is not None
    assert a.synchronized_to_us is None and a.stats.drops_since_reply == {}
    # At stratum 1 the refid names a reference clock, never an address.
    r.template = dataclasses.replace(r.template, stratum=1, reference_id=0x7F000001)
    _, reply = exchange(a, r, T0 + 32 * S, offset=0, one_way=1000)
    assert a.handle_reply(reply, T0 + 32 * S + 3000) is not None


def kod(request: bytes, code: str, poll: int = 0) -> bytes:
    req = decode_ntp(request)
    return encode_ntp(
        NtpPacket(
            leap=Leap.UNSYNCHRONIZED,
            mode=Mode.SERVER,
            stratum=0,
            poll=poll,
            reference_id=refid_from_ascii(code),
            origin_ts=req.transmit_ts,
        )
    )


def test_kod_deny_demobilizes_only_when_origin_matches() -> None:
    a = make()
    request = a.handle_timer(T0) or b""
    spoofed = bytearray(kod(request, "DENY"))
    spoofed[24] ^= 0xFF  # origin no longer ours
    assert a.handle_reply(bytes(spoofed), T0 + 1000) is None
    assert a.state is AssociationState.ACTIVE
    assert a.handle_reply(kod(request, "DENY"), T0 + 1000) is None
    assert a.state is AssociationState.DEMOBILIZED
    assert a.next_deadline_ns() is None and a.handle_timer(T0 + 100 * S) is None
    assert a.stats.kiss_code == "DENY"


def test_burst_or_online_polls_a_source_a_deny_stopped_again() -> None:
    """QA s19 hunt-client F4: chronyd keeps polling a server that kissed DENY (it fails its
    test 6), so a fixed access list brings it back; here the operator's burst or online
    does, and say so (burst "started" sent nothing; offline/online said "already")."""
    for restart in ("burst", "online", "offline then online"):
        a, r = make(), server()
        request = a.handle_timer(T0) or b""
        assert a.handle_reply(kod(request, "DENY"), T0 + 1000) is None
        assert a.state is AssociationState.DEMOBILIZED and a.stats.kisses == 1
        now = T0 + 100 * S
        if restart == "burst":
            a.start_burst(now)
        elif restart == "online":
            assert a.set_online(True, now) is True  # it was stopped, so this changes it
        else:
            assert a.set_online(False, now) is True
            assert a.next_deadline_ns() is None and a.state is AssociationState.DEMOBILIZED
            assert a.set_online(True, now) is True
        deadline = a.next_deadline_ns()
        assert deadline is not None and deadline <= now + S // 16
        assert a.state is AssociationState.INIT and a.unusable_reason is None
        _, reply = exchange(a, r, deadline, offset=0, one_way=1000)
        assert a.handle_reply(reply, deadline + 3000) is not None and a.reach == 1
        assert a.set_online(True, now) is False  # online and polling: already


def test_kod_rate_increases_poll() -> None:
    a = make(min_poll=4, max_poll=8)
    request = a.handle_timer(T0) or b""
    a.handle_reply(kod(request, "RATE", poll=6), T0 + 1000)
    assert a.poll == 6  # at least the server's hint
    # ... and the next poll waits 4 intervals more, as chronyd's does after a RATE.
    assert a.next_deadline_ns() == T0 + 5 * poll_interval_ns(6)
    a.reach = 1
    a.set_system_poll(4)
    assert a.poll == 6  # the discipline may not undo a RATE kiss


def test_kod_rate_at_max_poll_still_backs_off_and_a_reply_ends_it() -> None:
    """RFC 5905 §7.4: each RATE reduces the rate, even with min-poll = max-poll (QA s16 F1)."""
    a, r = make(min_poll=0, max_poll=0), server()
    now, gaps = T0, []
    for _ in range(7):
        request = a.handle_timer(now) or b""
        a.handle_reply(kod(request, "RATE"), now + 1000)
        nxt = a.next_deadline_ns()
        assert nxt is not None
        gaps.append((nxt - now) // S)
        now = nxt
    assert a.poll == 0  # max-poll holds the poll ...
    assert gaps == [5, 9, 17, 33, 33, 33, 33]  # ... the wait grows: 4, 8, 16, 32 more polls
    _, reply = exchange(a, r, now, offset=0, one_way=1000)
    assert a.handle_reply(reply, now + 3000) is not None
    nxt = a.next_deadline_ns()
    assert nxt is not None and nxt - now <= 2 * S  # a valid reply: the normal poll again
    request = a.handle_timer(nxt) or b""
    a.handle_reply(kod(request, "RATE"), nxt + 1000)
    assert (a.next_deadline_ns() or 0) - nxt == 5 * S  # a new RATE starts at 4 polls again


def test_iburst_then_poll_rises_and_reach_fills() -> None:
    a, r = make(iburst=True, min_poll=4, max_poll=6), server()
    now = a.next_deadline_ns() or T0
    gaps = []
    for _ in range(12):
        _, reply = exchange(a, r, now, offset=0, one_way=1000)
        assert a.handle_reply(reply, now + 3000) is not None
        nxt = a.next_deadline_ns()
        assert nxt is not None
        gaps.append(nxt - now)
        now = nxt
    assert gaps[:3] == [2 * S] * 3  # iburst: 4 requests 2 s apart
    assert a.reach == 0xFF
    assert a.poll == 4  # the association does not raise its own poll ...
    a.set_system_poll(9)
    assert a.poll == 6  # ... it follows the discipline's, within min..max
    a.set_system_poll(1)
    assert a.poll == 4


def test_unanswered_polls_empty_reach() -> None:
    a = make()
    now = T0
    for _ in range(9):
        a.handle_timer(now)
        now = a.next_deadline_ns() or now
    assert a.reach == 0 and a.stats.packets_sent == 9


@pytest.mark.parametrize(
    ("busy_ns", "dropped"),
    [(2 * S, False), (-2 * S, True), (5 * S, True)],
    ids=["longer-than-the-round-trip", "transmit-before-receive", "over-4-s"],
)
def test_a_server_interval_that_is_no_measurement(busy_ns: int, dropped: bool) -> None:
    """QA s17 hunt-upstream F1: a server claiming it held the request 2 s in a 60 µs round
    trip gave a negative delay, floored to the precision: the best sample there could be, which
    stepped the clock.  As chronyd: |delay|, so the error bound covers the truth, and its test
    A drops client replies whose Transmit - Receive is negative or over 4 s."""
    a, r = make(), server()
    request = a.handle_timer(T0)
    assert request is not None
    rx = T0 + 30_000
    _, reply = r.handle_request(request, CLIENT, rx, rx)
    assert reply is not None
    packet = decode_ntp(reply)
    lying = dataclasses.replace(
        packet,
        transmit_ts=ntp64_from_unix_ns(rx + busy_ns),
        reference_ts=ntp64_from_unix_ns(T0 - 10 * S),  # not after its Transmit (test 7)
    )
    sample = a.handle_reply(encode_ntp(lying), T0 + 60_000)
    if dropped:
        assert sample is None and a.stats.drops_by_reason == {"bad_server_interval": 1}
    else:
        assert sample is not None and abs(sample.delay_ns - (busy_ns - 60_000)) <= 2
