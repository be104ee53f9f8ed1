"""Property tests for symmetric keys (hypothesis): the key file parser and MAC verification
take any input and either work or say why, never crash; a MAC made by ``seal`` verifies and
any single flipped bit of the packet or MAC fails."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tsyncd.symkey import KEY_TYPES, KeyFileError, SymmetricKey, parse_key_file, seal, verify
from tsyncd.wire.ntp import HEADER_LEN

EXAMPLES = settings(max_examples=max(300, settings.default.max_examples), deadline=None)
_CMAC_LEN = {"AES128": 16, "AES256": 32}


@st.composite
def keys(draw: st.DrawFn) -> SymmetricKey:
    kind = draw(st.sampled_from(KEY_TYPES))
    size = _CMAC_LEN.get(kind)
    secret = draw(st.binary(min_size=size or 1, max_size=size or 40))
    return SymmetricKey(draw(st.integers(1, 2**32 - 1)), kind, secret)


@EXAMPLES
@given(st.text(max_size=400))
def test_any_key_file_text_parses_or_names_its_line(text: str) -> None:
    try:
        parsed = parse_key_file(text)
    except KeyFileError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(1 <= k <= 2**32 - 1 and key.secret for k, key in parsed.items())


@EXAMPLES
@given(keys(), st.binary(min_size=0, max_size=120))
def test_any_datagram_verifies_or_gives_a_reason(key: SymmetricKey, tail: bytes) -> None:
    data = bytes(HEADER_LEN) + tail
    reason, _found = verify({key.key_id: key}, data)
    assert reason in (None, "crypto_nak", "no_mac", "unknown_key", "bad_mac")


@EXAMPLES
@given(keys(), st.binary(min_size=HEADER_LEN, max_size=HEADER_LEN), st.data())
def test_sealed_packets_verify_and_any_flipped_bit_fails(
    key: SymmetricKey, header: bytes, data: st.DataObject
) -> None:
    signed = seal(key, header)
    table = {key.key_id: key}
    assert verify(table, signed) == (None, key)  # any version: v4 truncates to 20 bytes
    bit = data.draw(st.integers(0, len(signed) * 8 - 1))
    flipped = bytearray(signed)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert verify(table, bytes(flipped))[0] is not None
