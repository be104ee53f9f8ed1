"""The server's per-packet decision: one (reason, response) per request."""

from __future__ import annotations

import ipaddress
import random

import pytest

from tsyncd.servers.clientlog import ClientLog, ClientRecord, RateLimit, take_token
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate, ServerPolicy
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, kiss_code
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
        # ntpq's readvar (mode 6, a 12-byte header) and an ntpdc request (mode 7, 8 bytes):
        # counted as what they are, not as truncated time requests.
        (bytes.fromhex("1602000100000000 00000000"), "not_client_mode"),
        (bytes.fromhex("1700032a00000000"), "not_client_mode"),
        (bytes(12), "malformed_truncated"),
        (b"", "malformed_truncated"),
        (request(mode=Mode.SERVER), "not_client_mode"),
        (request(mode=Mode.CONTROL), "not_client_mode"),
        (request(mode=Mode.SYMMETRIC_ACTIVE), "not_client_mode"),
        (bytes([0x2B]) + bytes(47), "malformed_bad_version"),  # version 5
        # Over 1152 bytes (reads take one byte more to see it), though its framing is fine:
        # an unknown 1108-byte extension field.
        (
            request() + (0x7777).to_bytes(2, "big") + (1108).to_bytes(2, "big") + bytes(1104),
            "malformed_too_long",
        ),
    ],
)
def test_drops_are_counted_by_reason(data: bytes, reason: str) -> None:
    r = NtpResponder(AccessList((), ()))
    assert r.handle_request(data, V4, RX, RX + 1) == (reason, None)
    assert r.drops_by_reason() == {reason: 1}
    assert (r.received, r.sent, r.dropped) == (1, 0, 1)


def test_ntpv1_requests_are_answered_in_their_version() -> None:
    """NTPv1 has no mode field (mode bits 0): ntpd and chronyd take such a request as a
    client's and answer it as a server, in version 1; v1 with mode 3 is answered too."""
    r = NtpResponder(AccessList((), ()))
    r.template = ResponseTemplate(leap=Leap.NONE, stratum=3)
    v1_mode_0 = bytes([0x08]) + request(version=1)[1:]
    for data in (v1_mode_0, request(version=1)):
        reason, reply = r.handle_request(data, V4, RX, RX + 5000)
        assert reason == "answered" and reply is not None
        assert (reply[0] >> 3 & 7, reply[0] & 7) == (1, 4)
        assert decode_ntp(reply).origin_ts == 0x1122334455667788
    # Mode 0 means nothing in later versions: still dropped.
    v2_mode_0 = bytes([0x10]) + request(version=2)[1:]
    assert r.handle_request(v2_mode_0, V4, RX, RX + 1) == ("not_client_mode", None)


def test_access_list_a_more_specific_deny_decides() -> None:
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


# --------------------------------------------------------------------------- policy (issue 4)


class FixedBits(random.Random):
    """An RNG whose getrandbits always returns ``value`` (0: leak answers, else drop)."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def getrandbits(self, k: int) -> int:
        return self.value


def xleave_request(origin: int, receive: int, transmit: int) -> bytes:
    return encode_ntp(
        NtpPacket(mode=Mode.CLIENT, origin_ts=origin, receive_ts=receive, transmit_ts=transmit)
    )


def test_dual_stack_acl_on_mapped_address_text() -> None:
    acl = AccessList(allow=(ipaddress.ip_network("127.0.0.0/8"),), deny=())
    r = NtpResponder(acl)
    assert r.handle_request(request(), "::ffff:127.0.0.1", RX, RX + 1)[0] == "answered"
    assert r.handle_request(request(), "::1", RX, RX + 1) == ("restricted", None)
    assert r.handle_request(request(), "::ffff:10.0.0.1", RX, RX + 1) == ("restricted", None)
    v6only = NtpResponder(AccessList(allow=(ipaddress.ip_network("::1/128"),), deny=()))
    assert v6only.handle_request(request(), "::1", RX, RX + 1)[0] == "answered"
    assert v6only.handle_request(request(), "::ffff:127.0.0.1", RX, RX + 1)[0] == "restricted"
    rows = r.client_rows(RX)
    assert {row["address"] for row in rows} == {"127.0.0.1", "::1", "10.0.0.1"}


def test_kod_deny_and_rstr_once_per_interval() -> None:
    acl = AccessList(
        allow=(ipaddress.ip_network("192.0.2.0/24"),), deny=(ipaddress.ip_network("192.0.2.9/32"),)
    )
    r = NtpResponder(acl, ServerPolicy(kod=True))
    reason, data = r.handle_request(request(), "192.0.2.9", RX, RX + 1)
    assert reason == "kod_deny" and data is not None
    kod = decode_ntp(data)
    assert kiss_code(kod) == "DENY" and kod.leap == Leap.UNSYNCHRONIZED
    assert kod.origin_ts == 0x1122334455667788 and len(data) == 48
    assert r.handle_request(request(), "192.0.2.9", RX + S, RX + S) == ("denied", None)
    reason, data = r.handle_request(request(), "198.51.100.1", RX, RX + 1)
    assert reason == "kod_rstr" and kiss_code(decode_ntp(data or b"")) == "RSTR"
    # After the (default 8 s) KoD interval the client may get another one.
    assert r.handle_request(request(), "192.0.2.9", RX + 9 * S, RX + 9 * S)[0] == "kod_deny"
    assert r.counters()["kod_sent"] == 3
    assert r.drops_by_reason() == {"denied": 1}


def test_kod_needs_a_valid_client_request() -> None:
    r = NtpResponder(AccessList((), (ipaddress.ip_network("0.0.0.0/0"),)), ServerPolicy(kod=True))
    assert r.handle_request(request(mode=Mode.CONTROL), "192.0.2.1", RX, RX) == (
        "not_client_mode",
        None,
    )
    assert r.handle_request(b"\x23" * 20, "192.0.2.1", RX, RX) == ("malformed_truncated", None)


def test_rate_limit_first_requests_are_never_punished() -> None:
    limit = RateLimit(interval_log2=1, burst=4, leak_log2=0)
    r = NtpResponder(AccessList((), ()), ServerPolicy(rate_limit=limit))
    t = RX
    for _ in range(4):  # a burst at start: all answered
        assert r.handle_request(request(), "192.0.2.1", t, t)[0] == "answered"
        t += 10_000_000
    assert r.handle_request(request(), "192.0.2.1", t, t) == ("rate_limited", None)
    # Another client is not affected.
    assert r.handle_request(request(), "192.0.2.2", t, t)[0] == "answered"
    # One token per 2 s comes back.
    t += 2 * S
    assert r.handle_request(request(), "192.0.2.1", t, t)[0] == "answered"
    assert r.handle_request(request(), "192.0.2.1", t, t) == ("rate_limited", None)
    # A client polling at the allowed rate is never limited.
    for i in range(50):
        reason, _ = r.handle_request(request(), "192.0.2.3", RX + i * 2 * S, RX + i * 2 * S)
        assert reason == "answered"


def test_packets_that_are_not_time_requests_do_not_take_the_refill_away() -> None:
    """QA s18 hunt-server-policy F4: a dropped packet (ntpq's mode 6 every second) moved the
    refill mark without crediting the time, so the client stayed limited for good."""
    limit = RateLimit(interval_log2=3, burst=1, leak_log2=0)
    r = NtpResponder(AccessList((), ()), ServerPolicy(rate_limit=limit))
    mode6 = bytes.fromhex("1602000100000000 00000000")
    assert r.handle_request(request(), "192.0.2.1", RX, RX)[0] == "answered"
    for second in range(1, 11):
        t = RX + second * S
        assert r.handle_request(mode6, "192.0.2.1", t, t) == ("not_client_mode", None)
    t = RX + 10 * S + S // 2  # more than 8 s after the first request: a token is back
    assert r.handle_request(request(), "192.0.2.1", t, t)[0] == "answered"
    # The probes did not give tokens either: the next request, at once, is limited.
    assert r.handle_request(request(), "192.0.2.1", t, t) == ("rate_limited", None)


def test_rate_limit_leak_and_kod_rate() -> None:
    limit = RateLimit(interval_log2=3, burst=1, leak_log2=2)
    leaky = NtpResponder(AccessList((), ()), ServerPolicy(rate_limit=limit), rng=FixedBits(0))
    strict = NtpResponder(
        AccessList((), ()), ServerPolicy(rate_limit=limit, kod=True), rng=FixedBits(3)
    )
    for r in (leaky, strict):
        assert r.handle_request(request(), "192.0.2.1", RX, RX)[0] == "answered"
    assert leaky.handle_request(request(), "192.0.2.1", RX + 1, RX + 1)[0] == "answered"
    reason, data = strict.handle_request(request(), "192.0.2.1", RX + 1, RX + 1)
    assert reason == "kod_rate" and kiss_code(decode_ntp(data or b"")) == "RATE"
    assert strict.handle_request(request(), "192.0.2.1", RX + 2, RX + 2) == ("rate_limited", None)
    c = strict.counters()
    assert (c["received"], c["answered"], c["kod_sent"], c["sent"]) == (3, 1, 1, 2)
    assert c["dropped_by_reason"] == {"rate_limited": 1}


def test_leak_is_random_about_one_in_four() -> None:
    limit = RateLimit(interval_log2=10, burst=1, leak_log2=2)
    r = NtpResponder(AccessList((), ()), ServerPolicy(rate_limit=limit), rng=random.Random(7))
    answered = sum(
        r.handle_request(request(), "192.0.2.1", RX + i, RX + i)[0] == "answered"
        for i in range(4000)
    )
    assert 900 < answered < 1100


def test_token_bucket_refill_is_capped_at_burst() -> None:
    limit = RateLimit(interval_log2=0, burst=3, leak_log2=0)
    rec = ClientRecord("x", "", 0, 0)
    rec.last_ns = 0
    assert take_token(rec, limit, 10 * S)
    assert rec.tokens_ns == 2 * S  # capped at 3 tokens, one taken


def test_client_log_is_bounded() -> None:
    r = NtpResponder(AccessList((), ()), ServerPolicy(max_clients=3))
    for i in range(10):
        r.handle_request(request(), f"192.0.2.{i}", RX, RX)
    assert len(r.clients) == 3 and r.clients.evicted == 7
    assert set(r.clients.records) == {"192.0.2.7", "192.0.2.8", "192.0.2.9"}
    with pytest.raises(ValueError, match="positive"):
        ClientLog(0)


def test_interleaved_exchange() -> None:
    """RFC 9769 §3: first basic, then interleaved with the previous response's precise TX."""
    r = NtpResponder(AccessList((), ()))
    # 0: a basic-only request (no receive field): basic answer, no pair kept, no TX stamp.
    reason, data, want = r.respond(request(), "192.0.2.1", RX - S, RX - S)
    assert (reason, want) == ("answered", False)
    basic_rx = decode_ntp(data or b"").receive_ts
    # 1: a first request from an interleaving client (its receive field is a cookie): basic
    # answer, but the pair is kept and the kernel's TX stamp wanted.
    reason, data, want = r.respond(
        xleave_request(basic_rx, 0x1111, 0x2222), "192.0.2.1", RX, RX + 1000
    )
    assert (reason, want) == ("answered", True)
    first = decode_ntp(data or b"")
    assert first.origin_ts == 0x2222
    # 2: interleaved-style request: origin = our last RX, receive = client's cookie.
    reason, data, want = r.respond(
        xleave_request(first.receive_ts, 0xAAAA, 0xBBBB), "192.0.2.1", RX + S, RX + S + 1000
    )
    assert (reason, want) == ("interleaved", True)
    second = decode_ntp(data or b"")
    assert second.origin_ts == 0xAAAA and second.transmit_ts == first.transmit_ts
    # The kernel reports when the second response really left.
    assert r.handle_tx_timestamp(data or b"", RX + S + 5000)
    assert not r.handle_tx_timestamp(b"\x24" + bytes(47), RX)  # not one of ours
    # 3: the next interleaved request gets that precise TX.
    reason, data, _ = r.respond(
        xleave_request(second.receive_ts, 0xCCCC, 0xDDDD), "192.0.2.1", RX + 2 * S, RX + 2 * S
    )
    third = decode_ntp(data or b"")
    assert reason == "interleaved" and third.origin_ts == 0xCCCC
    assert third.transmit_ts == ntp64_from_unix_ns(RX + S + 5000)
    assert third.receive_ts == ntp64_from_unix_ns(RX + 2 * S)
    # A stale origin (not our last RX) falls back to basic mode.
    reason, data, _ = r.respond(
        xleave_request(second.receive_ts, 0xEEEE, 0xFFFF), "192.0.2.1", RX + 3 * S, RX + 3 * S
    )
    assert reason == "answered" and decode_ntp(data or b"").origin_ts == 0xFFFF
    # Another client echoing our RX stamp does not get interleaved (per-client pairs).
    reason, _, _ = r.respond(
        xleave_request(third.receive_ts, 1, 2), "192.0.2.2", RX + 3 * S, RX + 3 * S
    )
    assert reason == "answered"
    c = r.counters()
    assert c["interleaved_answered"] == 2 and c["answered"] == 6


def test_interleaved_can_be_disabled_and_receive_equal_transmit_is_basic() -> None:
    r = NtpResponder(AccessList((), ()), ServerPolicy(interleaved=False))
    _, data, _ = r.respond(request(), "192.0.2.1", RX, RX)
    rx = decode_ntp(data or b"").receive_ts
    assert r.respond(xleave_request(rx, 5, 6), "192.0.2.1", RX + S, RX + S)[:1] == ("answered",)
    r = NtpResponder(AccessList((), ()))
    _, data, _ = r.respond(request(), "192.0.2.1", RX, RX)
    rx = decode_ntp(data or b"").receive_ts
    reason, _, want = r.respond(xleave_request(rx, 7, 7), "192.0.2.1", RX + S, RX + S)
    assert (reason, want) == ("answered", False)


def test_receive_stamps_unique_for_interleaving_clients() -> None:
    r = NtpResponder(AccessList((), ()))
    _, a = r.handle_request(xleave_request(0, 1, 2), "192.0.2.1", RX, RX)
    _, b = r.handle_request(xleave_request(0, 1, 2), "192.0.2.2", RX, RX)
    assert decode_ntp(a or b"").receive_ts != decode_ntp(b or b"").receive_ts


def test_two_interleaving_clients_behind_one_address() -> None:
    r = NtpResponder(AccessList((), ()))
    last = {}
    for i in range(6):
        for port_client in ("a", "b"):  # two daemons on one IP, different ports
            rx = last.get(port_client, 0)
            t = RX + i * S + (port_client == "b") * 1000
            reason, data = r.handle_request(xleave_request(rx, 10 + i, 20 + i), "192.0.2.1", t, t)
            last[port_client] = decode_ntp(data or b"").receive_ts
            assert reason == ("answered" if i == 0 else "interleaved")


def test_response_never_larger_than_request_with_extensions() -> None:
    ef = bytes.fromhex("0104001c") + bytes(24)  # a 28-byte EF (last EF minimum)
    data = request() + ef
    reason, response = NtpResponder(AccessList((), ())).handle_request(data, "::1", RX, RX)
    assert reason == "answered" and response is not None and len(response) == 48 < len(data)
    bad = request() + b"\x00\x01\x00"
    assert NtpResponder(AccessList((), ())).handle_request(bad + b"\x00", "::1", RX, RX)[0] in (
        "malformed_bad_extension",
        "malformed_bad_length",
    )


def test_interleaved_pairs_are_bounded_oldest_first() -> None:
    r = NtpResponder(AccessList((), ()), ServerPolicy(max_clients=1))  # pairs: at least 1024
    first_rx = {}
    for i in range(1100):
        address = f"10.0.{i // 256}.{i % 256}"
        _, data = r.handle_request(xleave_request(0, 1, 2), address, RX + i, RX + i)
        first_rx[address] = decode_ntp(data or b"").receive_ts
    assert len(r._pairs) == 1024
    old, recent = "10.0.0.0", "10.0.4.75"  # the first and the last client
    assert r.handle_request(xleave_request(first_rx[old], 3, 4), old, RX + S, RX + S)[0] == (
        "answered"
    )
    assert r.handle_request(xleave_request(first_rx[recent], 3, 4), recent, RX + S, RX + S)[0] == (
        "interleaved"
    )


def test_requests_no_reply_can_reach_are_dropped_as_bad_source() -> None:
    """Source port 0 and multicast or broadcast sources: nothing sent could reach them, so
    they are dropped, never counted as answered (before: answered and counted as sent), and
    get no KoD either; the IO edge's routes add the host's directed broadcasts."""
    directed = ipaddress.ip_address("192.0.2.255")
    acl = AccessList((), (ipaddress.ip_network("224.0.0.0/4"),))  # a deny would mean a KoD
    r = NtpResponder(acl, ServerPolicy(kod=True))
    r.broadcast_routes = lambda ip: ip == directed
    r.template = ResponseTemplate(leap=Leap.NONE, stratum=3)
    assert r.respond(request(), "192.0.2.7", RX, RX + 1, 0) == ("bad_source", None, False)
    for source in (
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
        "::ffff:255.255.255.255",
        "192.0.2.255",
    ):
        assert r.respond(request(), source, RX, RX + 1, 40000) == ("bad_source", None, False)
    assert r.respond(request(), "192.0.2.7", RX, RX + 1, 40000)[0] == "answered"
    assert r.respond(request(), "192.0.2.8", RX, RX + 1)[0] == "answered"  # port not known
    counters = r.counters()
    assert counters["answered"] == 2 and counters["kod_sent"] == 0
    assert r.drops_by_reason() == {"bad_source": 6}


def test_one_address_flooding_does_not_push_others_out_of_interleaved_mode() -> None:
    """QA s18 hunt-server-policy F3: the pairs were one FIFO per worker, so 5000 requests a
    second from one address turned a chronyd xleave client on the same worker to basic."""
    r = NtpResponder(AccessList((), ()))
    _, data, _ = r.respond(xleave_request(0, 1, 2), "192.0.2.1", RX, RX + 1)
    victim_rx = decode_ntp(data or b"").receive_ts
    for i in range(5000):  # interleaving-style requests from one address
        t = RX + (i + 1) * 1000
        r.respond(xleave_request(0, 3, 4 + i), "198.51.100.9", t, t + 1)
    assert sum(1 for _, (_, who) in r._pairs.items() if who == "198.51.100.9") == 16
    reason, _, _ = r.respond(xleave_request(victim_rx, 5, 6), "192.0.2.1", RX + S, RX + S + 1)
    assert reason == "interleaved"
    # Several clients behind one address (a NAT) still interleave, each with its own pair.
    nat = []
    for i in range(8):
        _, data, _ = r.respond(
            xleave_request(0, 7, 8 + i), "203.0.113.5", RX + 2 * S + i, RX + 2 * S + i + 1
        )
        nat.append(decode_ntp(data or b"").receive_ts)
    for i, rx in enumerate(nat):
        t = RX + 3 * S + i
        assert r.respond(xleave_request(rx, 9, 10 + i), "203.0.113.5", t, t + 1)[0] == "interleaved"
