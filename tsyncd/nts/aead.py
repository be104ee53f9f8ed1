"""The two NTS AEADs (RFC 8915 §5.1): AEAD_AES_SIV_CMAC_256 (15) and AEAD_AES_128_GCM_SIV (30).

Both come from ``cryptography`` (>= 45.0.1 in the venv).  Older builds lack AES-GCM-SIV (before
42) and, like Debian 12's python3-cryptography 38, refuse the empty plaintext every NTS client
request authenticates: there, AEAD 30 is simply not offered (``AEADS`` lacks it) and AES-SIV
goes through ``siv_compat.SivCompat``, so the .deb speaks NTS with chrony (which uses 15).

The two differ in API shape, which is why they sit behind one small class: AES-SIV (RFC 5297)
takes the nonce as the *last* associated-data component and prepends its 16-byte tag, while
AES-GCM-SIV (RFC 8452) takes a 12-byte nonce separately and appends the tag.  Keyed cipher
objects (``Aead.cipher``) can be kept by callers: the server caches them per client session
(tsyncd/nts/server.py), since keying AES-SIV costs about as much as two small seals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from tsyncd.nts.siv_compat import SivCompat, library_seals_empty
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntske import AeadId

__all__ = [
    "AEADS",
    "SIV_TYPES",
    "TAG_LEN",
    "Aead",
    "AuthenticationFailed",
    "Bytes",
    "Cipher",
    "SivCipher",
    "aead_for",
    "aead_name",
    "siv_cipher",
]

try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
except ImportError:  # cryptography < 42 (Debian 12): no AEAD 30
    AESGCMSIV = None  # type: ignore[assignment,misc]

TAG_LEN: Final = 16
_SIV: Final = AESSIV if library_seals_empty() else SivCompat
SIV_TYPES: Final = (AESSIV, SivCompat)
"""``isinstance(cipher, SIV_TYPES)``: the AES-SIV call shape (nonce last in the AD list)."""


class AuthenticationFailed(WireError):
    """The AEAD tag did not verify: forged, corrupted or keyed with something else."""

    reason = "auth_failed"


SivCipher = AESSIV | SivCompat
"""A keyed AES-SIV (AEAD 15, and the cookie master key): ``AESSIV``'s interface."""

Cipher = SivCipher | AESGCMSIV
"""A keyed cipher object: keying AES costs more than sealing a small packet, so keep them."""

Bytes = bytes | bytearray | memoryview
"""Anything ``cryptography`` reads as bytes: the server passes slices of the datagram."""


@dataclass(frozen=True, slots=True)
class Aead:
    """One AEAD algorithm: sizes and seal/open with a raw key or a keyed ``Cipher``."""

    aead_id: int
    key_len: int  # bytes
    nonce_len: int  # bytes we generate (and GCM-SIV's only accepted length)

    def cipher(self, key: bytes) -> Cipher:
        """A cipher object keyed with ``key``, for ``seal_with``/``open_with``."""
        if self.aead_id == AeadId.AES_SIV_CMAC_256:
            return siv_cipher(key)
        return AESGCMSIV(key)

    def seal(self, key: bytes, nonce: Bytes, plaintext: Bytes, ad: Bytes) -> bytes:
        """Ciphertext (tag included) of ``plaintext`` authenticated with ``ad``."""
        return self.seal_with(self.cipher(key), nonce, plaintext, ad)

    def seal_with(self, cipher: Cipher, nonce: Bytes, plaintext: Bytes, ad: Bytes) -> bytes:
        """``seal`` with a cipher from ``self.cipher``."""
        if isinstance(cipher, SIV_TYPES):
            return cipher.encrypt(plaintext, [ad, nonce] if ad else [nonce])
        return cipher.encrypt(nonce, plaintext, ad or None)

    def open(self, key: bytes, nonce: Bytes, ciphertext: Bytes, ad: Bytes) -> bytes:
        """Plaintext, or ``AuthenticationFailed``."""
        if len(ciphertext) < TAG_LEN:  # checked before keying AES: cheap rejects stay cheap
            raise AuthenticationFailed(f"ciphertext of {len(ciphertext)} bytes has no tag")
        return self.open_with(self.cipher(key), nonce, ciphertext, ad)

    def open_with(self, cipher: Cipher, nonce: Bytes, ciphertext: Bytes, ad: Bytes) -> bytes:
        """``open`` with a cipher from ``self.cipher``."""
        if len(ciphertext) < TAG_LEN:
            raise AuthenticationFailed(f"ciphertext of {len(ciphertext)} bytes has no tag")
        try:
            if isinstance(cipher, SIV_TYPES):
                if not nonce:
                    raise AuthenticationFailed("empty nonce")
                return cipher.decrypt(ciphertext, [ad, nonce] if ad else [nonce])
            if len(nonce) != self.nonce_len:
                raise AuthenticationFailed(f"GCM-SIV nonce of {len(nonce)} bytes, needs 12")
            return cipher.decrypt(nonce, ciphertext, ad or None)
        except InvalidTag:
            raise AuthenticationFailed("AEAD tag mismatch") from None

    @property
    def min_padded_nonce(self) -> int:
        """N_REQ of §5.6: the client must pad its nonce area to at least this many bytes."""
        n = min(16, self.nonce_len if self.aead_id == AeadId.AES_128_GCM_SIV else 16)
        return n + (-n & 3)


AEADS: Final[dict[int, Aead]] = {
    AeadId.AES_SIV_CMAC_256: Aead(AeadId.AES_SIV_CMAC_256, 32, 16),
}
if AESGCMSIV is not None:
    AEADS[AeadId.AES_128_GCM_SIV] = Aead(AeadId.AES_128_GCM_SIV, 16, 12)


def siv_cipher(key: bytes) -> SivCipher:
    """AES-SIV keyed with ``key`` (32 or 64 bytes), from this ``cryptography`` or the compat."""
    return _SIV(key)


_NAMES: Final = {  # the IANA AEAD registry's names that NTS peers use (spec summary §4)
    15: "AES-SIV-CMAC-256",
    16: "AES-SIV-CMAC-384",
    17: "AES-SIV-CMAC-512",
    30: "AES-128-GCM-SIV",
    31: "AES-256-GCM-SIV",
}


def aead_name(aead_id: int) -> str:
    """What the operator reads for IANA AEAD id ``aead_id``: "AES-SIV-CMAC-256", "AEAD 2"."""
    return _NAMES.get(aead_id, f"AEAD {aead_id}")


def aead_for(aead_id: int) -> Aead | None:
    """The AEAD with IANA id ``aead_id``, if we implement it."""
    return AEADS.get(aead_id)
