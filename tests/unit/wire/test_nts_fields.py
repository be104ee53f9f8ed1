"""NTS extension-field framing (RFC 8915 §5.3-5.6)."""

from __future__ import annotations

import pytest

from tsyncd.wire.ntp import ExtensionField, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.nts import (
    AUTHENTICATOR,
    COOKIE,
    UNIQUE_ID,
    BadNts,
    decode_authenticator,
    decode_inner,
    encode_authenticator,
    encode_ef,
    encode_inner,
    split_nts,
)


def test_authenticator_layout() -> None:
    ef = encode_authenticator(b"n" * 12, b"c" * 17)
    # header, lengths (12, 17), nonce 12, ciphertext 17 + 3 padding
    assert ef[:8] == bytes.fromhex("04040028 000c0011")
    assert len(ef) == 4 + 4 + 12 + 20
    assert decode_authenticator(ef[4:]) == (b"n" * 12, b"c" * 17)
    padded = encode_authenticator(b"n" * 16, b"c" * 16, total_len=100)
    assert len(padded) == 100 and padded.endswith(bytes(60))
    assert decode_authenticator(padded[4:]) == (b"n" * 16, b"c" * 16)
    with pytest.raises(BadNts):
        decode_authenticator(bytes.fromhex("00100010") + bytes(16))


def test_inner_fields_may_be_short() -> None:
    fields = [
        ExtensionField(field_type=COOKIE, body=b"abcd"),
        ExtensionField(field_type=1, body=b""),
    ]
    data = encode_inner(fields)
    assert data == bytes.fromhex("02040008 61626364 00010004")
    assert list(decode_inner(data)) == fields
    for bad in (b"\x00\x01", bytes.fromhex("00010003"), bytes.fromhex("00010010")):
        with pytest.raises(BadNts):
            decode_inner(bad)


def test_split_finds_associated_data() -> None:
    header = encode_ntp(NtpPacket())
    uid = encode_ef(UNIQUE_ID, b"u" * 32)
    cookie = encode_ef(COOKIE, b"k" * 100)
    auth = encode_authenticator(b"n" * 16, b"t" * 16)
    data = header + uid + cookie + auth
    fields = split_nts(data, decode_ntp(data))
    assert fields.associated_data == header + uid + cookie
    assert fields.unique_id == b"u" * 32 and fields.cookie == b"k" * 100 and fields.cookies == 1
    assert fields.nonce == b"n" * 16 and fields.ciphertext == b"t" * 16
    # The Authenticator must be last: anything after it would be unauthenticated.
    late = header + uid + auth + cookie
    with pytest.raises(BadNts):
        split_nts(late, decode_ntp(late))
    twice = header + uid + uid + auth
    with pytest.raises(BadNts):
        split_nts(twice, decode_ntp(twice))


def test_authenticator_type() -> None:
    assert AUTHENTICATOR == 0x0404 and encode_ef(AUTHENTICATOR, b"")[:2] == b"\x04\x04"
