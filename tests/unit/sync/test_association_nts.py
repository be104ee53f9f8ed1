"""The association's NTS hook with the real sans-IO responder and NTS server path.

An NTS association only takes authenticated answers to its own request: plain replies,
unauthenticated KoDs (even with the right origin), replays and tampered replies are dropped
with a reason; a NAK or running out of cookies stops sending and asks for NTS-KE.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace

from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.sync.association import NtpAssociation
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000
T0 = 1_800_000_000 * S
CLIENT = ipaddress.ip_address("127.0.0.1")
KEYS = KeySet(3, bytes(32), 86400)


def setup(cookies: int = 8) -> tuple[NtpAssociation, NtsSession, NtpResponder]:
    a = NtpAssociation(
        min_poll=4, max_poll=6, iburst=False, precision_log2=-20, rng=random.Random(2), now_ns=T0
    )
    contents = CookieContents(aead_id=15, c2s=b"c" * 32, s2c=b"s" * 32)
    session = NtsSession(15, contents.c2s, contents.s2c, [KEYS.seal(contents)] * cookies)
    a.auth = session
    r = NtpResponder(AccessList((), ()))
    r.template = ResponseTemplate(
        leap=Leap.NONE, stratum=2, reference_ts=ntp64_from_unix_ns(T0 - S)
    )
    r.extensions = NtsResponder(KEYS)
    return a, session, r


def poll(a: NtpAssociation, r: NtpResponder, now: int) -> tuple[bytes, bytes]:
    deadline = a.next_deadline_ns()
    assert deadline is not None
    request = a.handle_timer(max(now, deadline))
    assert request is not None
    reason, response = r.handle_request(request, CLIENT, now + 1000, now + 2000)
    assert reason == "answered_nts" and response is not None
    return request, response


def test_authenticated_reply_gives_a_sample() -> None:
    a, session, r = setup()
    request, response = poll(a, r, T0)
    assert len(response) == len(request)
    assert a.handle_reply(response, T0 + 5000) is not None
    assert len(session.cookies) == 8 and a.reach == 1


def test_unauthenticated_kod_and_plain_replies_are_ignored() -> None:
    a, _session, r = setup()
    request, response = poll(a, r, T0)
    origin = decode_ntp(request).transmit_ts
    kod = NtpPacket(
        mode=Mode.SERVER, stratum=0, reference_id=refid_from_ascii("RATE"), origin_ts=origin
    )
    assert a.handle_reply(encode_ntp(kod), T0 + 3000) is None
    assert a.stats.kiss_code is None and a.poll == 4  # the spoofed RATE did nothing
    plain = replace(decode_ntp(response), extensions=())
    assert a.handle_reply(encode_ntp(plain), T0 + 4000) is None
    # Neither carries NTS fields: unauthenticated, not "unknown UID" (QA s17 hunt-upstream F6)
    assert a.stats.drops_by_reason == {"nts_unauthenticated": 2}
    assert a.handle_reply(response, T0 + 5000) is not None  # the real one still counts
    assert a.handle_reply(response, T0 + 6000) is None  # replay
    assert a.stats.drops_by_reason["duplicate"] == 1


def test_tampered_reply_is_dropped() -> None:
    a, _session, r = setup()
    _request, response = poll(a, r, T0)
    bad = bytearray(response)
    bad[33] ^= 0x80  # receive timestamp
    assert a.handle_reply(bytes(bad), T0 + 5000) is None
    assert a.stats.drops_by_reason == {"nts_auth_failed": 1}


def test_nak_and_exhaustion_stop_sending() -> None:
    a, session, r = setup(cookies=2)
    r.extensions = NtsResponder(KeySet(9, b"x" * 32, 86400))  # the server lost our key
    deadline = a.next_deadline_ns()
    assert deadline is not None
    request = a.handle_timer(deadline)
    assert request is not None
    reason, nak = r.handle_request(request, CLIENT, T0, T0)
    assert reason == "nts_nak" and nak is not None
    assert a.handle_reply(nak, T0 + 1) is None
    assert not session.needs_ke and session.counters.naks == 1  # an answer may still come
    deadline = a.next_deadline_ns()
    assert deadline is not None
    # None came by the next poll: the cookie left is one the server cannot read either, so
    # it is dropped (RFC 8915 §5.7, chrony) and nothing is sent, in the clear or otherwise.
    assert a.handle_timer(deadline) is None
    assert session.needs_ke and not session.cookies
    assert a.stats.packets_sent == 1
