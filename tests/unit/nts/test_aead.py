"""AEAD 15 and 30 against RFC test vectors, and the empty plaintext NTS requests use."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from tsyncd.nts.aead import AEADS, AuthenticationFailed

SIV = AEADS[15]
GCMSIV = AEADS[30]


def test_rfc5297_a1_deterministic() -> None:
    key = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    ad = bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")
    p = bytes.fromhex("112233445566778899aabbccddee")
    expected = "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c"
    assert AESSIV(key).encrypt(p, [ad]).hex() == expected


def test_rfc8452_c1_empty_plaintext() -> None:
    key = bytes.fromhex("01000000000000000000000000000000")
    nonce = bytes.fromhex("030000000000000000000000")
    assert GCMSIV.seal(key, nonce, b"", b"").hex() == "dc20e2d83f25705bb49e439eca56de25"
    ct = GCMSIV.seal(key, nonce, bytes.fromhex("0100000000000000"), b"")
    assert ct.hex() == "b5d839330ac7b786578782fff6013b815b287c22493a364c"


@pytest.mark.parametrize("aead_id", [15, 30])
def test_empty_plaintext_round_trip_and_tamper(aead_id: int) -> None:
    aead = AEADS[aead_id]
    key = bytes(range(aead.key_len))
    nonce = bytes(aead.nonce_len)
    ct = aead.seal(key, nonce, b"", b"header")
    assert len(ct) == 16
    assert aead.open(key, nonce, ct, b"header") == b""
    for bad_ad, bad_ct in ((b"headeR", ct), (b"header", bytes([ct[0] ^ 1]) + ct[1:])):
        with pytest.raises(AuthenticationFailed):
            aead.open(key, nonce, bad_ct, bad_ad)
    with pytest.raises(AuthenticationFailed):
        aead.open(key, nonce, ct[:15], b"header")


def test_siv_nonce_is_last_associated_data() -> None:
    key = bytes(32)
    assert SIV.seal(key, b"n" * 16, b"p", b"a") == AESSIV(key).encrypt(b"p", [b"a", b"n" * 16])
    assert SIV.min_padded_nonce == 16 and GCMSIV.min_padded_nonce == 12
