"""Symmetric keys: chrony's key file format, MACs (RFC 5905 legacy MAC, RFC 8573 AES-CMAC),
verification; and config's [keys] / source key checks.  (Digests against chronyd's own:
tests/interop/test_symmetric_keys_chronyd.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tsyncd.config import ConfigErrors, parse_config
from tsyncd.symkey import KeyFileError, SymmetricKey, parse_key_file, seal, verify
from tsyncd.wire.ntp import CRYPTO_NAK, Mode, NtpPacket, encode_ntp

PACKET = encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=0x0123456789ABCDEF))
KEYS = parse_key_file(
    """
    # a comment line, then keys as chrony writes them
    1 MD5 HEX:00112233445566778899AABBCCDDEEFF
    2 SHA256 ASCII:correct horse   # a trailing comment
    3 AES128 HEX:000102030405060708090A0B0C0D0E0F
    4 plainmd5
    5 sha1 HEX:ab
    """.replace("correct horse", "correct-horse")
)


def test_key_file_types_values_and_defaults() -> None:
    assert {k: (v.kind, len(v.secret)) for k, v in KEYS.items()} == {
        1: ("MD5", 16),
        2: ("SHA256", 13),
        3: ("AES128", 16),
        4: ("MD5", 8),  # no type: MD5, as chrony
        5: ("SHA1", 1),
    }
    assert "correct" not in repr(KEYS[2])  # never the secret in logs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 MD5 HEX:00", "line 1: key ID '0' is not an integer 1..4294967295"),
        (
            "1 MD4 HEX:00",
            "line 1: key type 'MD4' is not one of MD5, SHA1, SHA256, SHA384, "
            "SHA512, AES128, AES256",
        ),
        ("\n1 MD5 HEX:0g", "line 2: HEX: value is not hexadecimal"),
        ("1 AES256 HEX:00", "line 1: an AES256 key is 32 bytes, not 1"),
        ("1 MD5 HEX:", "line 1: the key is empty"),
        ("1 MD5 a b c", "line 1: expected ID [TYPE] VALUE"),
        ("1 a\n1 b", "line 2: key 1 is defined twice"),
    ],
)
def test_bad_key_file_lines_are_named(text: str, message: str) -> None:
    with pytest.raises(KeyFileError) as e:
        parse_key_file(text)
    assert str(e.value) == message


def test_every_bad_key_file_line_is_named() -> None:
    with pytest.raises(KeyFileError) as e:
        parse_key_file("1 MD5 HEX:0g\n2 MD5 HEX:01\n# fine\n3 MD4 x\n2 SHA1 y\n")
    assert e.value.problems == (
        "line 1: HEX: value is not hexadecimal",
        "line 4: key type 'MD4' is not one of MD5, SHA1, SHA256, SHA384, SHA512, AES128, AES256",
        "line 5: key 2 is defined twice",
    )
    assert str(e.value) == "; ".join(e.value.problems)


def test_digests_are_hash_of_key_then_packet_truncated_to_20_or_cmac() -> None:
    md5 = seal(KEYS[1], PACKET)
    assert md5[48:52] == b"\0\0\0\1" and len(md5) == 48 + 4 + 16
    assert md5[52:] == hashlib.md5(KEYS[1].secret + PACKET).digest()
    sha = seal(KEYS[2], PACKET)
    assert sha[52:] == hashlib.sha256(KEYS[2].secret + PACKET).digest()[:20]
    assert len(seal(KEYS[3], PACKET)) == 48 + 4 + 16
    # AES-CMAC: RFC 4493 §4, examples 1 and 2.
    rfc4493 = SymmetricKey(3, "AES128", bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
    assert rfc4493.digest(b"").hex() == "bb1d6929e95937287fa37d129b756746"
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert rfc4493.digest(message).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


def test_verify_names_every_failure() -> None:
    good = seal(KEYS[2], PACKET)
    assert verify(KEYS, good) == (None, KEYS[2])
    bad = good[:-1] + bytes([good[-1] ^ 1])
    assert verify(KEYS, bad) == ("bad_mac", KEYS[2])
    other = SymmetricKey(9, "MD5", b"x")
    assert verify(KEYS, seal(other, PACKET)) == ("unknown_key", None)
    assert verify(KEYS, PACKET + CRYPTO_NAK) == ("crypto_nak", None)
    assert verify(KEYS, PACKET) == ("no_mac", None)
    # A SHA256 key ID on an MD5-sized MAC: the length is wrong for that key.
    assert verify(KEYS, good[:-4]) == ("bad_mac", KEYS[2])


def test_config_keys_file_and_source_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("7 SHA1 HEX:0102\n")
    config = parse_config(
        {"keys": {"file": str(path)}, "source": [{"mode": "server", "address": "a", "key": 7}]},
        tmp_path / "t.toml",
    )
    assert config.sources[0].key == 7 and config.symmetric_keys[7].kind == "SHA1"
    bad = [
        {"mode": "server", "address": "a", "key": 8},
        {"mode": "nts", "address": "b", "key": 7},
    ]
    with pytest.raises(ConfigErrors) as e:
        parse_config({"keys": {"file": str(path)}, "source": bad}, tmp_path / "t.toml")
    assert [str(x).split(": ", 1)[1] for x in e.value.errors] == [
        "source[0].key = 8: expected a key ID of the [keys] file (7)",
        'source[1].key = 7: expected no key unless mode = "server", "pool" or "peer"',
    ]
    path.write_text("7 SHA1 HEX:zz\n")
    with pytest.raises(ConfigErrors) as e:
        parse_config({"keys": {"file": str(path)}}, tmp_path / "t.toml")
    assert str(e.value.errors[0]).endswith(
        f'keys.file = "{path}": expected a key file in chrony\'s format '
        "(line 1: HEX: value is not hexadecimal)"
    )
    with pytest.raises(ConfigErrors) as e:
        parse_config({"source": [{"mode": "server", "address": "a", "key": 1}]}, tmp_path / "t")
    assert "source[0].key = 1: expected a key ID of a [keys] file (none is set)" in str(
        e.value.errors[0]
    )
