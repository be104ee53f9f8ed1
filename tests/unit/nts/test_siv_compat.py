"""Empty-plaintext AES-SIV done by S2V alone must equal what a capable ``cryptography`` does.

The venv's ``cryptography`` seals empty plaintexts itself, so it is the reference here; Debian
12's (38) cannot, and the .deb relies on ``SivCompat`` for every NTS request.
"""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import given
from hypothesis import strategies as st

from tsyncd.nts.siv_compat import SivCompat, library_seals_empty, s2v_empty


def test_the_reference_library_seals_empty_plaintexts() -> None:
    assert library_seals_empty()  # else the comparisons below would prove nothing


@given(
    key=st.binary(min_size=32, max_size=32) | st.binary(min_size=64, max_size=64),
    associated=st.lists(st.binary(max_size=70), min_size=1, max_size=3),
)
def test_s2v_of_nothing_is_the_library_ciphertext(key: bytes, associated: list[bytes]) -> None:
    assert s2v_empty(key[: len(key) // 2], associated) == AESSIV(key).encrypt(b"", associated)


def test_compat_seals_and_opens_like_the_library() -> None:
    key, ad, nonce = os.urandom(64), os.urandom(68), os.urandom(16)
    compat, library = SivCompat(key), AESSIV(key)
    tag = compat.encrypt(b"", [ad, nonce])  # an NTS client request's Authenticator
    assert tag == library.encrypt(b"", [ad, nonce]) and len(tag) == 16
    assert compat.decrypt(tag, [ad, nonce]) == b""
    assert compat.decrypt(memoryview(tag), [memoryview(ad), nonce]) == b""
    with pytest.raises(InvalidTag):
        compat.decrypt(bytes([tag[0] ^ 1]) + tag[1:], [ad, nonce])
    with pytest.raises(InvalidTag):
        compat.decrypt(tag, [ad + b"x", nonce])
    sealed = compat.encrypt(b"cookies", [ad, nonce])  # non-empty: the library's own
    assert sealed == library.encrypt(b"cookies", [ad, nonce])
    assert compat.decrypt(sealed, [ad, nonce]) == b"cookies"
