"""The server's per-packet decision: one (reason, response) per request."""

from __future__ import annotations

import ipaddress

import pytest

from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000
RX = 1_800_000_000 * S
V4 = ipaddress.ip_address("192.0.2.7")


def request(version: int = 4, mode: Mode = Mode.CLIENT, poll: int = 6) -> bytes:
    return encode_ntp(
        NtpPacket(version=version, mode=mode, poll=poll, transmit_ts=0x1122334455667788)
    )


def test_answers_client_request_from_template() -> None:
    r = NtpResponder(AccessList((), ()))
    r.template = ResponseTemplate(
        leap=Leap.NONE, stratum=3, precision=-22, reference_id=0x7F000001, root_delay=5
    )
    reason, data = r.handle_request(request(version=3, poll=7), V4, RX, RX + 5000)
    assert reason == "answered" and data is not None
    reply = decode_ntp(data)
    assert reply == NtpPacket(
        leap=Leap.NONE,
        version=3,
        mode=Mode.SERVER,
        stratum=3,
        poll=7,
        precision=-22,
        root_delay=5,
        root_dispersion=0,
        reference_id=0x7F000001,
        reference_ts=0,
        origin_ts=0x1122334455667788,
        receive_ts=ntp64_from_unix_ns(RX),
        transmit_ts=ntp64_from_unix_ns(RX + 5000),
    )
    assert len(data) <= len(request())
    assert (r.received, r.sent, r.dropped) == (1, 1, 0)


def test_transmit_never_equals_receive() -> None:
    r = NtpResponder(AccessList((), ()))
    _, data = r.handle_request(request(), V4, RX, RX)
    reply = decode_ntp(data or b"")
    assert reply.transmit_ts != reply.receive_ts


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x23" + bytes(20), "malformed_truncated"),
        (request(mode=Mode.SERVER), "not_client_mode"),
        (request(mode=Mode.CONTROL), "not_client_mode"),
        (request(mode=Mode.SYMMETRIC_ACTIVE), "not_client_mode"),
        (bytes([0x2B]) + bytes(47), "malformed_bad_version"),  # version 5
    ],
)
def test_drops_are_counted_by_reason(data: bytes, reason: str) -> None:
    r = NtpResponder(AccessList((), ()))
    assert r.handle_request(data, V4, RX, RX + 1) == (reason, None)
    assert r.drops_by_reason() == {reason: 1}
    assert (r.received, r.sent, r.dropped) == (1, 0, 1)


def test_access_list_deny_wins_and_mapped_addresses_match() -> None:
    acl = AccessList(
        allow=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")),
        deny=(ipaddress.ip_network("192.0.2.128/25"),),
    )
    assert acl.permits(ipaddress.ip_address("192.0.2.7"))
    assert not acl.permits(ipaddress.ip_address("192.0.2.200"))
    assert not acl.permits(ipaddress.ip_address("198.51.100.1"))
    assert acl.permits(ipaddress.ip_address("2001:db8::5"))
    r = NtpResponder(acl)
    assert r.handle_request(request(), ipaddress.ip_address("192.0.2.200"), RX, RX + 1) == (
        "denied",
        None,
    )
