"""Cookie master keys: seal/open, rotation by ratchet, fleet sharing, atomic persistence."""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from tsyncd.nts import cookie
from tsyncd.nts.cookie import (
    BadCookie,
    CookieContents,
    KeyFileError,
    KeySet,
    load_keyset,
    new_keyset,
    ratchet,
    save_keyset,
)

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
    with pytest.raises(KeyFileError) as info:
        load_keyset(path, 3600, 0)
    assert str(info.value) == (  # the path once, then what is wrong
        f'NTS key file {path}: "rotation-interval" is 86400 s but [keyset] '
        "key-rotation-interval is 3600 s: the file was made for another interval (set "
        "key-rotation-interval = 86400 again, or remove the file for a new key: every client "
        "then runs NTS-KE again)"
    )


def test_a_fleet_member_opens_cookies_of_the_next_epoch_but_never_seals_with_it() -> None:
    """Members rotate on their own ticks: one still in epoch 10 gets cookies made in 11."""
    early, late = KeySet(9, bytes(32), DAY), KeySet(9, bytes(32), DAY)
    early.advance(11 * DAY)  # its tick came first
    late.advance(11 * DAY - 1)  # still in epoch 10
    assert (late.current_epoch, early.current_epoch) == (10, 11)
    assert late.open(early.seal(SESSION)) == SESSION
    assert late.seal(SESSION)[:4] == struct.pack("!I", 10)  # never sealed with 11 early
    # Two epochs ahead is not accepted: only the next one.
    ahead = KeySet(9, bytes(32), DAY)
    ahead.advance(12 * DAY)
    with pytest.raises(BadCookie, match="not one of ours"):
        late.open(ahead.seal(SESSION))
    # The key file still keeps the oldest accepted key, not the one derived ahead.
    assert late.oldest == (9, bytes(32))
    # A fresh key set (as a worker rebuilds it) accepts the next epoch too.
    assert KeySet(10, ratchet(bytes(32), 9), DAY).open(early.seal(SESSION)) == SESSION


def test_servers_racing_to_create_the_key_file_all_take_the_first_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fleet members starting together with no file: whoever creates it first wins, the
    others read its key instead of overwriting it with theirs."""
    path = tmp_path / "keys.json"
    winner = KeySet(50, b"w" * 32, DAY)

    def drawn_while_another_server_writes(now_s: float, rotation_s: int) -> KeySet:
        save_keyset(path, winner)  # the other server, between our read and our write
        return new_keyset(now_s, rotation_s)

    monkeypatch.setattr(cookie, "new_keyset", drawn_while_another_server_writes)
    with caplog.at_level(logging.INFO, logger="tsyncd.nts.cookie"):
        loser = load_keyset(path, DAY, 50 * DAY + 1)
    assert loser.oldest == (50, b"w" * 32)
    assert json.loads(path.read_text())["key"] == (b"w" * 32).hex()  # not overwritten
    assert loser.open(winner.seal(SESSION)) == SESSION
    assert "created by another server: using its key" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temp file left


def test_exclusive_create_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without hard links (vfat): O_EXCL instead, still 0600, still exclusive."""

    def no_links(_src: str, _dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "keys.json"
    made = load_keyset(path, DAY, 50 * DAY)
    assert load_keyset(path, DAY, 50 * DAY).oldest == made.oldest
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        save_keyset(path, KeySet(50, b"x" * 32, DAY), exclusive=True)
    assert load_keyset(path, DAY, 50 * DAY).oldest == made.oldest
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


SHAPE = '{"epoch": N, "rotation-interval": SECONDS, "key": "64 hex digits"}'
GOOD = {"epoch": 1, "rotation-interval": 60, "key": "ab" * 32}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[]", f"expected a JSON object {SHAPE}, not []"),
        (b'"keys"', f'expected a JSON object {SHAPE}, not "keys"'),
        (
            b"{",
            "not JSON (Expecting property name enclosed in double quotes at byte 1); expected "
            + SHAPE,
        ),
        (b"\x80garbage", f"not JSON; expected {SHAPE}"),  # not UTF-8
        (b"", f"not JSON (Expecting value at byte 0); expected {SHAPE}"),
        (json.dumps({"epoch": 1, "rotation-interval": 60}), f'"key" is missing; expected {SHAPE}'),
        (
            json.dumps({**GOOD, "key": "zz"}),
            '"key" is not hexadecimal: expected 64 hex digits (the 32-byte master key)',
        ),
        (
            json.dumps({**GOOD, "key": "abcd"}),
            '"key" has 4 hex digits: expected 64 hex digits (the 32-byte master key)',
        ),
        (
            json.dumps({**GOOD, "key": 7}),
            '"key" is 7: expected a string of 64 hex digits (the 32-byte master key)',
        ),
        (
            json.dumps({**GOOD, "epoch": "x"}),
            '"epoch" is "x": expected an integer >= 0 (Unix time // rotation-interval)',
        ),
        (
            json.dumps({**GOOD, "epoch": 1.5}),
            '"epoch" is 1.5: expected an integer >= 0 (Unix time // rotation-interval)',
        ),
        (
            json.dumps({**GOOD, "epoch": -1}),
            '"epoch" is -1: expected an integer >= 0 (Unix time // rotation-interval)',
        ),
        (
            json.dumps({**GOOD, "rotation-interval": True}),
            '"rotation-interval" is true: expected a whole number of seconds',
        ),
    ],
)
def test_a_malformed_key_file_gets_one_line_naming_the_field(
    tmp_path: Path, content: str | bytes, problem: str
) -> None:
    path = tmp_path / "keys.json"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    with pytest.raises(KeyFileError) as info:
        load_keyset(path, 60, 100 * 60)
    assert str(info.value) == f"NTS key file {path}: {problem}"
    assert path.read_bytes() == (content.encode() if isinstance(content, str) else content)


def test_unreadable_or_missing_key_file(tmp_path: Path) -> None:
    (tmp_path / "keys.json").mkdir()
    with pytest.raises(KeyFileError, match=r"keys.json: cannot read it \(Is a directory\)$"):
        load_keyset(tmp_path / "keys.json", 60, 0)
    # tsyncctl rekey: a missing file is an error, not a new key.
    gone = tmp_path / "gone.json"
    with pytest.raises(KeyFileError, match=r"gone\.json does not exist$"):
        load_keyset(gone, 60, 0, create=False)
    assert not gone.exists()


def test_a_key_file_that_cannot_be_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cookie, "write_atomic", refused)
    with pytest.raises(KeyFileError) as info:
        load_keyset(tmp_path / "keys.json", 60, 0)
    assert str(info.value) == (
        f"NTS key file {tmp_path / 'keys.json'}: cannot create it (Permission denied)"
    )


def count_ratchets(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Count ``ratchet`` calls; fail past ``limit`` (an unbounded catch-up would take
    minutes of CPU on the event loop)."""
    calls = [0]
    real = cookie.ratchet

    def counted(key: bytes, epoch: int) -> bytes:
        calls[0] += 1
        if calls[0] > limit:
            raise AssertionError(f"more than {limit} ratchet steps")
        return real(key, epoch)

    monkeypatch.setattr(cookie, "ratchet", counted)
    return calls


def test_a_stale_key_file_is_jumped_not_ratcheted_for_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now_s = 1_800_000_000.0  # epoch 30,000,000 at 60 s: 30 million ratchet steps from 0
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({**GOOD, "epoch": 0}))
    calls = count_ratchets(monkeypatch, cookie._RATCHET_MAX + 2)
    with caplog.at_level(logging.WARNING, logger="tsyncd.nts.cookie"):
        keys = load_keyset(path, 60, now_s)
    assert keys.current_epoch == 30_000_000
    assert f"NTS key file {path} was 30000000 key rotations old" in caplog.text
    # Rewritten at once: servers loading it from now on take the keys this one uses.
    assert load_keyset(path, 60, now_s).oldest == keys.oldest
    path.write_text(json.dumps({**GOOD, "epoch": 0}))  # the old file again, as distributed
    # Deterministic: a fleet member loading the same file later in the same stretch of
    # _RATCHET_MAX epochs derives the same keys (it jumps to the same anchor).
    calls[0] = 0
    later = load_keyset(path, 60, now_s + 3600)
    keys.advance(now_s + 3600)
    assert later.current_epoch == keys.current_epoch == 30_000_060
    assert later.open(keys.seal(SESSION)) == SESSION and keys.open(later.seal(SESSION)) == SESSION
    assert later.oldest == keys.oldest
    # A file within _RATCHET_MAX epochs is ratcheted: it agrees with a member that ratcheted
    # all along (a server restarted after a while, the usual case).
    along = KeySet(29_990_000, b"a" * 32, 60)
    path.write_text(json.dumps({**GOOD, "epoch": 29_990_000, "key": (b"a" * 32).hex()}))
    calls[0] = 0
    restarted = load_keyset(path, 60, now_s)
    assert calls[0] == 10_001  # one step per epoch, plus the next epoch's key
    for step in range(0, 10_001, 1000):
        along.advance((29_990_000 + step) * 60)
    along.advance(now_s)
    assert restarted.oldest == along.oldest
    # The housekeeping tick after a big clock step is bounded the same way.
    calls[0] = 0
    assert along.advance(now_s * 2) and along.current_epoch == 60_000_000


def test_worker_rebuild_after_a_jump_matches() -> None:
    from tsyncd.servers.ntskeys import key_state

    keys = KeySet(0, b"z" * 32, 60)
    keys.advance(1_800_000_000)
    rebuilt = key_state(keys).keyset()
    assert rebuilt.current_epoch == keys.current_epoch
    assert rebuilt.open(keys.seal(SESSION)) == SESSION


def test_a_key_file_from_the_future_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QA s17 hunt-life F4: a file written by a server whose clock was 100 days ahead is still
    loaded (the fleet shares it), but it says its key will not rotate for 100 days; one epoch
    ahead (a fleet member's clock a little fast) is normal and says nothing."""
    path = tmp_path / "keys.json"
    load_keyset(path, DAY, 150 * DAY)  # written at day 150
    with caplog.at_level(logging.WARNING, logger="tsyncd.nts.cookie"):
        keys = load_keyset(path, DAY, 50 * DAY)  # read at day 50
    assert keys.current_epoch == 150
    assert "100 key rotations (100.0 days) ahead of this clock" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tsyncd.nts.cookie"):
        load_keyset(path, DAY, 149 * DAY)
    assert caplog.text == ""


def test_a_key_file_others_may_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QA s18 hunt-nts-server F7: a hand-distributed 0644 copy was used silently."""
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"epoch": 1, "rotation-interval": 60, "key": "cd" * 32}))
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        load_keyset(path, 60, 120)
    assert "may be read by other users" not in caplog.text
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_keyset(path, 60, 120)
    assert f"NTS key file {path} may be read by other users (mode 0644)" in caplog.text
