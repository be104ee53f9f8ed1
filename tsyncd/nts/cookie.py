"""NTS cookies and the server's rotating cookie master keys (RFC 8915 §6).

Theory of operation
-------------------
A server is stateless: each cookie carries the client's session (AEAD id, S2C and C2S keys),
encrypted under a master key only the server (or its fleet) knows.  Our cookie layout::

    key id (u32) | AES-SIV-CMAC-256(master)(nonce (16) | aead u16 | 0 u16 | S2C | C2S)

that is the key id, SIV's 16-byte tag, then the encrypted nonce and session.  AES-SIV is
nonce-misuse resistant, as §6 recommends for the master key.  The session keeps §6's order (S2C
first) and is padded to a multiple of 4 so the cookie is 4-aligned and survives the EF padding
unchanged: 104 bytes with AEAD 15 sessions, 72 with AEAD 30.

Why the random nonce is inside the plaintext: with no associated data, S2V (RFC 5297 §2.4) runs
one CMAC fewer per seal and per open, about 0.25 µs each of the server's per-packet work (one
open and at least one seal per request).  Nothing is weakened: SIV is a deterministic AEAD (RFC
5297 §1.3.1) whose privacy holds as long as no input repeats, and 16 random bytes leading the
plaintext make inputs repeat exactly as rarely as a 16-byte random nonce component would; the
tag authenticates them with the rest.  The layout until this change, ``key id | nonce |
AES-SIV(master, AD = [nonce])(session)`` (the same length), still opens for as long as such
cookies can live (``_KEEP_EPOCHS`` rotations): a failed open retries that way, so an upgraded
server (or fleet member) keeps serving clients without a re-key, while a well-formed cookie
costs one AES-SIV open as before.

Rotation without coordination: time is cut into epochs of ``rotation_s``; the key of epoch
``e + 1`` is HKDF(key of ``e``, salt = e), the ratchet §6 suggests.  Servers that share one
key file (a fleet) derive the same key for the same epoch without talking to each other, and
the key id is the epoch, so a cookie from any of them opens at all of them.  The file keeps
only the oldest key still accepted: the ratchet is one-way, so keys of expired epochs cannot be
recomputed from it (forward secrecy for old cookies).  ``KeySet`` is pure (time passed in);
``load_keyset``/``save_keyset`` are the only file IO, with atomic replace.

Each member rotates on its own housekeeping tick by its own clock, so around a rotation one
member may already hand out cookies of epoch ``e + 1`` while another is still in ``e``.  A key
set therefore also opens cookies under the *next* epoch's key, derived ahead of time; it never
seals with it before its epoch (``advance``).  That costs forward secrecy nothing: RFC 8915 §6
asks that a compromised server not expose cookies made under keys it has erased, and the key
of ``e + 1`` is the ratchet of the key of ``e``, which the server holds anyway, so holding it
early reveals nothing that stealing the key of ``e`` would not.

Several servers starting together without a file would each draw their own key: the file is
created exclusively (``write_atomic(exclusive=True)``) and a server that finds another got
there first takes the key that server wrote.

A file far behind the clock (a hand-made ``"epoch": 0``, a server off for weeks) would take
one HKDF per epoch to catch up, millions of them at a 60 s interval.  ``advance`` ratchets at
most ``_RATCHET_MAX`` epochs; past that it *jumps* (``_jump``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tsyncd.nts.aead import AEADS, Aead, Bytes, SivCipher, siv_cipher
from tsyncd.statefile import write_atomic
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntske import AeadId

__all__ = [
    "COOKIE_NONCE_LEN",
    "COOKIE_OVERHEAD",
    "BadCookie",
    "CookieContents",
    "KeyFileError",
    "KeySet",
    "load_keyset",
    "save_keyset",
]

_MASTER: Final = AEADS[AeadId.AES_SIV_CMAC_256]
_NONCE_LEN: Final = 16
_KEEP_EPOCHS: Final = 3  # the current key and the two before it open cookies
_KEY_ID: Final = struct.Struct("!I")
_AEAD_ID: Final = struct.Struct("!H")
_SESSION_HEAD: Final = struct.Struct("!HH")  # AEAD id, reserved zero
COOKIE_NONCE_LEN: Final = _NONCE_LEN
COOKIE_OVERHEAD: Final = 4 + _NONCE_LEN + 16
"""Cookie bytes besides the session: key id, AES-SIV tag, (encrypted) nonce."""
_INFO: Final = b"tsyncd nts cookie key ratchet"
_JUMP_INFO: Final = b"tsyncd nts cookie key jump"
_U64: Final = (1 << 64) - 1
_RATCHET_MAX: Final = 1 << 15
"""Epochs ``advance`` ratchets one by one (about 3 µs each: 0.1 s at most); past that it jumps
to a multiple of this (``KeySet._jump``).  22 days at the shortest interval (60 s), 3.7 years
at an hour, 90 at a day."""

log = logging.getLogger(__name__)


class BadCookie(WireError):
    """A cookie we cannot open: unknown key id, forged, or from another server."""

    reason = "bad_cookie"


class KeyFileError(ValueError):
    """The key file cannot be used; the message names it and says what is wrong, on one line."""


@dataclass(frozen=True, slots=True)
class CookieContents:
    """What a cookie carries: the session of one NTS client."""

    aead_id: int
    c2s: bytes
    s2c: bytes


def ratchet(key: bytes, epoch: int) -> bytes:
    """The master key of ``epoch + 1`` from the key of ``epoch`` (RFC 8915 §6 ratchet)."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_MASTER.key_len,
        salt=struct.pack("!I", epoch & 0xFFFF_FFFF),
        info=_INFO,
    )
    return hkdf.derive(key)


def jump(key: bytes, epoch: int, target: int) -> bytes:
    """The master key of ``target`` when the ratchet from ``epoch`` would be too long
    (``KeySet._jump``); a different HKDF label, so it is never a ratchet step's key."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_MASTER.key_len,
        salt=struct.pack("!QQ", epoch & _U64, target & _U64),
        info=_JUMP_INFO,
    )
    return hkdf.derive(key)


class KeySet:
    """Cookie master keys for the epochs still accepted; ``advance`` moves with time.

    Cookies open under the current key, the ``_KEEP_EPOCHS - 1`` before it, and the next one
    (a fleet member whose tick came first may already seal with it: module docstring); new
    cookies are sealed with the current key only."""

    def __init__(self, base_epoch: int, base_key: bytes, rotation_s: int) -> None:
        if len(base_key) != _MASTER.key_len:
            raise ValueError(f"master key must be {_MASTER.key_len} bytes, got {len(base_key)}")
        self.rotation_s = rotation_s
        # The key file as ``load_keyset`` read it (or wrote it): what the file holds for these
        # keys, so a server can tell later whether someone else has changed it since.
        self.file_bytes: bytes | None = None
        self._keys: dict[int, bytes] = {}
        # Cipher objects per key id: the per-packet path should not re-key AES for every cookie.
        self._ciphers: dict[int, SivCipher] = {}
        self._start(base_epoch, base_key)

    def _start(self, epoch: int, key: bytes) -> None:
        """Hold ``key`` of ``epoch`` (as the current one) and the next epoch's, nothing else."""
        self._keys.clear()
        self._ciphers.clear()
        self._add(epoch, key)
        self.current_epoch = epoch
        self._add(epoch + 1, ratchet(key, epoch))
        self._sealer = self._current()

    def _add(self, epoch: int, key: bytes) -> None:
        self._keys[epoch] = key
        self._ciphers[epoch & 0xFFFF_FFFF] = siv_cipher(key)

    def epoch_at(self, now_s: float) -> int:
        """The epoch wall-clock time ``now_s`` (Unix s) falls in."""
        return int(now_s // self.rotation_s)

    def advance(self, now_s: float) -> bool:
        """Derive keys up to the epoch of ``now_s`` (and the one after), forget expired ones;
        True if rotated.  More than ``_RATCHET_MAX`` epochs ahead, jump first (``_jump``)."""
        target = self.epoch_at(now_s)
        if target <= self.current_epoch:
            return False
        if target - self.current_epoch > _RATCHET_MAX:
            self._jump(target)
        keys = self._keys
        while self.current_epoch < target:
            self.current_epoch = current = self.current_epoch + 1
            self._add(current + 1, ratchet(keys[current], current))  # next epoch's, ahead
            for old in [e for e in keys if e <= current - _KEEP_EPOCHS]:
                del keys[old]
                del self._ciphers[old & 0xFFFF_FFFF]
        self._sealer = self._current()
        return True

    def _jump(self, target: int) -> None:
        """Replace the keys by the key of ``anchor``, the last multiple of ``_RATCHET_MAX`` not
        after ``target``, derived in one step from the current key (``jump``).

        Why this and not the ratchet, or a fresh random key: a gap this long means no cookie of
        the old keys can open any more, and running the ratchet across it could block start-up
        for minutes.  A random key would be different at every fleet member; the jump depends
        only on the current (epoch, key) and the anchor, so members that load the same file
        within one stretch of ``_RATCHET_MAX`` epochs (22 days at 60 s, 90 years at a day)
        still derive the same keys, whenever each starts (then at most ``_RATCHET_MAX``
        ratchet steps to ``target``).  What the jump cannot match is a member that kept
        ratcheting from that file all along: its file is not stale.  Forward secrecy holds, as
        the jump is one-way too and the old key is forgotten.
        """
        anchor = target - target % _RATCHET_MAX
        epoch, key = self.current_epoch, self._keys[self.current_epoch]
        self._start(anchor, jump(key, epoch, anchor))

    def _current(self) -> tuple[bytes, SivCipher]:
        """(packed key id, cipher) of the current epoch: what new cookies are sealed with."""
        key_id = self.current_epoch & 0xFFFF_FFFF
        return _KEY_ID.pack(key_id), self._ciphers[key_id]

    @property
    def key_id(self) -> str:
        """A short fingerprint of the current key (SHA-256, first 8 hex digits): fleet members
        serving the same keys show the same one; it tells nothing about the key."""
        return hashlib.sha256(self._keys[self.current_epoch]).hexdigest()[:8]

    @property
    def oldest(self) -> tuple[int, bytes]:
        """(epoch, key) of the oldest key still accepted: what the key file stores."""
        epoch = min(self._keys)
        return epoch, self._keys[epoch]

    def seal(self, contents: CookieContents) -> bytes:
        """A fresh cookie for ``contents`` under the current key."""
        plaintext = _SESSION_HEAD.pack(contents.aead_id, 0) + contents.s2c + contents.c2s
        return self.seal_session(plaintext, secrets.token_bytes(_NONCE_LEN))

    def seal_session(self, session: bytes, nonce: bytes) -> bytes:
        """A cookie for ``session`` (the plaintext ``open_session`` gives) with a fresh
        ``nonce`` of ``COOKIE_NONCE_LEN`` random bytes."""
        key_id, cipher = self._sealer
        return key_id + cipher.encrypt(nonce + session, None)

    def seal_efs(self, head: bytes, session: bytes, nonces: bytes, start: int, end: int) -> bytes:
        """Cookie EFs for ``session``, each ``head`` (the EF header) then a cookie, one per
        ``COOKIE_NONCE_LEN`` random bytes of ``nonces[start:end]``.  The server's per-packet
        path re-seals the session it just opened, so it never re-packs the keys."""
        key_id, cipher = self._sealer
        encrypt = cipher.encrypt
        if end - start == _NONCE_LEN:  # the usual request: one cookie back
            return b"".join((head, key_id, encrypt(nonces[start:end] + session, None)))
        parts: list[bytes] = []
        for i in range(start, end, _NONCE_LEN):
            parts += (head, key_id, encrypt(nonces[i : i + _NONCE_LEN] + session, None))
        return b"".join(parts)

    def open(self, cookie: Bytes) -> CookieContents:
        """The session inside ``cookie``, or ``BadCookie``."""
        aead_id, plaintext = self.open_session(cookie)
        key_len = AEADS[aead_id].key_len
        s2c = plaintext[4 : 4 + key_len]
        c2s = plaintext[4 + key_len :]
        return CookieContents(aead_id=aead_id, c2s=c2s, s2c=s2c)

    def open_session(self, cookie: Bytes) -> tuple[int, bytes]:
        """(AEAD id, session plaintext ``aead u16 | 0 u16 | S2C | C2S``), or ``BadCookie``."""
        plaintext = self.open_plaintext(cookie)
        return self.session_aead(plaintext).aead_id, plaintext

    def open_plaintext(self, data: Bytes, start: int = 0, end: int | None = None) -> bytes:
        """The plaintext inside the cookie ``data[start:end]``, or ``BadCookie``; not yet
        checked to be a session (``session_aead`` does that: the server checks only sessions
        it has not cached).  The server passes the datagram and the cookie's place in it, so
        the cookie is sliced once."""
        if end is None:
            end = len(data)
        if end - start < COOKIE_OVERHEAD + 4:
            raise BadCookie(f"cookie of {end - start} bytes is too short")
        (key_id,) = _KEY_ID.unpack_from(data, start)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise BadCookie(f"cookie key id {key_id} is not one of ours")
        try:
            return cipher.decrypt(data[start + 4 : end], None)[_NONCE_LEN:]
        except InvalidTag:
            pass
        start += 4
        try:  # the layout before the nonce moved inside (module docstring)
            nonce = data[start : start + _NONCE_LEN]
            return cipher.decrypt(data[start + _NONCE_LEN : end], [nonce])
        except InvalidTag:
            raise BadCookie(f"cookie under key id {key_id} does not decrypt") from None

    @staticmethod
    def session_aead(plaintext: bytes) -> Aead:
        """The AEAD of the session ``plaintext`` opened from a cookie, or ``BadCookie`` if it
        is not ``aead u16 | 0 u16 | S2C | C2S`` with keys of that AEAD's length."""
        (aead_id,) = _AEAD_ID.unpack_from(plaintext)
        aead = AEADS.get(aead_id)
        if aead is None or len(plaintext) != 4 + 2 * aead.key_len:
            raise BadCookie(f"cookie holds AEAD {aead_id} with {len(plaintext)} plaintext bytes")
        return aead


def new_keyset(now_s: float, rotation_s: int) -> KeySet:
    """A random key for the epoch of ``now_s``."""
    return KeySet(int(now_s // rotation_s), secrets.token_bytes(_MASTER.key_len), rotation_s)


_SHAPE: Final = '{"epoch": N, "rotation-interval": SECONDS, "key": "64 hex digits"}'
_KEY_HEX: Final = f"{2 * _MASTER.key_len} hex digits (the {_MASTER.key_len}-byte master key)"


def load_keyset(path: Path, rotation_s: int, now_s: float, *, create: bool = True) -> KeySet:
    """Read the key file and ratchet to now; ``KeyFileError`` (one line, naming the file) if
    it is unusable.

    An absent file is created with a fresh random key (mode 0600), exclusively: if another
    server (a fleet member starting too) creates it meanwhile, its key is read and used.
    Without ``create`` (``tsyncctl rekey``), an absent file is an error: a fleet member must
    not draw a key of its own because the distributed file is missing for a moment.
    """
    for _ in range(3):  # the file may vanish again between the race and the read
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise KeyFileError(f"NTS key file {path} does not exist") from None
            keys = new_keyset(now_s, rotation_s)
            try:
                save_keyset(path, keys, exclusive=True)
                keys.file_bytes = keyset_file_bytes(keys)
            except FileExistsError:
                log.info("NTS key file %s was just created by another server: using its key", path)
                continue
            except OSError as exc:
                raise KeyFileError(f"NTS key file {path}: cannot create it ({_why(exc)})") from exc
            return keys
        except OSError as exc:
            raise KeyFileError(f"NTS key file {path}: cannot read it ({_why(exc)})") from exc
        epoch, key = _parse_key_file(path, raw, rotation_s)
        _warn_if_readable(path)
        keys = KeySet(epoch, key, rotation_s)
        keys.file_bytes = raw
        behind = keys.epoch_at(now_s) - epoch
        keys.advance(now_s)
        if behind > _RATCHET_MAX:
            _jumped(path, keys, behind)
        elif behind < -1:  # the next epoch is a fleet member's clock a little ahead: fine
            _ahead(path, -behind, rotation_s)
        return keys
    raise KeyFileError(f"NTS key file {path} keeps appearing and disappearing; try again")


def check_key_file(path: Path, rotation_s: int) -> str | None:
    """What is wrong with the key file at ``path`` for ``tsyncd --check`` (None: fine, or
    absent, which the first start creates): what ``load_keyset`` would refuse at start."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"NTS key file {path}: cannot read it ({_why(exc)})"
    try:
        _parse_key_file(path, raw, rotation_s)
    except KeyFileError as exc:
        return str(exc)
    return None


def _warn_if_readable(path: Path) -> None:
    """The file holds the master key that opens every client's cookie: say so if others may
    read it (we write it 0600; a copy distributed by hand may not be)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "NTS key file %s may be read by other users (mode %04o): it holds the key that "
            "opens every client's cookies (chmod 600 %s)",
            path,
            mode & 0o7777,
            path,
        )


def _ahead(path: Path, ahead: int, rotation_s: int) -> None:
    """Say that the key file ``path`` is ``ahead`` rotations in the future (written by a server
    whose clock was wrong, a bad RTC at first boot): the ratchet only runs forward, so its key
    stays the current one, unrotated, until our clock reaches its epoch."""
    log.warning(
        "NTS key file %s is %d key rotations (%.1f days) ahead of this clock: its key will not"
        " rotate until then, which forfeits the forward secrecy rotation gives; if the clock"
        " that wrote it was wrong, remove the file and restart (a new key is made; every fleet"
        " member must then load the new file)",
        path,
        ahead,
        ahead * rotation_s / 86400,
    )


def _jumped(path: Path, keys: KeySet, behind: int) -> None:
    """Say that the key file ``path``, ``behind`` rotations old, was jumped (``KeySet._jump``),
    and replace it at once, so servers loading it from now on take the keys we use."""
    log.warning(
        "NTS key file %s was %d key rotations old: none of its keys opened a cookie any more,"
        " so the current key was derived from it in one jump, not %d ratchet steps (fleet"
        " members loading the old file within the same %d rotations derive the same keys; to be"
        " sure, give them the file as this server rewrites it)",
        path,
        behind,
        behind,
        _RATCHET_MAX,
    )
    try:
        save_keyset(path, keys)
        keys.file_bytes = keyset_file_bytes(keys)
    except OSError as exc:
        log.warning("cannot rewrite the NTS key file %s: %s", path, _why(exc))


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _parse_key_file(path: Path, raw: bytes, rotation_s: int) -> tuple[int, bytes]:
    """(epoch, key) from the key file's bytes; ``KeyFileError`` saying what is wrong."""

    def bad(what: str) -> KeyFileError:
        return KeyFileError(f"NTS key file {path}: {what}")

    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc.msg} at byte {exc.pos}); expected {_SHAPE}") from None
    except (ValueError, RecursionError):  # not UTF-8 (UnicodeDecodeError), nested too deep
        raise bad(f"not JSON; expected {_SHAPE}") from None
    if not isinstance(data, dict):
        raise bad(f"expected a JSON object {_SHAPE}, not {_shown(data)}")
    for field in ("epoch", "rotation-interval", "key"):
        if field not in data:
            raise bad(f'"{field}" is missing; expected {_SHAPE}')
    epoch, interval, key_hex = data["epoch"], data["rotation-interval"], data["key"]
    if not _is_int(epoch) or epoch < 0:
        raise bad(
            f'"epoch" is {_shown(epoch)}: expected an integer >= 0 (Unix time // rotation-interval)'
        )
    if not _is_int(interval) or interval <= 0:
        raise bad(f'"rotation-interval" is {_shown(interval)}: expected a whole number of seconds')
    if interval != rotation_s:
        raise bad(
            f'"rotation-interval" is {interval} s but [keyset] key-rotation-interval is '
            f"{rotation_s} s: the file was made for another interval (set "
            f"key-rotation-interval = {interval} again, or remove the file for a new key: every "
            "client then runs NTS-KE again)"
        )
    if not isinstance(key_hex, str):
        raise bad(f'"key" is {_shown(key_hex)}: expected a string of {_KEY_HEX}')
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise bad(f'"key" is not hexadecimal: expected {_KEY_HEX}') from None
    if len(key) != _MASTER.key_len:
        raise bad(f'"key" has {2 * len(key)} hex digits: expected {_KEY_HEX}')
    return epoch, key


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """``value`` as JSON, cut short: what the file holds where a field was expected."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def keyset_file_bytes(keys: KeySet) -> bytes:
    """What the key file holds for ``keys``: the oldest accepted key, its epoch, the interval
    (the same bytes at every fleet member that ratcheted the same file to the same epoch)."""
    epoch, key = keys.oldest
    text = json.dumps({"epoch": epoch, "rotation-interval": keys.rotation_s, "key": key.hex()})
    return (text + "\n").encode("ascii")


def save_keyset(path: Path, keys: KeySet, *, exclusive: bool = False) -> None:
    """Write the oldest accepted key atomically (temp file in the same directory + rename);
    with ``exclusive``, only if there is no file yet (``FileExistsError``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, keyset_file_bytes(keys), exclusive=exclusive)
