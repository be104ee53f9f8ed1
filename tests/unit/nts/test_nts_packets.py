"""Client and server NTS packet paths against each other, in memory (RFC 8915 §5.7).

Tampered, replayed, truncated and unauthenticated packets must be rejected.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp, kiss_code
from tsyncd.wire.nts import COOKIE, encode_authenticator, encode_ef

PLAIN = NtpPacket(mode=Mode.SERVER, stratum=2, receive_ts=5, transmit_ts=6)


def pair(aead_id: int, cookies: int = 8) -> tuple[NtsSession, NtsResponder]:
    keys = KeySet(1, bytes(32), 86400)
    key_len = 32 if aead_id == 15 else 16
    contents = CookieContents(aead_id=aead_id, c2s=b"c" * key_len, s2c=b"s" * key_len)
    session = NtsSession(
        aead_id, contents.c2s, contents.s2c, [keys.seal(contents) for _ in range(cookies)]
    )
    return session, NtsResponder(keys)


def exchange(session: NtsSession, server: NtsResponder) -> tuple[bytes, bytes, str]:
    request = session.protect(encode_ntp(NtpPacket(transmit_ts=99)))
    assert request is not None
    reason, response = server.respond(request, decode_ntp(request), replace(PLAIN, origin_ts=99))
    assert response is not None, reason
    return request, response, reason


@pytest.mark.parametrize("aead_id", [15, 30])
def test_round_trip_keeps_eight_cookies(aead_id: int) -> None:
    session, server = pair(aead_id)
    request, response, reason = exchange(session, server)
    assert reason == "answered_nts"
    assert len(response) == len(request)  # exactly as long as the request, never longer
    assert session.verify(response, decode_ntp(response)) is None
    assert len(session.cookies) == 8 and server.cookies_issued == 1
    # With cookies missing the client sends placeholders and gets refilled.
    for _ in range(3):
        session.cookies.popleft()
    request, response, _ = exchange(session, server)
    assert len(response) == len(request)
    assert session.verify(response, decode_ntp(response)) is None
    assert len(session.cookies) == 8 and server.cookies_issued == 1 + 4


def test_replay_and_tamper_rejected() -> None:
    session, server = pair(15)
    _, response, _ = exchange(session, server)
    flipped = bytearray(response)
    flipped[40] ^= 1  # a timestamp byte: covered by the associated data
    assert session.verify(bytes(flipped), decode_ntp(bytes(flipped))) == "nts_auth_failed"
    assert session.verify(response, decode_ntp(response)) is None
    assert session.verify(response, decode_ntp(response)) == "duplicate"  # replay (QA s17)


def test_truncated_and_unauthenticated_rejected() -> None:
    session, server = pair(15)
    _, response, _ = exchange(session, server)
    plain = encode_ntp(PLAIN)
    assert session.verify(plain, decode_ntp(plain)) == "nts_unauthenticated"  # no NTS fields
    head = response[: 48 + 36]  # header + UID: no Authenticator
    assert session.verify(head, decode_ntp(head)) == "nts_unauthenticated"
    assert session.verify(response, decode_ntp(response)) is None


def test_server_naks_bad_cookie_and_bad_authenticator() -> None:
    session, server = pair(15)
    request = session.protect(encode_ntp(NtpPacket(transmit_ts=7)))
    assert request is not None
    bad = bytearray(request)
    bad[48 + 36 + 10] ^= 1  # inside the cookie
    reason, nak = server.respond(bytes(bad), decode_ntp(bytes(bad)), PLAIN)
    assert reason == "nts_nak" and nak is not None and len(nak) == 84
    packet = decode_ntp(nak)
    assert kiss_code(packet) == "NTSN" and packet.extensions[0].body == request[52:84]
    bad = bytearray(request)
    bad[-1] ^= 1  # the tag
    assert server.respond(bytes(bad), decode_ntp(bytes(bad)), PLAIN)[0] == "nts_nak"
    assert server.naks == 2
    # The client accepts a NAK for its own request only.  With no authentic response by the
    # next poll it drops the cookies the server cannot read, sends nothing and wants a new KE
    # (RFC 8915 §5.7, chrony's check_cookies); it used to spend them, one NAK each.
    assert session.verify(nak, packet) == "nts_nak" and not session.needs_ke
    assert session.verify(nak, packet) == "nts_nak" and session.counters.naks == 1  # once
    assert len(session.cookies) == 7
    assert session.protect(encode_ntp(NtpPacket(transmit_ts=8))) is None
    assert session.needs_ke and not session.cookies


def test_an_authentic_response_after_a_nak_keeps_the_cookies() -> None:
    # A NAK is unauthenticated: if an on-path attacker forges one, the server's genuine
    # response to the same request must still count, and the cookies stay in use.
    session, server = pair(15)
    request, response, _ = exchange(session, server)
    forged = encode_ntp(NtpPacket(mode=Mode.SERVER, stratum=0, reference_id=0x4E54534E))
    forged += request[48:84]  # the request's Unique Identifier, echoed
    assert session.verify(forged, decode_ntp(forged)) == "nts_nak"
    assert session.verify(response, decode_ntp(response)) is None
    assert len(session.cookies) == 8
    assert session.protect(encode_ntp(NtpPacket(transmit_ts=8))) is not None


def test_server_drops_incomplete_and_passes_plain() -> None:
    session, server = pair(15)
    request = session.protect(encode_ntp(NtpPacket(transmit_ts=7)))
    assert request is not None
    uid_only = request[:84] + bytes.fromhex("fff0001c") + bytes(24)
    assert server.respond(uid_only, decode_ntp(uid_only), PLAIN)[0] == "nts_incomplete"
    other = encode_ntp(NtpPacket()) + bytes.fromhex("fff0001c") + bytes(24)
    assert server.respond(other, decode_ntp(other), PLAIN) == ("answered", encode_ntp(PLAIN))


def test_no_cookie_means_no_request() -> None:
    session, _ = pair(15, cookies=1)
    assert session.protect(encode_ntp(NtpPacket())) is not None
    assert not session.needs_ke
    assert session.protect(encode_ntp(NtpPacket())) is None and session.needs_ke


def _response_with_cookies(session: NtsSession, request: bytes, cookies: list[bytes]) -> bytes:
    """An authentic response to ``request`` whose encrypted part holds ``cookies``."""
    ad = encode_ntp(replace(PLAIN, origin_ts=99)) + request[48:84]  # echo the Unique Identifier
    inner = b"".join(encode_ef(COOKIE, c) for c in cookies)
    nonce = bytes(session.aead.nonce_len)
    return ad + encode_authenticator(nonce, session.aead.seal(session.s2c, nonce, inner, ad))


def test_cookies_of_lengths_chrony_would_not_take_are_not_kept() -> None:
    # A server that hands out 1200-byte cookies in its responses must not make our requests
    # that large: such cookies are dropped (chrony's extract_cookies), others are kept.
    session, _ = pair(15, cookies=1)
    request = session.protect(encode_ntp(NtpPacket(transmit_ts=99)))
    assert request is not None
    response = _response_with_cookies(session, request, [bytes(1200), bytes(256), bytes(1200)])
    assert session.verify(response, decode_ntp(response)) is None
    assert list(session.cookies) == [bytes(256)]
    # Nor are they taken from NTS-KE or a saved session.
    assert list(NtsSession(15, bytes(32), bytes(32), [bytes(300), b"abc"]).cookies) == []


@pytest.mark.parametrize("aead_id", [15, 30])
def test_requests_stay_unfragmented(aead_id: int) -> None:
    # The largest cookie we keep, with no cookies left: the request still fits in 1024 bytes
    # (placeholders are capped at chrony's 8 x 108 bytes).
    session = NtsSession(aead_id, bytes(32 if aead_id == 15 else 16), bytes(32), [bytes(256)])
    request = session.protect(encode_ntp(NtpPacket()))
    assert request is not None and len(request) <= 1024
