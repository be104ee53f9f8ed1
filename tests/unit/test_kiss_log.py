"""The daemon's KoD log lines: a DENY/RSTR at once, RATE at most once per interval."""

from __future__ import annotations

import logging
import random

import pytest

from tsyncd.kiss_log import KissLog
from tsyncd.servers.broadcast import broadcast_packet
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.broadcast import BroadcastAssociation
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, refid_from_ascii

S = 1_000_000_000
T0 = 1_800_000_000 * S


def kissed(a: NtpAssociation, now: int, code: str) -> int:
    """Poll ``a`` at ``now`` and answer with KoD ``code``; its kisses before."""
    request = decode_ntp(a.handle_timer(now) or b"")
    before = a.stats.kisses
    kod = NtpPacket(
        leap=Leap.UNSYNCHRONIZED,
        mode=Mode.SERVER,
        stratum=0,
        reference_id=refid_from_ascii(code),
        origin_ts=request.transmit_ts,
    )
    assert a.handle_reply(encode_ntp(kod), now + 1000) is None
    return before


def assoc() -> NtpAssociation:
    return NtpAssociation(
        min_poll=0, max_poll=0, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )


def test_rate_is_logged_once_per_interval_with_the_count_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kisses, a = KissLog(interval_ns=600 * S), assoc()
    caplog.set_level(logging.WARNING, "tsyncd.daemon")
    for i in range(5):  # one RATE a minute: chronyd would log five lines
        now = T0 + i * 60 * S
        kisses.handle_reply("srv", a, kissed(a, now, "RATE"), now)
    assert [r.getMessage() for r in caplog.records] == [
        "srv: server sent kiss-o'-death RATE: polling less often (poll 0, next request in 5 s)"
    ]
    caplog.clear()
    now = T0 + 600 * S
    kisses.handle_reply("srv", a, kissed(a, now, "RATE"), now)
    assert caplog.records[0].getMessage().endswith("(4 more RATE since the last such message)")
    kisses.handle_reply("srv", a, a.stats.kisses, now)  # no kiss: nothing to say
    assert len(caplog.records) == 1


def test_deny_is_logged_each_time_it_stops_the_source(caplog: pytest.LogCaptureFixture) -> None:
    kisses, a = KissLog(), assoc()
    caplog.set_level(logging.WARNING, "tsyncd.daemon")
    for i in range(2):
        now = T0 + i * S
        kisses.handle_reply("srv", a, kissed(a, now, "DENY"), now)
        a.start_burst(now)  # tsyncctl burst: polled again, and denied again
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "srv: server sent kiss-o'-death DENY (access denied): not polling it until"
            " tsyncctl online or burst",
        )
    ] * 2


def broadcast_kissed(a: BroadcastAssociation, now: int, code: str) -> int:
    """``a`` hears its server anew at ``now`` (a calibration volley starts), and the volley's
    first request is answered with KoD ``code``; its kisses before."""
    for i in range(9):  # silence first: the next broadcast is the server heard anew
        a.handle_timer(now - (9 - i) * S)
    packet = broadcast_packet(ResponseTemplate(leap=Leap.NONE, stratum=3), 1.0, now)
    assert packet is not None and a.handle_reply(packet, now) is None and a.calibrating
    request = decode_ntp(a.handle_timer(now) or b"")
    before = a.stats.kisses
    kod = NtpPacket(
        leap=Leap.UNSYNCHRONIZED,
        mode=Mode.SERVER,
        reference_id=refid_from_ascii(code),
        origin_ts=request.transmit_ts,
    )
    assert a.handle_reply(encode_ntp(kod), now + 1000) is None
    return before


def test_a_broadcast_sources_kisses_are_logged_the_same_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """QA s19: a broadcast listener's kisses (answers to its calibration requests) were not
    logged.  Same wording and rate limit as a unicast source's, saying what they did."""
    a = BroadcastAssociation(
        min_poll=0, max_poll=0, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )
    a.calibrate = True
    kisses = KissLog(interval_ns=600 * S)
    caplog.set_level(logging.WARNING, "tsyncd.daemon")
    effect = (
        "no more calibration requests until it is heard anew after an outage; its broadcasts"
        " are still used (round trip 4 ms)"
    )
    for i, code in enumerate(["DENY", "RSTR", "RATE", "RATE", "STEP"]):
        now = T0 + (i + 1) * 60 * S
        kisses.handle_reply("bc", a, broadcast_kissed(a, now, code), now)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"bc: server sent kiss-o'-death DENY (access denied): {effect}"),
        ("WARNING", f"bc: server sent kiss-o'-death RSTR (access denied): {effect}"),
        ("WARNING", f"bc: server sent kiss-o'-death RATE: {effect}"),
    ]  # the second RATE within 10 minutes is left out; STEP changes nothing: not logged
    assert a.stats.kisses == 5
