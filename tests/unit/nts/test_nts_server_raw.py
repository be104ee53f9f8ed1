"""The server's raw-bytes NTS path (``NtsResponder.respond_raw``), RFC 8915 §5.7.

It parses the datagram itself instead of trusting ``decode_ntp``, so these tests pin it to the
same bytes and reasons: NAK layout, legacy MAC after the Authenticator, framing errors, the
bounded session-cipher cache.
"""

from __future__ import annotations

import os
import struct
from dataclasses import replace

import pytest

from tsyncd.nts import aead as nts_aead
from tsyncd.nts import server as nts_server
from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.nts.siv_compat import SivCompat
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import (
    ExtensionField,
    KissCode,
    Leap,
    Mode,
    NtpPacket,
    decode_ntp,
    encode_ntp,
    refid_from_ascii,
)
from tsyncd.wire.nts import COOKIE_PLACEHOLDER, UNIQUE_ID

PLAIN = NtpPacket(
    mode=Mode.SERVER, stratum=2, poll=6, precision=-23, root_delay=7, root_dispersion=9,
    reference_id=0x7F000001, reference_ts=3, origin_ts=99, receive_ts=5, transmit_ts=6,
)  # fmt: skip
PLAIN_BYTES = encode_ntp(PLAIN)
KEYS = KeySet(1, bytes(32), 86400)


def session(aead_id: int, cookies: int = 8, key: bytes = b"k") -> NtsSession:
    key_len = 32 if aead_id == 15 else 16
    contents = CookieContents(aead_id=aead_id, c2s=key * key_len, s2c=b"s" * key_len)
    return NtsSession(
        aead_id, contents.c2s, contents.s2c, [KEYS.seal(contents) for _ in range(cookies)]
    )


def request(s: NtsSession) -> bytes:
    data = s.protect(encode_ntp(NtpPacket(transmit_ts=99)))
    assert data is not None
    return data


@pytest.mark.parametrize("aead_id", [15, 30])
@pytest.mark.parametrize("cookies", [8, 1])
def test_raw_round_trip(aead_id: int, cookies: int) -> None:
    s = session(aead_id, cookies)
    server = NtsResponder(KEYS)
    data = request(s)
    reason, response = server.respond_raw(data, PLAIN_BYTES)
    assert reason == "answered_nts" and response is not None
    assert len(response) == len(data)
    assert response[:48] == PLAIN_BYTES
    assert s.verify(response, decode_ntp(response)) is None
    assert len(s.cookies) == 8 and server.cookies_issued == 9 - cookies
    # A worker's receive buffer works as well as bytes.
    again = request(s)
    reason, response = server.respond_raw(memoryview(bytearray(again)), PLAIN_BYTES)
    assert reason == "answered_nts" and response is not None
    assert s.verify(response, decode_ntp(response)) is None


def test_nak_is_the_plain_reply_turned_kod() -> None:
    data = bytearray(request(session(15)))
    data[48 + 36 + 10] ^= 1  # inside the cookie
    server = NtsResponder(KEYS)
    reason, nak = server.respond_raw(bytes(data), PLAIN_BYTES)
    expected = replace(
        PLAIN,
        leap=Leap.UNSYNCHRONIZED,
        stratum=0,
        reference_id=refid_from_ascii(KissCode.NTSN.value),
        reference_ts=0,
        receive_ts=0,
        transmit_ts=0,
        extensions=(ExtensionField(field_type=UNIQUE_ID, body=bytes(data[52:84])),),
    )
    assert reason == "nts_nak" and nak == encode_ntp(expected) and server.naks == 1


def test_legacy_mac_after_the_authenticator_stays_out_of_the_ad() -> None:
    s = session(15)
    data = request(s) + struct.pack("!I", 1) + bytes(16)  # key id + MD5-sized digest
    reason, response = NtsResponder(KEYS).respond_raw(data, PLAIN_BYTES)
    assert reason == "answered_nts" and response is not None and len(response) == len(data)
    assert s.verify(response, decode_ntp(response)) is None


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"\0\0\0", "malformed_bad_length"),  # not 4-aligned
        (bytes.fromhex("0104000c") + bytes(8), "malformed_bad_extension"),  # EF under 16
        (bytes.fromhex("01040100") + bytes(28), "malformed_bad_extension"),  # past the end
        (bytes.fromhex("0104001e") + bytes(28), "malformed_bad_extension"),  # unaligned
        (bytes.fromhex("fff0001c") + bytes(24), "answered"),  # an EF, but not NTS
        (bytes(4), "answered"),  # crypto-NAK
        (bytes(20), "answered"),  # a bare legacy MAC
    ],
)
def test_framing_checked_like_decode_ntp(tail: bytes, reason: str) -> None:
    data = encode_ntp(NtpPacket()) + tail
    got = NtsResponder(KEYS).respond_raw(data, PLAIN_BYTES)
    assert got == (reason, PLAIN_BYTES if reason == "answered" else None)
    if reason != "answered":
        with pytest.raises(WireError) as exc:
            decode_ntp(data)
        assert reason == f"malformed_{exc.value.reason}"


def test_misplaced_and_repeated_fields_dropped() -> None:
    data = request(session(15))
    uid = data[48:84]
    twice = data[:84] + uid + data[84:]
    assert NtsResponder(KEYS).respond_raw(twice, PLAIN_BYTES) == ("nts_bad_nts", None)
    after = (
        data
        + encode_ntp(
            NtpPacket(),
        )[:0]
        + bytes.fromhex("fff0001c")
        + bytes(24)
    )
    assert NtsResponder(KEYS).respond_raw(after, PLAIN_BYTES) == ("nts_bad_nts", None)


def test_encrypted_placeholders_count() -> None:
    s = session(15, cookies=2)  # sends 1 cookie + 6 placeholders: 7 cookies back
    data = request(s)
    server = NtsResponder(KEYS)
    assert server.respond_raw(data, PLAIN_BYTES)[0] == "answered_nts"
    assert server.cookies_issued == 7
    assert data.count(struct.pack("!HH", COOKIE_PLACEHOLDER, 108)) == 6


def test_session_cipher_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nts_server, "SESSION_CACHE", 2)
    server = NtsResponder(KEYS)
    for key in (b"a", b"b", b"c", b"a"):
        s = session(15, key=key)
        reason, response = server.respond_raw(request(s), PLAIN_BYTES)
        assert reason == "answered_nts" and response is not None
        assert s.verify(response, decode_ntp(response)) is None
        assert len(server._sessions) <= 2


def test_round_trip_through_the_compat_siv(monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian 12's cryptography 38 gets SivCompat (bytes only, empty plaintexts by S2V) for
    # cookies and AEAD 15 sessions: the server's inlined AEAD calls must work with it too.
    monkeypatch.setattr(nts_aead, "_SIV", SivCompat)
    keys = KeySet(1, bytes(32), 86400)
    contents = CookieContents(aead_id=15, c2s=b"c" * 32, s2c=b"s" * 32)
    s = NtsSession(15, contents.c2s, contents.s2c, [keys.seal(contents) for _ in range(7)])
    server = NtsResponder(keys)
    data = request(s)
    reason, response = server.respond_raw(memoryview(bytearray(data)), PLAIN_BYTES)
    assert reason == "answered_nts" and response is not None
    assert isinstance(server._sessions[keys.open_session(s.cookies[0])[1]][1], SivCompat)
    assert s.verify(response, decode_ntp(response)) is None and server.cookies_issued == 2
    forged = request(s)
    forged = forged[:-1] + bytes([forged[-1] ^ 1])
    assert server.respond_raw(forged, PLAIN_BYTES)[0] == "nts_nak"


def _nonce(response: bytes) -> bytes:
    """The response Authenticator's nonce (after the header and the echoed UID EF)."""
    at = 48 + struct.unpack_from("!H", response, 50)[0]
    nonce_len = struct.unpack_from("!H", response, at + 4)[0]
    return response[at + 8 : at + 8 + nonce_len]


def test_random_pool_is_never_shared_across_fork() -> None:
    # Nonces come from a pool of kernel random bytes; a forked child must not reuse the
    # parent's pool, or parent and child would send the same nonces (and cookies).
    s = session(15)
    server = NtsResponder(KEYS)
    first = server.respond_raw(request(s), PLAIN_BYTES)[1]
    data = request(s)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next nonce, to the parent
        try:
            response = server.respond_raw(data, PLAIN_BYTES)[1]
            os.write(write_end, _nonce(response) if response else b"")
        finally:
            os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 64)
    os.close(read_end)
    assert os.waitpid(pid, 0)[1] == 0
    response = server.respond_raw(data, PLAIN_BYTES)[1]
    assert first is not None and response is not None and len(child) == 16
    nonces = {_nonce(first), _nonce(response), child}
    assert len(nonces) == 3


@pytest.mark.parametrize("aead_id", [15, 30])
def test_the_transmit_is_restamped_after_all_but_the_last_seal(aead_id: int) -> None:
    """QA s18 hunt-ops F1: the Transmit was read before the NTS work (about 100 µs of it at a
    client's pace), so NTS clients measured tsyncd ~50 µs behind.  ``restamp`` now comes after
    the cookie is opened, the request verified and the new cookies sealed, and the reply is
    sealed over the header it returns."""
    s = session(aead_id)
    keys = KeySet(1, bytes(32), 86400)
    calls: list[str] = []
    seal_efs = keys.seal_efs

    def spied_seal_efs(*args: object) -> bytes:
        calls.append("cookies sealed")
        return seal_efs(*args)  # type: ignore[arg-type]

    keys.seal_efs = spied_seal_efs  # type: ignore[method-assign]
    late = PLAIN_BYTES[:40] + struct.pack("!Q", 0x1234_5678_9ABC_DEF0)

    def restamp(header: bytes) -> bytes:
        assert header == PLAIN_BYTES
        calls.append("restamped")
        return late

    reason, response = NtsResponder(keys).respond_raw(request(s), PLAIN_BYTES, restamp)
    assert reason == "answered_nts" and response is not None
    assert calls == ["cookies sealed", "restamped"]
    assert response[:48] == late
    assert s.verify(response, decode_ntp(response)) is None  # sealed over the late header
    # A NAK is not a time reply: no restamp.
    calls.clear()
    bad = bytearray(request(s))
    bad[48 + 36 + 10] ^= 1
    reason, _nak = NtsResponder(keys).respond_raw(bytes(bad), PLAIN_BYTES, restamp)
    assert reason == "nts_nak" and calls == []
