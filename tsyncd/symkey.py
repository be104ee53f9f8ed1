"""Symmetric-key authentication of NTP packets, sans-IO: the legacy MAC (RFC 5905 §7.3, §9.2
test 5) with chrony's key file, so one key file serves chronyd, ntpd and tsyncd alike.

A MAC follows the header (no extension fields here): a 32-bit key ID, then a digest of the
whole packet before it.  Digests, as chrony and ntpd compute them:

* hash types (MD5, SHA1, SHA256, SHA384, SHA512): ``hash(key || packet)``, truncated to 20
  bytes in NTPv4 (RFC 7822 allows a MAC of at most 24 bytes: key ID + 20; chrony truncates the
  same way, NTP_MAX_V4_MAC_LENGTH), so MD5 gives 16 bytes and the SHA family 20.  In NTPv1-3,
  which has no extension fields, the whole digest: chronyd sends its requests as NTPv3 when
  its key's digest is longer than 20 bytes (measured: 84-byte NTPv3 requests with SHA256), and
  a reply has its request's version;
* AES128, AES256: AES-CMAC over the packet (RFC 8573), 16 bytes, the key exactly 16 or 32
  bytes long.  RFC 8573 deprecates MD5 for NTP; it is accepted because old peers still use it.

A crypto-NAK is a MAC of a zero key ID alone (4 zero bytes): ntpd's "I cannot authenticate
you".  A client with a key drops it, as it drops any reply not authenticated with its key: only
the origin test would stand between an unauthenticated reply and the clock.  As a server we
drop requests signed with a key we lack or whose MAC fails, as chronyd does (measured: chronyd
4.3 answers neither), rather than send crypto-NAKs.

The key file (chrony's ``keyfile`` format): one key a line, ``ID [TYPE] VALUE``; ID 1..2^32-1,
TYPE as above (MD5 when left out), VALUE ``HEX:`` then hex digits, ``ASCII:`` then text, or
text; ``#`` starts a comment.  The digests are compared in constant time.

``hashlib`` and ``hmac`` are imported on first use: every server process imports this module,
and a daemon with no keys should not carry them (bench/README.md, "Server memory").
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tsyncd.wire.ntp import CRYPTO_NAK, HEADER_LEN, NtpPacket, mac_lengths

__all__ = [
    "KEY_TYPES",
    "KeyFileError",
    "SymmetricKey",
    "SymmetricKeyAuth",
    "key_line",
    "keygen_bits",
    "load_key_file",
    "parse_key_file",
    "seal",
    "verify",
]

_MAX_V4_DIGEST: Final = 20
_HASHES: Final = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA384": "sha384",
                  "SHA512": "sha512"}  # fmt: skip
_CMAC_KEY_LENGTHS: Final = {"AES128": 16, "AES256": 32}
KEY_TYPES: Final = (*_HASHES, *_CMAC_KEY_LENGTHS)
# Digest bytes after the key ID, whole (NTPv1-3); NTPv4 truncates them to 20.
_DIGEST_LEN: Final = {
    "MD5": 16,
    "SHA1": 20,
    "SHA256": 32,
    "SHA384": 48,
    "SHA512": 64,
    "AES128": 16,
    "AES256": 16,
}
_KEY_ID: Final = struct.Struct("!I")


class KeyFileError(ValueError):
    """Key file lines that are not keys: ``problems`` says which lines and why, one each
    ("line 3: ..."), so that one look at the file finds every bad line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class SymmetricKey:
    """One key of the key file."""

    key_id: int
    kind: str  # one of KEY_TYPES
    secret: bytes = b""

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"SymmetricKey({self.key_id}, {self.kind})"

    def digest_len(self, version: int = 4) -> int:
        """Bytes of digest after the key ID in a MAC of an NTP``version`` packet."""
        whole = _DIGEST_LEN[self.kind]
        return min(whole, _MAX_V4_DIGEST) if version == 4 else whole

    def digest(self, data: bytes) -> bytes:
        """The digest of ``data`` (the packet before the MAC) under this key, whole (the
        caller truncates it for NTPv4: ``digest_len``)."""
        if self.kind in _CMAC_KEY_LENGTHS:
            from cryptography.hazmat.primitives.ciphers.algorithms import AES
            from cryptography.hazmat.primitives.cmac import CMAC

            mac = CMAC(AES(self.secret))
            mac.update(data)
            return mac.finalize()
        import hashlib

        return hashlib.new(_HASHES[self.kind], self.secret + data).digest()


def _version(packet: bytes) -> int:
    return (packet[0] >> 3) & 7


def seal(key: SymmetricKey, packet: bytes) -> bytes:
    """``packet`` (48 bytes, no extension fields) with its MAC under ``key`` appended."""
    digest = key.digest(packet)[: key.digest_len(_version(packet))]
    return packet + _KEY_ID.pack(key.key_id) + digest


def verify(keys: Mapping[int, SymmetricKey], data: bytes) -> tuple[str | None, SymmetricKey | None]:
    """Check the MAC of a header + MAC datagram: (None, key) if it authenticates, else
    (reason, key or None): ``crypto_nak``, ``no_mac``, ``unknown_key``, ``bad_mac``."""
    mac_len = len(data) - HEADER_LEN
    if mac_len == len(CRYPTO_NAK) and data[HEADER_LEN:] == CRYPTO_NAK:
        return "crypto_nak", None
    version = _version(data)
    if mac_len not in mac_lengths(version):
        return "no_mac", None
    (key_id,) = _KEY_ID.unpack_from(data, HEADER_LEN)
    key = keys.get(key_id)
    if key is None:
        return "unknown_key", None
    import hmac

    length = key.digest_len(version)
    if mac_len != 4 + length or not hmac.compare_digest(
        data[HEADER_LEN + 4 :], key.digest(data[:HEADER_LEN])[:length]
    ):
        return "bad_mac", key
    return None, key


class SymmetricKeyAuth:
    """A source's requests signed with its key, and only replies signed with it accepted
    (the association's ``auth`` hook, as NTS's session is)."""

    def __init__(self, key: SymmetricKey) -> None:
        self.key = key
        self._keys = {key.key_id: key}

    def protect(self, request: bytes) -> bytes | None:
        return seal(self.key, request)

    def verify(self, data: bytes, packet: NtpPacket) -> str | None:
        reason, _key = verify(self._keys, data)
        return reason


def key_line(key: SymmetricKey) -> str:
    """``key`` as a key file line (``tsyncctl keygen``, chronyc keygen's format)."""
    return f"{key.key_id} {key.kind} HEX:{key.secret.hex().upper()}"


def keygen_bits(kind: str, bits: int | None) -> int:
    """The key length for ``tsyncctl keygen``: AES keys have theirs; a hash key 160 bits by
    default, as chronyc's, 80..4096 in whole bytes; ValueError otherwise."""
    if kind not in KEY_TYPES:
        raise ValueError(f"key type {kind!r} is not one of {', '.join(KEY_TYPES)}")
    fixed = _CMAC_KEY_LENGTHS.get(kind)
    if fixed is not None:
        if bits not in (None, fixed * 8):
            raise ValueError(f"an {kind} key is {fixed * 8} bits")
        return fixed * 8
    if bits is None:
        return 160
    if not 80 <= bits <= 4096 or bits % 8:
        raise ValueError(f"{bits} bits: expected 80..4096, a multiple of 8")
    return bits


def parse_key_file(text: str) -> dict[int, SymmetricKey]:
    """The keys in chrony's key file format; ``KeyFileError`` names every bad line."""
    keys: dict[int, SymmetricKey] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        try:
            key = _parse_key(words)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if key.key_id in keys:
            problems.append(f"line {number}: key {key.key_id} is defined twice")
        keys[key.key_id] = key
    if problems:
        raise KeyFileError(problems)
    return keys


def load_key_file(path: Path) -> dict[int, SymmetricKey]:
    """``parse_key_file`` of the file at ``path`` (OSError if it cannot be read)."""
    return parse_key_file(path.read_text(encoding="utf-8"))


def _parse_key(words: list[str]) -> SymmetricKey:
    if len(words) not in (2, 3):
        raise ValueError("expected ID [TYPE] VALUE")
    if not words[0].isdigit() or not 1 <= int(words[0]) <= 0xFFFFFFFF:
        raise ValueError(f"key ID {words[0]!r} is not an integer 1..4294967295")
    kind = words[1].upper() if len(words) == 3 else "MD5"
    if kind not in KEY_TYPES:
        raise ValueError(f"key type {words[1]!r} is not one of {', '.join(KEY_TYPES)}")
    value = words[-1]
    if value.upper().startswith("HEX:"):
        try:
            secret = bytes.fromhex(value[4:])
        except ValueError:
            raise ValueError(f"{value[:4]} value is not hexadecimal") from None
    else:
        secret = value[6:].encode() if value.upper().startswith("ASCII:") else value.encode()
    if not secret:
        raise ValueError("the key is empty")
    wanted = _CMAC_KEY_LENGTHS.get(kind)
    if wanted is not None and len(secret) != wanted:
        raise ValueError(f"an {kind} key is {wanted} bytes, not {len(secret)}")
    return SymmetricKey(int(words[0]), kind, secret)
