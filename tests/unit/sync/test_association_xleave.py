"""NtpAssociation in interleaved mode (RFC 9769) against an in-memory interleaving server.

The server below follows the RFC 9769 server rules (spec ntpv4.md §10) on virtual time: it
keeps (RX, precise TX) pairs and answers interleaved when the request's Origin names a saved RX
and Receive != Transmit.  Its precise TX is later than its basic-mode estimate by
``TX_LATE``, so only an interleaved measurement comes out exact.
"""

from __future__ import annotations

import random
from dataclasses import replace

from tsyncd.sync.association import NtpAssociation
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000
T0 = 1_800_000_000 * S
OFFSET = 300_000  # server clock minus client clock, ns
ONE_WAY = 20_000  # ns each way
TX_LATE = 8_000  # the server's real send happens this long after its basic-mode estimate
BUSY = 1_000  # server processing before the estimate


class InterleavingServer:
    def __init__(self, *, interleave: bool = True) -> None:
        self.interleave = interleave
        self.saved: dict[int, int] = {}  # server RX -> precise server TX (raw timestamps)

    def answer(self, request: bytes, server_rx_ns: int) -> bytes:
        req = decode_ntp(request)
        rx = ntp64_from_unix_ns(server_rx_ns)
        estimate = ntp64_from_unix_ns(server_rx_ns + BUSY)
        precise = ntp64_from_unix_ns(server_rx_ns + BUSY + TX_LATE)
        reply = NtpPacket(
            leap=Leap.NONE,
            version=4,
            mode=Mode.SERVER,
            stratum=2,
            precision=-20,
            reference_id=refid_from_ascii("GPS"),
            reference_ts=ntp64_from_unix_ns(server_rx_ns - S),
            origin_ts=req.transmit_ts,
            receive_ts=rx,
            transmit_ts=estimate,
        )
        if self.interleave and req.receive_ts != req.transmit_ts and req.origin_ts in self.saved:
            reply = replace(
                reply, origin_ts=req.receive_ts, transmit_ts=self.saved.pop(req.origin_ts)
            )
        self.saved[rx] = precise
        return encode_ntp(reply)


def make(xleave: bool = True) -> NtpAssociation:
    return NtpAssociation(
        min_poll=0,
        max_poll=0,
        iburst=False,
        precision_log2=-24,
        rng=random.Random(7),
        now_ns=T0,
        xleave=xleave,
    )


def run(a: NtpAssociation, server: InterleavingServer, n: int, *, tx_stamps: bool = True):
    """n exchanges one second apart; the client's kernel TX stamp is 5 µs after handle_sent."""
    samples = []
    requests = []
    for i in range(n):
        now = T0 + i * S
        request = a.handle_timer(now)
        assert request is not None
        requests.append(decode_ntp(request))
        a.handle_sent(now)
        sent = now + 5_000 if tx_stamps else now
        if tx_stamps:
            a.handle_tx_timestamp(sent)
        reply = server.answer(request, sent + ONE_WAY + OFFSET)
        rx = sent + 2 * ONE_WAY + BUSY + TX_LATE
        samples.append(a.handle_reply(reply, rx))
    return requests, samples


def test_first_request_basic_then_interleaved_requests() -> None:
    a, server = make(), InterleavingServer()
    requests, samples = run(a, server, 3)
    assert requests[0].origin_ts == 0 and requests[0].receive_ts == 0
    for req in requests[1:]:
        assert req.origin_ts != 0  # the server's RX from the previous reply
        assert req.receive_ts not in (0, req.transmit_ts)
    assert all(s is not None for s in samples)
    assert samples[0] is not None and not samples[0].interleaved
    # Exchange 2 is answered interleaved already by this server (chrony waits one more).
    assert samples[1] is not None and samples[1].interleaved and a.interleaved
    assert a.stats.interleaved_replies == 2


def test_interleaved_samples_use_the_precise_server_tx() -> None:
    a, server = make(), InterleavingServer()
    _, samples = run(a, server, 4)
    basic = samples[0]
    assert basic is not None
    # Basic mode: the late real send looks like path delay, and skews the offset by half.
    assert abs(basic.offset_ns - (OFFSET - TX_LATE // 2)) <= 2
    for s in samples[1:]:
        assert s is not None and s.interleaved
        assert abs(s.offset_ns - OFFSET) <= 2
        assert abs(s.delay_ns - 2 * ONE_WAY) <= 2


def test_falls_back_to_basic_replies_from_a_server_that_does_not_interleave() -> None:
    a, server = make(), InterleavingServer(interleave=False)
    requests, samples = run(a, server, 4)
    assert requests[2].receive_ts != 0  # still asking
    assert all(s is not None and not s.interleaved for s in samples)
    assert not a.interleaved and a.stats.packets_dropped == 0


def test_without_xleave_requests_stay_basic() -> None:
    a, server = make(xleave=False), InterleavingServer()
    requests, samples = run(a, server, 3)
    assert all(r.origin_ts == 0 and r.receive_ts == 0 for r in requests)
    assert all(s is not None and not s.interleaved for s in samples)


def test_kernel_tx_stamp_wins_over_the_pre_send_clock_read() -> None:
    a = make(xleave=False)
    request = a.handle_timer(T0)
    assert request is not None
    a.handle_tx_timestamp(T0 + 5_000)  # inside sendto, on loopback
    a.handle_sent(T0)  # the pre-send read is reported after
    reply = InterleavingServer().answer(request, T0 + 5_000 + ONE_WAY)
    sample = a.handle_reply(reply, T0 + 5_000 + 2 * ONE_WAY + BUSY)
    assert sample is not None and abs(sample.offset_ns) <= 2


def test_reply_to_neither_cookie_is_bogus_and_keeps_state() -> None:
    a, server = make(), InterleavingServer()
    run(a, server, 2)
    request = a.handle_timer(T0 + 10 * S)
    assert request is not None
    req = decode_ntp(request)
    reply = decode_ntp(server.answer(request, T0 + 10 * S + ONE_WAY))
    forged = encode_ntp(replace(reply, origin_ts=req.origin_ts))  # echoes the wrong field
    assert a.handle_reply(forged, T0 + 10 * S + 50_000) is None
    assert a.stats.drops_by_reason == {"bogus": 1}
    good = a.handle_reply(encode_ntp(reply), T0 + 10 * S + 50_000)
    assert good is not None and good.interleaved


def test_unanswered_interleaved_requests_fall_back_to_basic() -> None:
    a, server = make(), InterleavingServer()
    run(a, server, 2)
    requests = [decode_ntp(a.handle_timer(T0 + (10 + i) * S) or b"") for i in range(6)]
    assert [r.origin_ts != 0 for r in requests] == [True] * 4 + [False] * 2
