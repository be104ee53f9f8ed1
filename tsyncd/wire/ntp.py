"""NTPv4 packet codec (RFC 5905 §7.3, RFC 7822): bytes <-> ``NtpPacket``, nothing else.

Theory of operation
-------------------
A packet is the fixed 48-byte header, then (NTPv4 only) a chain of RFC 7822 extension fields
(EFs), then optionally a legacy symmetric-key MAC (32-bit key id + MD5/SHA-1 digest).  Neither
the EF chain nor the MAC says how long it is up front, so RFC 7822 §7.5 makes the split
deterministic by length: whenever exactly 20 or 24 bytes remain (key id + 16- or 20-byte digest)
they are the MAC; anything else must be another EF.  That is also why, without a MAC, the last EF
has to be at least 28 bytes long: an EF of 20 or 24 bytes in last position would read as a MAC.

Decoding is total: ``decode_ntp`` returns an ``NtpPacket`` or raises a ``WireError`` subclass for
*any* input, and never interprets EF contents (NTS and friends do that a layer up).  Decoded EF
bodies keep their padding, so ``encode_ntp(decode_ntp(x)) == x`` byte for byte.

Encoding validates ranges and raises ``ValueError`` on our own mistakes.  It pads EF bodies with
zeros to a multiple of 4 and to the 16-byte minimum EF size, and pads a final EF of 20/24 bytes
(when no MAC follows) to 28 so it cannot be misread as a MAC.  A last EF of 16 bytes with no MAC
is accepted and re-emitted as is: RFC 7822 asks for 28, but 16 bytes are unambiguous (chrony
would reject such a packet; our own NTS fields always end with an Authenticator of >= 28 bytes).

A 4-byte all-zero trailer (the RFC 5905 "crypto-NAK": a MAC field holding only key id 0) is
decoded as ``mac=b"\\0\\0\\0\\0"`` when it directly follows an NTPv4 header.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from tsyncd.wire.errors import BadExtension, BadLength, BadVersion, Truncated

__all__ = [
    "CRYPTO_NAK",
    "EF_HEADER_LEN",
    "EF_MAX_LEN",
    "EF_MIN_LAST_LEN",
    "EF_MIN_LEN",
    "HEADER_LEN",
    "MAC_LENGTHS",
    "V3_MAC_LENGTHS",
    "ExtensionField",
    "KissCode",
    "Leap",
    "Mode",
    "NtpPacket",
    "decode_ntp",
    "encode_ntp",
    "is_crypto_nak",
    "kiss_code",
    "mac_lengths",
    "refid_for_address",
    "refid_from_ascii",
    "refid_to_str",
]

HEADER_LEN: Final = 48
"""Bytes in the fixed NTP header (RFC 5905 §7.3)."""

MAX_PACKET_LEN: Final = 1152
"""The longest NTP packet we read: chronyd's largest (48 bytes of header, 1024 of extension
fields, a MAC of up to 68), rounded up; longer datagrams are dropped as ``too_long``."""

EF_HEADER_LEN: Final = 4
"""Type (16 bits) + length (16 bits) in front of every extension field."""

EF_MIN_LEN: Final = 16
"""Smallest legal extension field, header included (RFC 7822 §3)."""

EF_MIN_LAST_LEN: Final = 28
"""Smallest legal *last* extension field when no MAC follows (RFC 7822 §7.5)."""

EF_MAX_LEN: Final = 0xFFFC
"""Largest extension field the 16-bit length can express while staying 4-aligned."""

MAC_LENGTHS: Final = frozenset({20, 24})
"""Legacy MAC sizes: 4-byte key id + 16-byte (MD5) or 20-byte (SHA-1) digest."""

V3_MAC_LENGTHS: Final = frozenset({20, 24, 36, 52, 68})
"""MAC sizes after an NTPv1-3 header, which has no extension fields to confuse a MAC with:
key id + a 16 (MD5, AES-CMAC), 20 (SHA-1), 32 (SHA-256), 48 (SHA-384) or 64-byte (SHA-512)
digest.  chronyd signs with a longer digest than NTPv4 allows (RFC 7822: 24 bytes at most)
by sending NTPv3."""


def mac_lengths(version: int) -> frozenset[int]:
    """The MAC sizes that may follow the header of an NTP``version`` packet."""
    return MAC_LENGTHS if version == 4 else V3_MAC_LENGTHS


CRYPTO_NAK: Final = b"\x00\x00\x00\x00"
"""RFC 5905 crypto-NAK: a MAC field holding just key id 0 (server could not authenticate)."""

# LI/VN/Mode byte, stratum, poll, precision, root delay, root dispersion, refid, 4 timestamps.
_HEADER: Final = struct.Struct("!BBbbIIIQQQQ")
_EF_HEAD: Final = struct.Struct("!HH")
_U32: Final = 0xFFFF_FFFF
_U64: Final = (1 << 64) - 1


class Leap(IntEnum):
    """Leap indicator (2 bits): a pending leap second, or "not synchronized"."""

    NONE = 0
    INSERT = 1  # last minute of the UTC day has 61 s
    DELETE = 2  # last minute of the UTC day has 59 s
    UNSYNCHRONIZED = 3


class Mode(IntEnum):
    """Association mode (3 bits)."""

    RESERVED = 0
    SYMMETRIC_ACTIVE = 1
    SYMMETRIC_PASSIVE = 2
    CLIENT = 3
    SERVER = 4
    BROADCAST = 5
    CONTROL = 6  # ntpq (mode 6 has its own, shorter header; not decoded here)
    PRIVATE = 7  # ntpdc


class KissCode(StrEnum):
    """Kiss-o'-Death codes (RFC 5905 §7.4, RFC 8915 §5.7): stratum 0, ASCII in the refid."""

    ACST = "ACST"  # the association belongs to a unicast server
    AUTH = "AUTH"  # server authentication failed
    AUTO = "AUTO"  # Autokey sequence failed
    BCST = "BCST"  # the association belongs to a broadcast server
    CRYP = "CRYP"  # cryptographic authentication or identification failed
    DENY = "DENY"  # access denied by remote server: demobilize
    DROP = "DROP"  # lost peer in symmetric mode
    RSTR = "RSTR"  # access denied due to local policy: demobilize
    INIT = "INIT"  # the association has not yet synchronized for the first time
    MCST = "MCST"  # the association belongs to a dynamically discovered server
    NKEY = "NKEY"  # no key found
    NTSN = "NTSN"  # NTS negative acknowledgement (RFC 8915)
    RATE = "RATE"  # rate exceeded: increase the poll interval
    RMOT = "RMOT"  # alteration of association from a remote host running ntpdc
    STEP = "STEP"  # a step change in system time has occurred


_LEAPS: Final = tuple(Leap)
_MODES: Final = tuple(Mode)
_KISS_CODES: Final = {code.value: code for code in KissCode}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtensionField:
    """One RFC 7822 extension field; the body is opaque to this layer."""

    field_type: int  # 16-bit type code (e.g. 0x0104 NTS Unique Identifier)
    body: bytes  # value bytes as on the wire; decoded bodies include the zero padding


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpPacket:
    """An NTP mode 1-5 packet: header fields as raw wire integers, EFs, optional legacy MAC."""

    leap: Leap = Leap.NONE
    version: int = 4  # 1..4 when decoded
    mode: Mode = Mode.CLIENT
    stratum: int = 0  # 0 = unspecified / kiss-o'-death, 1 primary, 2..15, 16 unsynchronized
    poll: int = 0  # signed log2 s
    precision: int = 0  # signed log2 s
    root_delay: int = 0  # raw NTP short, 16.16 s
    root_dispersion: int = 0  # raw NTP short, 16.16 s
    reference_id: int = 0  # u32; see refid_to_str / kiss_code
    reference_ts: int = 0  # raw NTP64, when the clock was last set
    origin_ts: int = 0  # raw NTP64, T1 as echoed by the server
    receive_ts: int = 0  # raw NTP64, T2
    transmit_ts: int = 0  # raw NTP64, T3
    extensions: tuple[ExtensionField, ...] = ()  # NTPv4 only, in wire order
    mac: bytes | None = None  # legacy MAC: key id + digest (20/24 bytes), or CRYPTO_NAK


# --------------------------------------------------------------------------- decoding


def decode_ntp(data: bytes) -> NtpPacket:
    """Parse one NTP datagram; raises only ``WireError`` subclasses, whatever the input.

    Checks, in order: length >= 48 (``Truncated``), version 1..4 (``BadVersion``), length a
    multiple of 4 (``BadLength``), then the trailer: RFC 7822 EFs and/or a MAC for v4
    (``BadExtension``), only a MAC for v1..3 (``BadLength``).  The caller still has to check
    mode, stratum, timestamps etc. (RFC 5905 §9.2 tests): this is syntax only.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise Truncated(f"NTP packet of {n} bytes, header needs {HEADER_LEN}")
    (
        lvm,
        stratum,
        poll,
        precision,
        root_delay,
        root_dispersion,
        reference_id,
        reference_ts,
        origin_ts,
        receive_ts,
        transmit_ts,
    ) = _HEADER.unpack_from(data)
    version = (lvm >> 3) & 0x7
    if not 1 <= version <= 4:
        raise BadVersion(f"NTP version {version} not supported (expected 1..4)")
    extensions: tuple[ExtensionField, ...] = ()
    mac: bytes | None = None
    if n != HEADER_LEN:  # the fast path (a plain request or reply) skips all of this
        if n & 3:
            raise BadLength(f"NTP packet length {n} is not a multiple of 4")
        if version == 4:
            extensions, mac = _decode_trailer(data, n)
        elif n - HEADER_LEN in V3_MAC_LENGTHS:
            mac = bytes(data[HEADER_LEN:])
        else:
            raise BadLength(
                f"NTPv{version} packet has {n - HEADER_LEN} bytes after the header; "
                "only a MAC of 20, 24, 36, 52 or 68 bytes may follow"
            )
    return NtpPacket(
        leap=_LEAPS[lvm >> 6],
        version=version,
        mode=_MODES[lvm & 0x7],
        stratum=stratum,
        poll=poll,
        precision=precision,
        root_delay=root_delay,
        root_dispersion=root_dispersion,
        reference_id=reference_id,
        reference_ts=reference_ts,
        origin_ts=origin_ts,
        receive_ts=receive_ts,
        transmit_ts=transmit_ts,
        extensions=extensions,
        mac=mac,
    )


def _decode_trailer(data: bytes, n: int) -> tuple[tuple[ExtensionField, ...], bytes | None]:
    """Split what follows a v4 header into EFs and a MAC (RFC 7822 §7.5); ``n`` is 4-aligned."""
    rest = n - HEADER_LEN
    if rest == len(CRYPTO_NAK) and data[HEADER_LEN:] == CRYPTO_NAK:
        return (), CRYPTO_NAK
    fields: list[ExtensionField] = []
    pos = HEADER_LEN
    while pos < n:
        remaining = n - pos
        if remaining in MAC_LENGTHS:
            # RFC 7822 §7.5: exactly 20/24 bytes left are a MAC, never an EF.
            return tuple(fields), bytes(data[pos:])
        field_type, length = _EF_HEAD.unpack_from(data, pos)
        if length < EF_MIN_LEN or length & 3:
            raise BadExtension(
                f"extension field #{len(fields)} (type 0x{field_type:04x}) at offset {pos} "
                f"has length {length}: must be >= {EF_MIN_LEN} and a multiple of 4"
            )
        if length > remaining:
            raise BadExtension(
                f"extension field #{len(fields)} (type 0x{field_type:04x}) at offset {pos} "
                f"has length {length} but only {remaining} bytes remain"
            )
        body = bytes(data[pos + EF_HEADER_LEN : pos + length])
        fields.append(ExtensionField(field_type=field_type, body=body))
        pos += length
    return tuple(fields), None


# --------------------------------------------------------------------------- encoding


def encode_ntp(packet: NtpPacket) -> bytes:
    """Serialize ``packet``; ``ValueError`` if a field is out of range (a bug on our side).

    EF bodies are zero-padded to a multiple of 4 and to the 16-byte EF minimum; without a MAC a
    last EF of 20/24 bytes is padded to 28 (RFC 7822 §7.5).  Encoding a decoded packet gives
    back the exact bytes it came from.
    """
    header = _encode_header(packet)
    extensions = packet.extensions
    mac = packet.mac
    if not extensions and mac is None:
        return header
    if packet.version != 4 and extensions:
        raise ValueError(f"extension fields need NTP version 4, packet has {packet.version}")
    parts = [header]
    if mac is not None:
        if mac == CRYPTO_NAK and packet.version == 4 and not extensions:
            return header + mac
        allowed = mac_lengths(packet.version)
        if len(mac) not in allowed:
            sizes = ", ".join(map(str, sorted(allowed)))
            raise ValueError(
                f"an NTPv{packet.version} MAC is {sizes} bytes (or a bare crypto-NAK), "
                f"not {len(mac)}"
            )
    last = len(extensions) - 1
    for i, ef in enumerate(extensions):
        parts.append(_encode_ef(ef, i, last_without_mac=i == last and mac is None))
    if mac is not None:
        parts.append(mac)
    return b"".join(parts)


def _encode_header(p: NtpPacket) -> bytes:
    """Pack the 48-byte header, checking each field against its wire width."""
    leap, version, mode = int(p.leap), p.version, int(p.mode)
    _check("leap", leap, 0, 3)
    _check("version", version, 0, 7)
    _check("mode", mode, 0, 7)
    _check("stratum", p.stratum, 0, 255)
    _check("poll", p.poll, -128, 127)
    _check("precision", p.precision, -128, 127)
    _check("root_delay", p.root_delay, 0, _U32)
    _check("root_dispersion", p.root_dispersion, 0, _U32)
    _check("reference_id", p.reference_id, 0, _U32)
    _check("reference_ts", p.reference_ts, 0, _U64)
    _check("origin_ts", p.origin_ts, 0, _U64)
    _check("receive_ts", p.receive_ts, 0, _U64)
    _check("transmit_ts", p.transmit_ts, 0, _U64)
    return _HEADER.pack(
        (leap << 6) | (version << 3) | mode,
        p.stratum,
        p.poll,
        p.precision,
        p.root_delay,
        p.root_dispersion,
        p.reference_id,
        p.reference_ts,
        p.origin_ts,
        p.receive_ts,
        p.transmit_ts,
    )


def _encode_ef(ef: ExtensionField, index: int, *, last_without_mac: bool) -> bytes:
    """One EF with its header and zero padding (RFC 7822 §3, §7.5)."""
    _check(f"extensions[{index}].field_type", ef.field_type, 0, 0xFFFF)
    length = EF_HEADER_LEN + len(ef.body)
    length += -length & 3
    length = max(length, EF_MIN_LEN)
    if last_without_mac and length in MAC_LENGTHS:
        # 20 or 24 bytes would read back as a MAC; RFC 7822 wants >= 28 here anyway.
        length = EF_MIN_LAST_LEN
    if length > EF_MAX_LEN:
        raise ValueError(
            f"extensions[{index}] body of {len(ef.body)} bytes exceeds the EF maximum "
            f"({EF_MAX_LEN - EF_HEADER_LEN})"
        )
    padding = length - EF_HEADER_LEN - len(ef.body)
    return _EF_HEAD.pack(ef.field_type, length) + ef.body + bytes(padding)


def _check(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"NTP field {name}={value!r} out of range {lo}..{hi}")


# --------------------------------------------------------------------------- reference ids


def kiss_code(packet: NtpPacket) -> str | None:
    """The kiss code of a Kiss-o'-Death packet, else ``None`` (RFC 5905 §7.4).

    A KoD is stratum 0 with 1..4 printable ASCII characters (NUL-padded on the right) in the
    refid.  Known codes come back as ``KissCode`` members, unknown ones (``X...`` experiments)
    as plain strings.  The caller must also check the mode and the origin timestamp before
    acting on it: a KoD with a wrong origin is a spoof.
    """
    if packet.stratum != 0:
        return None
    code = _ascii_refid(packet.reference_id)
    if code is None:
        return None
    return _KISS_CODES.get(code, code)


def is_crypto_nak(packet: NtpPacket) -> bool:
    """True if the packet ends in a crypto-NAK (MAC field of key id 0 only, RFC 5905 §7.4)."""
    return packet.mac == CRYPTO_NAK


def refid_to_str(refid: int, stratum: int) -> str:
    """Human form of a refid: ASCII code at stratum 0/1, dotted quad otherwise.

    At stratum <= 1 an empty or non-printable code also falls back to the dotted quad, so the
    result is always something an operator can read.
    """
    if stratum <= 1:
        code = _ascii_refid(refid)
        if code is not None:
            return code
    return str(ipaddress.IPv4Address(refid & _U32))


def refid_from_ascii(code: str) -> int:
    """Refid for a 1..4-character printable ASCII code, left-justified and NUL-padded."""
    if not 1 <= len(code) <= 4 or not all(" " <= c <= "~" for c in code):
        raise ValueError(f"refid code must be 1..4 printable ASCII characters, got {code!r}")
    return int.from_bytes(code.encode("ascii").ljust(4, b"\x00"), "big")


def refid_for_address(addr: str) -> int:
    """Refid naming an upstream server at stratum >= 2 (RFC 5905 §7.3).

    IPv4 (and IPv4-mapped IPv6): the address itself.  IPv6: the first 4 octets of the MD5 of the
    16-byte address — a hash, not a secret, which is why MD5 is fine here.
    """
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            import hashlib  # here, not at start: it maps libcrypto (bench/README.md, memory)

            digest = hashlib.md5(ip.packed, usedforsecurity=False).digest()
            return int.from_bytes(digest[:4], "big")
        ip = mapped
    return int(ip)


def _ascii_refid(refid: int) -> str | None:
    """The refid as 1..4 printable ASCII characters (trailing NULs dropped), else None."""
    raw = (refid & _U32).to_bytes(4, "big").rstrip(b"\x00")
    if raw and all(0x20 <= b <= 0x7E for b in raw):
        return raw.decode("ascii")
    return None
