"""A minimal DNS codec, sans-IO: A/AAAA queries out, their addresses back (RFC 1035, RFC 3596).

Why our own: a pool name must be resolvable through a DNS server given in the config (tests
run a real dnsmasq on a loopback port), and ``getaddrinfo`` only reads /etc/resolv.conf.  We ask
one question per message (RD set), and read only what answers it: the header, the echoed
question, and the answer records of the asked type, following name compression (RFC 1035
§4.1.4).  CNAME chains are followed by the recursive server, which puts the final A/AAAA
records in the same answer section; we take every record of the asked type and class.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar, Final

from tsyncd.wire.errors import Truncated, WireError

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_CLASS_IN: Final = 1
_FLAG_QR: Final = 0x8000
_FLAG_TC: Final = 0x0200
_FLAG_RD: Final = 0x0100
_MAX_POINTERS: Final = 32  # compression pointers followed per name before we call it a loop


class QType(enum.IntEnum):
    """The record types we ask for."""

    A = 1
    AAAA = 28


class BadDnsResponse(WireError):
    """A DNS message that does not answer our question (id, flags, question, loops)."""

    reason = "bad_dns_response"


class DnsError(WireError):
    """The server answered with an error code (NXDOMAIN, SERVFAIL, ...)."""

    reason: ClassVar[str] = "dns_error"

    def __init__(self, rcode: int) -> None:
        names = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
        super().__init__(f"DNS error {names.get(rcode, rcode)}")
        self.rcode = rcode


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAnswer:
    """The addresses of one A or AAAA answer, in the server's order."""

    addresses: tuple[str, ...]
    ttl_s: int  # the smallest TTL of them (0 if none)


def _encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.removesuffix(".").split("."):
        raw = label.encode("ascii")
        if not 1 <= len(raw) <= 63:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out) + b"\x00"


def encode_query(query_id: int, name: str, qtype: QType) -> bytes:
    """One recursive query for ``name``'s records of ``qtype``."""
    header = _HEADER.pack(query_id & 0xFFFF, _FLAG_RD, 1, 0, 0, 0)
    return header + _encode_name(name) + struct.pack("!HH", int(qtype), _CLASS_IN)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset just after it in the message (RFC 1035 §4.1.4)."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(_MAX_POINTERS):
        if offset >= len(data):
            raise Truncated(f"DNS name runs past the end ({len(data)} bytes)")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise Truncated("DNS compression pointer cut short")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise BadDnsResponse(f"DNS label type {length:#x} is not supported")
        if length == 0:
            return ".".join(labels), end if end is not None else offset + 1
        label = data[offset + 1 : offset + 1 + length]
        if len(label) != length:
            raise Truncated("DNS label runs past the end")
        labels.append(label.decode("ascii", "replace"))
        offset += 1 + length
    raise BadDnsResponse("DNS compression pointers loop")


def decode_response(data: bytes, query_id: int, name: str, qtype: QType) -> DnsAnswer:
    """The addresses answering our query; ``WireError`` if ``data`` is not its answer."""
    if len(data) < _HEADER.size:
        raise Truncated(f"DNS message of {len(data)} bytes")
    rid, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(data)
    if rid != query_id & 0xFFFF or not flags & _FLAG_QR:
        raise BadDnsResponse(f"not a response to query {query_id}")
    if flags & _FLAG_TC:
        raise BadDnsResponse("truncated DNS response (TC); too many addresses for UDP")
    rcode = flags & 0xF
    if rcode:
        raise DnsError(rcode)
    if qdcount != 1:
        raise BadDnsResponse(f"{qdcount} questions in the response")
    qname, offset = _read_name(data, _HEADER.size)
    if offset + 4 > len(data):
        raise Truncated("DNS question cut short")
    qt, qc = struct.unpack_from("!HH", data, offset)
    offset += 4
    if qname.lower() != name.lower().removesuffix(".") or qt != qtype or qc != _CLASS_IN:
        raise BadDnsResponse(f"response to another question ({qname!r}, type {qt})")
    addresses: list[str] = []
    ttls: list[int] = []
    size = 4 if qtype is QType.A else 16
    for _ in range(ancount):
        _owner, offset = _read_name(data, offset)
        if offset + _RR_FIXED.size > len(data):
            raise Truncated("DNS record cut short")
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, offset)
        offset += _RR_FIXED.size
        rdata = data[offset : offset + rdlength]
        if len(rdata) != rdlength:
            raise Truncated("DNS record data cut short")
        offset += rdlength
        if rtype == qtype and rclass == _CLASS_IN and rdlength == size:
            addresses.append(str(ipaddress.ip_address(rdata)))
            ttls.append(ttl)
    return DnsAnswer(addresses=tuple(addresses), ttl_s=min(ttls, default=0))
