"""What an association keeps of its replies for ``tsyncctl ntpdata`` (chronyc's Version,
Precision, Reference time, Response time, Total RX)."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

from tsyncd.servers.broadcast import broadcast_packet
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.broadcast import BroadcastAssociation
from tsyncd.sync.sample import ReplyHeader
from tsyncd.wire.ntp import Leap, decode_ntp, encode_ntp, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000
T0 = 1_800_000_000 * S
CLIENT = ipaddress.ip_address("127.0.0.1")
REFERENCE_TS = ntp64_from_unix_ns(T0 - 5 * S)


def make() -> NtpAssociation:
    return NtpAssociation(
        min_poll=4, max_poll=6, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )


def responder(**template: object) -> NtpResponder:
    r = NtpResponder(AccessList((), ()))
    fields: dict[str, object] = {
        "leap": Leap.NONE,
        "stratum": 3,
        "precision": -23,
        "reference_id": refid_from_ascii("GPS"),
        "reference_ts": REFERENCE_TS,
    }
    r.template = ResponseTemplate(**{**fields, **template})  # type: ignore[arg-type]
    return r


def reply_to(a: NtpAssociation, r: NtpResponder, now: int, busy_ns: int) -> bytes:
    """The server's answer to ``a``'s next request: received 20 µs after ``now``, sent
    ``busy_ns`` later."""
    request = a.handle_timer(now)
    assert request is not None
    _, reply = r.handle_request(request, CLIENT, now + 20_000, now + 20_000 + busy_ns)
    assert reply is not None
    return reply


def test_a_valid_reply_keeps_its_header_and_the_servers_response_time() -> None:
    a = make()
    assert a.stats.last_reply is None
    assert a.handle_reply(reply_to(a, responder(), T0, busy_ns=7_000), T0 + 50_000) is not None
    header = a.stats.last_reply
    assert header is not None
    assert (header.version, header.precision, header.reference_ts) == (4, -23, REFERENCE_TS)
    assert header.response_ns is not None and abs(header.response_ns - 7_000) <= 1
    assert a.stats.packets_received_total == 1


def test_the_version_is_the_replys() -> None:
    a = make()
    reply = decode_ntp(reply_to(a, responder(), T0, busy_ns=1_000))
    assert a.handle_reply(encode_ntp(dataclasses.replace(reply, version=3)), T0 + 50_000)
    assert a.stats.last_reply is not None and a.stats.last_reply.version == 3


def test_invalid_replies_count_in_total_rx_and_leave_the_header_alone() -> None:
    a = make()
    good = reply_to(a, responder(), T0, busy_ns=1_000)
    assert a.handle_reply(good, T0 + 50_000) is not None
    kept = a.stats.last_reply
    assert a.handle_reply(good, T0 + 60_000) is None  # duplicate
    unsynced = reply_to(a, responder(leap=Leap.UNSYNCHRONIZED, precision=-10), T0 + 64 * S, 1)
    assert a.handle_reply(unsynced, T0 + 64 * S + 50_000) is None
    assert a.handle_reply(b"short", T0 + 64 * S + 60_000) is None  # malformed
    assert a.stats.last_reply == kept
    assert (a.stats.packets_received_total, a.stats.packets_received) == (4, 1)
    assert a.stats.packets_dropped == 3


def test_a_broadcast_has_a_header_but_no_response_time() -> None:
    a = BroadcastAssociation(
        min_poll=0, max_poll=0, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=T0
    )
    template = ResponseTemplate(leap=Leap.NONE, stratum=3, precision=-21, reference_ts=REFERENCE_TS)
    packet = broadcast_packet(template, 1.0, T0)
    assert packet is not None and a.handle_reply(packet, T0 + 100_000) is not None
    assert a.stats.last_reply == ReplyHeader(
        version=4, precision=-21, reference_ts=REFERENCE_TS, response_ns=None
    )
    assert a.stats.packets_received_total == 1
