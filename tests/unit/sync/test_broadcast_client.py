"""BroadcastAssociation fed by the real broadcast packet builder, on virtual time."""

from __future__ import annotations

import ipaddress
import random

import pytest

from tsyncd.servers.broadcast import broadcast_packet
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.sync.association import AssociationState
from tsyncd.sync.broadcast import (
    FIRST_BROADCASTS,
    VOLLEY_GOOD_REPLIES,
    VOLLEY_MAX_REQUESTS,
    BroadcastAssociation,
)
from tsyncd.sync.core import SyncCore
from tsyncd.sync.discipline import Discipline, DisciplineConfig, Step
from tsyncd.sync.sample import MAXDISP_NS, Sample
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
    assert not a.polled
    for i in range(8):
        assert a.handle_timer(T0 + i * S) is None
    assert a.reach == 0 and a.next_deadline_ns() == T0 + 8 * S
    # An interval went by (the silent server is unreachable), but nothing was sent (QA s19:
    # chronyc's Total TX counted the intervals).
    assert a.polled and a.stats.packets_sent == 0


def test_burst_is_skipped_and_leaves_reach_alone() -> None:
    """QA s19 #6: tsyncctl burst sent nothing but moved the next interval to now, so each one
    shifted a 0 into reach (nine made 377 into 20).  Now it is skipped, saying why, and an
    iburst key does not make the source count as bursting (tsyncctl activity)."""
    core = broadcast_core()
    now = T0
    for _ in range(8):
        now += S
        hear(core, now, 0)
    a = core.sources["bc"].association
    assert a.reach == 0xFF
    deadline = a.next_deadline_ns()
    for _ in range(9):
        skipped = core.burst(now + S // 2)
        assert skipped == {"bc": "a broadcast source only listens: it has no requests to send"}
        core.handle_timer(now + S // 2)
    assert a.reach == 0xFF and a.next_deadline_ns() == deadline
    iburst = BroadcastAssociation(
        min_poll=0, max_poll=0, iburst=True, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )
    assert not iburst.bursting


def test_other_modes_and_unsynchronized_servers_are_not_used() -> None:
    a = make(delay_ns=0)
    assert broadcast_packet(ResponseTemplate(), 1.0, T0) is None  # we know no time: silent
    server = encode_ntp(NtpPacket(mode=Mode.SERVER, stratum=2, transmit_ts=9, receive_ts=8))
    assert a.handle_reply(server, T0) is None
    unsynced = encode_ntp(NtpPacket(mode=Mode.BROADCAST, leap=Leap.UNSYNCHRONIZED, transmit_ts=9))
    assert a.handle_reply(unsynced, T0) is None
    assert a.stats.drops_by_reason == {"not_broadcast_mode": 1, "unsynchronized": 1}


# ---------------------------------------------------------------- calibration volley

SERVER = ResponseTemplate(leap=Leap.NONE, stratum=3, precision=-20)
CLIENT_IP = ipaddress.ip_address("192.0.2.7")


def calibrating(delay_ns: int = 500_000_000) -> tuple[BroadcastAssociation, NtpResponder]:
    a = make(delay_ns)
    a.calibrate = True
    r = NtpResponder(AccessList((), ()))
    r.template = SERVER
    return a, r


def broadcast(a: BroadcastAssociation, at_ns: int, *, offset: int, one_way: int) -> Sample | None:
    packet = broadcast_packet(SERVER, 1.0, at_ns + offset)
    assert packet is not None
    return a.handle_reply(packet, at_ns + one_way)


def next_request(a: BroadcastAssociation) -> tuple[int, bytes]:
    """Run the timer at each deadline (reach intervals too) until a request goes out."""
    for _ in range(4):
        now = a.next_deadline_ns()
        assert now is not None
        request = a.handle_timer(now)
        if request is not None:
            assert decode_ntp(request).mode == Mode.CLIENT
            return now, request
    raise AssertionError("no volley request")


def answer(a: BroadcastAssociation, r: NtpResponder, *, offset: int, one_way: int) -> int:
    """Send the next volley request; the server answers over a symmetric path.  When sent."""
    now, request = next_request(a)
    a.handle_sent(now)
    server_rx = now + one_way + offset
    _, reply = r.handle_request(request, CLIENT_IP, server_rx, server_rx + 1000)
    assert reply is not None
    assert a.handle_reply(reply, now + 2 * one_way + 1000) is None  # a delay, not a sample
    return now


def test_first_broadcast_starts_a_volley_whose_best_round_trip_replaces_the_assumed_one() -> None:
    a, r = calibrating()
    offset = 3_000_000
    assert broadcast(a, T0, offset=offset, one_way=40_000) is None  # calibrating first
    assert a.calibrating and a.reach == 1
    sent = [answer(a, r, offset=offset, one_way=w) for w in (90_000, 30_000, 70_000, 50_000)]
    assert sent == [T0 + 40_000 + i * S for i in range(4)]  # spaced by the interval (min-poll)
    assert not a.calibrating and a.calibrations == 1
    assert abs(a.broadcast_delay_ns - 60_000) <= 2  # the best exchange: 2 x 30 µs
    sample = broadcast(a, T0 + 5 * S, offset=offset, one_way=30_000)
    assert sample is not None and abs(sample.offset_ns - offset) <= 2
    assert abs(sample.delay_ns - 60_000) <= 2
    assert a.stats.packets_dropped == 0


def test_without_calibration_the_assumed_delay_stays_and_server_replies_are_dropped() -> None:
    a, _ = calibrating()
    a.calibrate = False
    sample = broadcast(a, T0, offset=0, one_way=40_000)
    # Half the wrong 0.5 s round trip goes straight into the offset.
    assert sample is not None and abs(sample.offset_ns - (250_000_000 - 40_000)) <= 2
    assert a.handle_timer(a.next_deadline_ns() or 0) is None  # never sends
    server = encode_ntp(NtpPacket(mode=Mode.SERVER, stratum=2, transmit_ts=9, receive_ts=8))
    assert a.handle_reply(server, T0 + S) is None
    assert a.stats.drops_by_reason == {"not_broadcast_mode": 1}


def test_unanswered_volley_is_bounded_and_keeps_the_configured_delay() -> None:
    a, _ = calibrating(delay_ns=4_000_000)
    assert broadcast(a, T0, offset=0, one_way=1000) is None
    sent, samples = 0, []
    while a.calibrating:  # the server broadcasts each second but never answers
        now = a.next_deadline_ns() or 0
        sent += a.handle_timer(now) is not None
        samples.append(broadcast(a, now, offset=0, one_way=1000))
        assert now < T0 + 60 * S
    assert sent == VOLLEY_MAX_REQUESTS and a.calibration_failures == 1
    assert a.stats.packets_sent == VOLLEY_MAX_REQUESTS  # what was sent, not the intervals
    assert a.broadcast_delay_ns == 4_000_000
    *during, sample = samples
    assert during == [None] * len(during)
    assert sample is not None and abs(sample.offset_ns - (2_000_000 - 1000)) <= 2


def test_unreachable_then_heard_again_recalibrates_and_a_kiss_ends_a_volley() -> None:
    a, r = calibrating()
    broadcast(a, T0, offset=0, one_way=1000)
    for i in range(VOLLEY_GOOD_REPLIES):
        answer(a, r, offset=0, one_way=20_000 + i)
    assert a.calibrations == 1 and not a.calibrating
    now = T0 + 10 * S
    for i in range(9):  # silence: reach empties
        a.handle_timer(now + i * S)
    assert a.reach == 0
    assert broadcast(a, now + 10 * S, offset=0, one_way=1000) is None
    assert a.calibrating
    _, request = next_request(a)
    kiss = encode_ntp(
        NtpPacket(
            leap=Leap.UNSYNCHRONIZED,
            mode=Mode.SERVER,
            reference_id=int.from_bytes(b"DENY"),
            origin_ts=decode_ntp(request).transmit_ts,
        )
    )
    assert a.handle_reply(kiss, now + 11 * S) is None
    assert not a.calibrating and a.calibration_failures == 1
    assert a.state is not AssociationState.DEMOBILIZED and a.stats.kiss_code == "DENY"
    assert abs(a.broadcast_delay_ns - 40_000) <= 2  # the earlier calibration stays
    assert broadcast(a, now + 12 * S, offset=0, one_way=1000) is not None


def kiss(code: str, request: bytes) -> bytes:
    """The server's KoD ``code`` answering ``request``."""
    origin = decode_ntp(request).transmit_ts
    return encode_ntp(
        NtpPacket(
            leap=Leap.UNSYNCHRONIZED,
            mode=Mode.SERVER,
            reference_id=int.from_bytes(code.encode()),
            origin_ts=origin,
        )
    )


@pytest.mark.parametrize(
    ("code", "ends"), [("RATE", True), ("DENY", True), ("RSTR", True), ("STEP", False)]
)
def test_kisses_are_counted_and_rate_deny_rstr_end_the_volley(code: str, ends: bool) -> None:
    """QA s19: a broadcast source's kisses were not counted, so the daemon logged none.  RATE
    (send less), DENY and RSTR (send nothing) end the volley, the only requests a listener
    sends; other codes drop the reply and the volley goes on, as a unicast source keeps
    polling.  Broadcasts are still used either way."""
    a, _ = calibrating(delay_ns=4_000_000)
    assert broadcast(a, T0, offset=0, one_way=1000) is None
    now, request = next_request(a)
    assert a.handle_reply(kiss(code, request), now + 1000) is None
    assert a.stats.kisses == 1 and a.stats.kiss_code == code
    assert a.stats.drops_by_reason == {"kiss_of_death": 1}
    assert a.calibrating is not ends and a.state is not AssociationState.DEMOBILIZED
    if ends:
        assert a.calibration_failures == 1 and a.broadcast_delay_ns == 4_000_000
        assert a.kiss_effect == (
            "no more calibration requests until it is heard anew after an outage; its "
            "broadcasts are still used (round trip 4 ms)"
        )
        assert broadcast(a, now + S, offset=0, one_way=1000) is not None
    else:
        assert a.kiss_effect is None
        assert next_request(a)[1] is not None  # the volley asks again
    # A kiss nobody asked for (no request outstanding) is bogus, not a kiss.
    assert a.handle_reply(kiss(code, request), now + 2 * S) is None
    assert a.stats.kisses == 1


# ---------------------------------------------------------------- several broadcasts to count


def broadcast_core(*, calibrate: bool = False) -> SyncCore:
    """A core with one broadcast source ("bc", 1 s interval) and a discipline that steps."""
    disc = Discipline(DisciplineConfig(), initial_frequency_ppm=None, now_ns=T0)
    core = SyncCore(
        local_stratum=None, min_sources=1, precision_log2=-20, discipline=disc, now_ns=T0
    )
    core.add_source(
        "bc",
        reference_id=1,
        min_poll=0,
        max_poll=0,
        iburst=False,
        rng=random.Random(1),
        now_ns=T0,
        broadcast_delay_ns=200_000,
        broadcast_calibrate=calibrate,
    )
    return core


def hear(core: SyncCore, at_ns: int, offset_ns: int) -> list[object]:
    """A broadcast saying the server's clock is ``offset_ns`` ahead reaches the core at
    ``at_ns`` (100 µs on the way, half the assumed round trip): the clock actions."""
    core.handle_timer(at_ns)
    packet = broadcast_packet(SERVER, 1.0, at_ns + offset_ns)
    assert packet is not None
    return list(core.handle_reply("bc", packet, at_ns + 100_000))


def test_one_forged_broadcast_neither_selects_the_source_nor_steps_the_clock() -> None:
    """Anyone can send the server's packets: the first broadcast heard counts as RFC 5905's
    empty filter (16 s of dispersion, halving per broadcast), so the source becomes selectable
    at its FIRST_BROADCASTS-th consistent broadcast, not at the first (before: one packet
    +500 s stepped the clock by +500 s)."""
    core = broadcast_core()
    assert hear(core, T0 + S, 500 * S) == []
    assert not core.selection.synchronized
    assert "distance 8" in core.selection.reasons["bc"]
    for i in range(2, FIRST_BROADCASTS):
        assert hear(core, T0 + i * S, 500 * S) == [] and not core.selection.synchronized
    actions = hear(core, T0 + FIRST_BROADCASTS * S, 500 * S)
    assert core.selection.synchronized and core.selection.selected == "bc"
    assert any(isinstance(a, Step) and abs(a.offset_ns - 500 * S) < S for a in actions)


def test_a_forged_broadcast_amid_a_selected_servers_does_not_move_the_clock() -> None:
    core = broadcast_core()
    now = T0
    for _ in range(FIRST_BROADCASTS + 3):
        now += S
        hear(core, now, 0)
    assert core.selection.selected == "bc"
    # After the real broadcast of its interval: no sample at all, the selection stands.
    assert hear(core, now + S // 2, 500 * S) == []
    assert core.selection.synchronized and core.selection.selected == "bc"
    # First of the next interval (ahead of the real one): a sample, but the jitter puts the
    # source out of reach.
    assert hear(core, now + S, 500 * S) == []
    assert not core.selection.synchronized
    assert "distance" in core.selection.reasons["bc"]


def test_a_burst_of_forged_broadcasts_is_one_sample() -> None:
    """QA s17 verify: five forged packets 1 s apart, against a 16 s broadcast interval,
    selected the source and stepped the clock.  Only a reach interval's first broadcast is a
    sample: a burst within one interval is one, and the source stays out of reach."""
    core = broadcast_core()
    start = T0 + S
    for i in range(3 * FIRST_BROADCASTS):  # 15 packets within 0.3 s of one 1 s interval
        assert hear(core, start + i * S // 50, 500 * S) == []
    assert not core.selection.synchronized
    assert core.sources["bc"].association.stats.packets_received == 3 * FIRST_BROADCASTS
    assert len(core.sources["bc"].filter) == 1


def test_heard_again_or_reset_the_source_needs_several_broadcasts_again() -> None:
    core = broadcast_core()
    now = T0
    for _ in range(FIRST_BROADCASTS):
        now += S
        hear(core, now, 0)
    assert core.selection.selected == "bc"
    core.reset_sources(now)  # tsyncctl reset sources: the filter is empty again
    now += S
    hear(core, now, 0)
    assert not core.selection.synchronized
    for _ in range(FIRST_BROADCASTS - 1):
        now += S
        hear(core, now, 0)
    assert core.selection.selected == "bc"
    for _ in range(9):  # the server goes quiet: unreachable
        now += S
        core.handle_timer(now)
    a = core.sources["bc"].association
    assert a.reach == 0
    now += S
    hear(core, now, 0)
    assert not core.selection.synchronized
    assert core.sources["bc"].filter.samples()[-1].dispersion_ns == MAXDISP_NS


def tick(core: SyncCore, server: NtpResponder, at_ns: int) -> None:
    """One broadcast interval of a server 100 µs away that answers client requests: the timer
    at ``at_ns`` (a volley request answered at once), then its broadcast."""
    requests, _ = core.handle_timer(at_ns)
    for name, request in requests:
        core.handle_sent(name, at_ns)
        _, reply = server.handle_request(request, CLIENT_IP, at_ns + 100_000, at_ns + 101_000)
        assert reply is not None
        core.handle_reply(name, reply, at_ns + 201_000)
    packet = broadcast_packet(SERVER, 1.0, at_ns + S // 2)
    assert packet is not None
    core.handle_reply("bc", packet, at_ns + S // 2 + 100_000)


def test_heard_again_a_calibrating_source_is_not_selected_on_its_samples_from_before() -> None:
    """QA s19 #1: with calibration, the server back after an outage was selected at its first
    broadcast, on the samples from before the outage (the volley gives none), then unusable
    for five intervals once the volley ended, then selected again.  Now the old samples go at
    that first broadcast: the source stays out through the volley and is selected at its
    FIRST_BROADCASTS-th sample after it, as when first heard."""
    core, (_, server) = broadcast_core(calibrate=True), calibrating()
    a = core.sources["bc"].association
    now = T0
    while core.selection.selected != "bc":  # first heard: a volley, then five samples
        now += S
        tick(core, server, now)
        assert now < T0 + 30 * S
    assert a.calibrations == 1
    for _ in range(9):  # the server goes quiet: unreachable
        now += S
        core.handle_timer(now)
    assert a.reach == 0 and not core.selection.synchronized
    intervals = 0
    while core.selection.selected != "bc":
        now += S
        intervals += 1
        tick(core, server, now)
        if a.calibrating:
            assert not core.selection.synchronized, "selected on samples from before"
            assert core.selection.reasons["bc"].startswith("measuring the round trip")
        assert intervals < 30
    assert a.calibrations == 2
    # The volley (VOLLEY_GOOD_REPLIES requests, one an interval, from the interval after the
    # first broadcast), then FIRST_BROADCASTS samples, one an interval.
    assert intervals == 1 + VOLLEY_GOOD_REPLIES + FIRST_BROADCASTS - 1
    assert len(core.sources["bc"].filter) == FIRST_BROADCASTS
