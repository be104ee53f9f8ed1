"""AES-SIV (RFC 5297) with an empty plaintext, for ``cryptography`` builds that refuse it.

Why: every NTS client request authenticates an empty plaintext (RFC 8915 §5.6), and the server
opens it.  Debian 12's python3-cryptography (38, on the system OpenSSL 3.0) raises an internal
error for an empty AES-SIV plaintext, so tsyncd installed from the .deb could not speak NTS.
With an empty plaintext SIV needs no encryption at all: the ciphertext is the synthetic IV
``V = S2V(K1, AD1, ..., ADn, "")`` alone (RFC 5297 §2.6, the CTR part of nothing is nothing),
and S2V is AES-CMAC, which every ``cryptography`` version has.  So ``SivCompat`` computes S2V
for that one case and hands every other call to the library's ``AESSIV``.  Where the library
handles empty plaintexts itself (the wheels tsyncd's venv installs), ``AESSIV`` is used
directly and this module is idle; its tests check it against that library.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.cmac import CMAC

__all__ = ["SivCompat", "library_seals_empty", "s2v_empty"]

_Data = bytes | bytearray | memoryview  # what the server passes: slices of the datagram
_BLOCK: Final = 16
_MASK128: Final = (1 << 128) - 1
_PAD_EMPTY: Final = b"\x80" + bytes(15)  # pad(""): 10* padding of RFC 5297 §2.1


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _dbl(block: bytes) -> bytes:
    """RFC 5297 §2.3: multiplication by x in GF(2^128)."""
    n = int.from_bytes(block, "big") << 1
    if n >> 128:
        n = (n & _MASK128) ^ 0x87
    return n.to_bytes(_BLOCK, "big")


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(_BLOCK, "big")


def s2v_empty(k1: bytes, associated: Sequence[_Data]) -> bytes:
    """S2V(K1, AD1, ..., ADn, "") of RFC 5297 §2.4: the whole SIV ciphertext of an empty
    plaintext (the nonce is the last associated-data component, as NTS passes it)."""
    d = _cmac(k1, bytes(_BLOCK))
    for component in associated:
        d = _xor(_dbl(d), _cmac(k1, bytes(component)))
    return _cmac(k1, _xor(_dbl(d), _PAD_EMPTY))  # the last string "" is shorter than a block


class SivCompat:
    """``AESSIV``'s interface, with empty plaintexts done here (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        self._siv = AESSIV(key)
        self._k1 = bytes(key[: len(key) // 2])  # RFC 5297 §2.6: the left half keys S2V

    # Old builds also take only bytes, where the server passes memoryview slices.

    def encrypt(self, data: _Data, associated_data: list[_Data] | None) -> bytes:
        ads = [bytes(a) for a in associated_data or ()]
        if data:
            return self._siv.encrypt(bytes(data), ads)
        return s2v_empty(self._k1, ads)

    def decrypt(self, data: _Data, associated_data: list[_Data] | None) -> bytes:
        ads = [bytes(a) for a in associated_data or ()]
        if len(data) != _BLOCK:
            return self._siv.decrypt(bytes(data), ads)
        expected = s2v_empty(self._k1, ads)
        if not hmac.compare_digest(expected, bytes(data)):
            raise InvalidTag
        return b""


def library_seals_empty() -> bool:
    """Whether this ``cryptography`` seals and opens an empty AES-SIV plaintext itself."""
    try:
        siv = AESSIV(bytes(32))
        return siv.decrypt(siv.encrypt(b"", [b"n"]), [b"n"]) == b""
    except Exception:  # 38 raises InternalError, others ValueError
        return False
