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
"""

from __future__ import annotations

import json
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


class BadCookie(WireError):
    """A cookie we cannot open: unknown key id, forged, or from another server."""

    reason = "bad_cookie"


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


class KeySet:
    """Cookie master keys for the epochs still accepted; ``advance`` moves with time."""

    def __init__(self, base_epoch: int, base_key: bytes, rotation_s: int) -> None:
        if len(base_key) != _MASTER.key_len:
            raise ValueError(f"master key must be {_MASTER.key_len} bytes, got {len(base_key)}")
        self.rotation_s = rotation_s
        self._keys: dict[int, bytes] = {base_epoch: base_key}
        # Cipher objects per key id: the per-packet path should not re-key AES for every cookie.
        self._ciphers: dict[int, SivCipher] = {base_epoch & 0xFFFF_FFFF: siv_cipher(base_key)}
        self.current_epoch = base_epoch
        self._sealer = self._current()

    def epoch_at(self, now_s: float) -> int:
        """The epoch wall-clock time ``now_s`` (Unix s) falls in."""
        return int(now_s // self.rotation_s)

    def advance(self, now_s: float) -> bool:
        """Derive keys up to the epoch of ``now_s``, forget expired ones; True if rotated."""
        target = self.epoch_at(now_s)
        if target <= self.current_epoch:
            return False
        while self.current_epoch < target:
            key = self._keys[self.current_epoch]
            self.current_epoch += 1
            self._keys[self.current_epoch] = new = ratchet(key, self.current_epoch - 1)
            self._ciphers[self.current_epoch & 0xFFFF_FFFF] = siv_cipher(new)
            for old in [e for e in self._keys if e <= self.current_epoch - _KEEP_EPOCHS]:
                del self._keys[old]
                del self._ciphers[old & 0xFFFF_FFFF]
        self._sealer = self._current()
        return True

    def _current(self) -> tuple[bytes, SivCipher]:
        """(packed key id, cipher) of the current epoch: what new cookies are sealed with."""
        key_id = self.current_epoch & 0xFFFF_FFFF
        return _KEY_ID.pack(key_id), self._ciphers[key_id]

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


def load_keyset(path: Path, rotation_s: int, now_s: float) -> KeySet:
    """Read the key file and ratchet to now; ``OSError``/``ValueError`` if unusable.

    An absent file is created with a fresh random key (mode 0600).
    """
    try:
        raw = path.read_text()
    except FileNotFoundError:
        keys = new_keyset(now_s, rotation_s)
        save_keyset(path, keys)
        return keys
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("rotation-interval") != rotation_s:
        raise ValueError(
            f"{path}: key file made for rotation interval {data.get('rotation-interval')!r} "
            f"s, configured {rotation_s} s"
        )
    keys = KeySet(int(data["epoch"]), bytes.fromhex(str(data["key"])), rotation_s)
    keys.advance(now_s)
    return keys


def save_keyset(path: Path, keys: KeySet) -> None:
    """Write the oldest accepted key atomically (temp file in the same directory + rename)."""
    epoch, key = keys.oldest
    text = json.dumps({"epoch": epoch, "rotation-interval": keys.rotation_s, "key": key.hex()})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (text + "\n").encode("ascii"))
