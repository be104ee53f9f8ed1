"""Cookie master keys: seal/open, rotation by ratchet, fleet sharing, atomic persistence."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from tsyncd.nts.cookie import BadCookie, CookieContents, KeySet, load_keyset, ratchet, save_keyset

DAY = 86400
SESSION = CookieContents(aead_id=15, c2s=b"c" * 32, s2c=b"s" * 32)


def test_seal_open_and_sizes() -> None:
    keys = KeySet(100, bytes(32), DAY)
    cookie = keys.seal(SESSION)
    assert len(cookie) == 104
    assert keys.open(cookie) == SESSION
    assert len(keys.seal(CookieContents(aead_id=30, c2s=b"c" * 16, s2c=b"s" * 16))) == 72
    assert keys.seal(SESSION) != cookie  # fresh nonce each time (unlinkability)
    with pytest.raises(BadCookie):
        keys.open(cookie[:-1] + bytes([cookie[-1] ^ 1]))
    with pytest.raises(BadCookie):
        keys.open(b"\x00\x00\x00\x65" + cookie[4:])  # unknown key id
    with pytest.raises(BadCookie):
        keys.open(cookie[:20])


def test_layout_nonce_inside_and_the_old_layout_still_opens() -> None:
    keys = KeySet(100, b"m" * 32, DAY)
    session = struct.pack("!HH", 15, 0) + SESSION.s2c + SESSION.c2s
    cookie = keys.seal(SESSION)
    # key id | AES-SIV(master, no AD)(nonce 16 | session): nothing in clear but the key id.
    assert cookie[:4] == struct.pack("!I", 100)
    opened = AESSIV(b"m" * 32).decrypt(cookie[4:], None)
    assert len(opened) == 16 + len(session) and opened[16:] == session
    assert opened[:16] not in cookie
    # Cookies sealed before the nonce moved inside (nonce in clear, SIV's AD) still open.
    nonce = bytes(range(16))
    old = struct.pack("!I", 100) + nonce + AESSIV(b"m" * 32).encrypt(session, [nonce])
    assert len(old) == len(cookie) and keys.open(old) == SESSION
    with pytest.raises(BadCookie):
        keys.open(old[:-1] + bytes([old[-1] ^ 1]))


def test_rotation_keeps_three_epochs() -> None:
    keys = KeySet(10, bytes(32), DAY)
    old = keys.seal(SESSION)
    assert keys.advance(11 * DAY) and keys.current_epoch == 11
    assert keys.open(old) == SESSION  # one rotation later old cookies still open
    assert keys.oldest == (10, bytes(32))
    keys.advance(12 * DAY + 5)
    assert keys.open(old) == SESSION
    keys.advance(13 * DAY)
    with pytest.raises(BadCookie):
        keys.open(old)
    assert keys.oldest[0] == 11
    assert not keys.advance(13 * DAY + 1)


def test_fleet_servers_agree_without_talking(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    a = load_keyset(path, DAY, 50 * DAY)  # creates the file
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    b = load_keyset(path, DAY, 52 * DAY + 7)  # a second server, started later
    a.advance(52 * DAY)
    assert b.open(a.seal(SESSION)) == SESSION
    assert a.open(b.seal(SESSION)) == SESSION
    assert ratchet(bytes(32), 1) != ratchet(bytes(32), 2)


def test_save_is_atomic_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.json"
    keys = KeySet(7, b"k" * 32, DAY)
    save_keyset(path, keys)
    assert json.loads(path.read_text()) == {
        "epoch": 7,
        "rotation-interval": DAY,
        "key": (b"k" * 32).hex(),
    }
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"]
    with pytest.raises(ValueError, match="rotation interval"):
        load_keyset(path, 3600, 0)
