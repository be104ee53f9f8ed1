"""NTS extension fields for NTPv4 (RFC 8915 §5.3-5.6): framing only, no cryptography.

Theory of operation
-------------------
``decode_ntp`` already splits a packet into RFC 7822 extension fields (EFs).  This module
gives the four NTS fields meaning and finds the byte ranges the AEAD needs:

* Unique Identifier (0x0104): >= 32 random bytes, echoed by the server;
* NTS Cookie (0x0204) and Cookie Placeholder (0x0304, zeros, same body length);
* Authenticator and Encrypted EFs (0x0404): ``nonce len | ciphertext len | nonce (padded) |
  ciphertext (padded) | additional padding``.

The associated data of the Authenticator is every byte from the start of the NTP header to the
end of the EF before it (§5.6), so ``split_nts`` returns that prefix as bytes, not a re-encoding.
EFs after the Authenticator are unauthenticated: chrony rejects such packets and so do we.
EFs inside the ciphertext use RFC 7822 framing but may be shorter than 16 bytes (§5.6), so they
have their own codec here (``encode_inner`` / ``decode_inner``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from tsyncd.wire.errors import BadExtension, WireError
from tsyncd.wire.ntp import EF_HEADER_LEN, HEADER_LEN, ExtensionField, NtpPacket

__all__ = [
    "AUTHENTICATOR",
    "COOKIE",
    "COOKIE_PLACEHOLDER",
    "UNIQUE_ID",
    "UNIQUE_ID_MIN_LEN",
    "NtsFields",
    "decode_authenticator",
    "decode_inner",
    "encode_authenticator",
    "encode_ef",
    "encode_inner",
    "split_nts",
]

UNIQUE_ID: Final = 0x0104
COOKIE: Final = 0x0204
COOKIE_PLACEHOLDER: Final = 0x0304
AUTHENTICATOR: Final = 0x0404

UNIQUE_ID_MIN_LEN: Final = 32
"""Bytes of randomness a Unique Identifier carries at least (§5.3)."""

_HEAD: Final = struct.Struct("!HH")


class BadNts(WireError):
    """NTS extension fields are missing, repeated, misplaced or malformed."""

    reason = "bad_nts"


def _pad4(n: int) -> int:
    return n + (-n & 3)


def encode_ef(field_type: int, body: bytes) -> bytes:
    """One EF with header and zero padding to 4 bytes (no minimum: callers size NTS fields)."""
    length = EF_HEADER_LEN + _pad4(len(body))
    return _HEAD.pack(field_type, length) + body + bytes(length - EF_HEADER_LEN - len(body))


def encode_inner(fields: list[ExtensionField]) -> bytes:
    """EFs to encrypt: RFC 7822 framing, 4-aligned, no 16-byte minimum (§5.6)."""
    return b"".join(encode_ef(f.field_type, f.body) for f in fields)


def decode_inner(data: bytes) -> tuple[ExtensionField, ...]:
    """Parse decrypted plaintext into EFs (bodies keep their padding)."""
    out: list[ExtensionField] = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < EF_HEADER_LEN:
            raise BadNts(f"{n - pos} stray bytes at the end of the encrypted EFs")
        field_type, length = _HEAD.unpack_from(data, pos)
        if length < EF_HEADER_LEN or length & 3 or length > n - pos:
            raise BadNts(f"encrypted EF type 0x{field_type:04x} has bad length {length}")
        out.append(ExtensionField(field_type=field_type, body=bytes(data[pos + 4 : pos + length])))
        pos += length
    return tuple(out)


def encode_authenticator(nonce: bytes, ciphertext: bytes, total_len: int = 0) -> bytes:
    """The whole Authenticator EF; ``total_len`` (if larger) adds zero padding to that size."""
    body = _HEAD.pack(len(nonce), len(ciphertext))
    body += nonce + bytes(-len(nonce) & 3) + ciphertext + bytes(-len(ciphertext) & 3)
    length = EF_HEADER_LEN + len(body)
    if total_len > length:
        body += bytes(_pad4(total_len) - length)
    return encode_ef(AUTHENTICATOR, body)


def decode_authenticator(body: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) from an Authenticator EF body; trailing zero padding is allowed."""
    if len(body) < 4:
        raise BadNts(f"Authenticator body of {len(body)} bytes, needs 4")
    nonce_len, ct_len = _HEAD.unpack_from(body)
    nonce_end = 4 + _pad4(nonce_len)
    ct_end = nonce_end + _pad4(ct_len)
    if ct_end > len(body):
        raise BadNts(
            f"Authenticator claims nonce {nonce_len} + ciphertext {ct_len} bytes "
            f"but its body has {len(body)}"
        )
    return bytes(body[4 : 4 + nonce_len]), bytes(body[nonce_end : nonce_end + ct_len])


@dataclass(frozen=True, slots=True, kw_only=True)
class NtsFields:
    """The NTS parts of one packet, located (§5.7 rules checked by the caller)."""

    unique_id: bytes | None  # body, padding included
    cookie: bytes | None  # body of the (first) Cookie EF, padding included
    cookies: int  # how many Cookie EFs were outside the Authenticator
    placeholders: tuple[int, ...]  # body lengths of the Placeholder EFs
    nonce: bytes | None  # None: no Authenticator
    ciphertext: bytes
    associated_data: bytes  # header .. end of the EF before the Authenticator


def split_nts(data: bytes, packet: NtpPacket) -> NtsFields:
    """Locate the NTS EFs of ``packet`` (decoded from ``data``).

    Raises ``BadNts`` when a field appears twice that may appear once, the Authenticator is
    not the last EF, or its body is malformed.  Other EFs are skipped (and stay in the
    associated data when they come before the Authenticator).
    """
    pos = HEADER_LEN
    unique_id: bytes | None = None
    cookie: bytes | None = None
    cookies = 0
    placeholders: list[int] = []
    nonce: bytes | None = None
    ciphertext = b""
    ad_end = 0
    last = len(packet.extensions) - 1
    for i, ef in enumerate(packet.extensions):
        t = ef.field_type
        if t == UNIQUE_ID:
            if unique_id is not None:
                raise BadNts("two Unique Identifier EFs")
            unique_id = ef.body
        elif t == COOKIE:
            cookies += 1
            if cookie is None:
                cookie = ef.body
        elif t == COOKIE_PLACEHOLDER:
            placeholders.append(len(ef.body))
        elif t == AUTHENTICATOR:
            if i != last:
                raise BadNts(f"Authenticator is EF #{i}, not the last of {last + 1}")
            nonce, ciphertext = decode_authenticator(ef.body)
            ad_end = pos
        pos += EF_HEADER_LEN + len(ef.body)
    if nonce is not None and len(data) < ad_end:
        raise BadExtension("packet shorter than its decoded extension fields")
    return NtsFields(
        unique_id=unique_id,
        cookie=cookie,
        cookies=cookies,
        placeholders=tuple(placeholders),
        nonce=nonce,
        ciphertext=ciphertext,
        associated_data=bytes(data[:ad_end]) if nonce is not None else b"",
    )
