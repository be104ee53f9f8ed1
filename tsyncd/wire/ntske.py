"""NTS Key Establishment records (RFC 8915 §4): bytes <-> ``Record`` and typed messages.

Theory of operation
-------------------
An NTS-KE message is a sequence of records, each ``C|type(15) | body length(16) | body``,
ending with exactly one End of Message record.  There is no outer length: the message delimits
itself, so the receiver parses records as the TLS stream delivers them.  ``RecordParser`` is the
stream half (feed bytes, get records; it stops at End of Message and caps what it buffers), and
``decode_request`` / ``decode_response`` apply the per-side rules of §4.1 to a whole message.

Notes that matter for interop (see also the spec summary):

* the body length counts the body only (unlike NTP extension fields), and bodies are not padded;
* an unknown record with the critical bit set is an error (the server answers Error 0), one
  without it is ignored;
* chrony sets the critical bit on AEAD and Port records it sends, so a decoder must not insist
  on C=0 where the RFC says "MAY";
* record 1024 is chrony's private "compliant AES-128-GCM-SIV key export" flag (empty, C=0).

Everything here is syntax and message rules; no TLS, no key export, no policy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final

from tsyncd.wire.errors import Truncated, WireError

__all__ = [
    "ALPN",
    "KE_PORT",
    "MAX_MESSAGE_LEN",
    "AeadId",
    "KeError",
    "KeErrorCode",
    "KeRequest",
    "KeResponse",
    "NextProtocol",
    "Record",
    "RecordParser",
    "RecordType",
    "decode_records",
    "decode_request",
    "decode_response",
    "encode_record",
    "encode_request",
    "encode_response",
]

ALPN: Final = b"ntske/1"
"""TLS ALPN protocol id for NTS-KE (RFC 8915 §4)."""

KE_PORT: Final = 4460
"""IANA port of the ``ntske`` service."""

MAX_MESSAGE_LEN: Final = 16384
"""Bytes we buffer for one KE message (chrony's cap); §4 asks servers for >= 1024."""

_HEAD: Final = struct.Struct("!HH")
_U16: Final = struct.Struct("!H")


class RecordType(IntEnum):
    """NTS-KE record types (IANA "NTS Key Establishment Record Types")."""

    END_OF_MESSAGE = 0
    NEXT_PROTOCOL = 1
    ERROR = 2
    WARNING = 3
    AEAD_ALGORITHM = 4
    NEW_COOKIE = 5
    SERVER = 6
    PORT = 7
    COMPLIANT_GCM_SIV = 1024  # chrony private: compliant AES-128-GCM-SIV exporter context


_RECORD_NAMES: Final[dict[int, str]] = {
    RecordType.END_OF_MESSAGE: "End of Message",
    RecordType.NEXT_PROTOCOL: "Next Protocol Negotiation",
    RecordType.ERROR: "Error",
    RecordType.WARNING: "Warning",
    RecordType.AEAD_ALGORITHM: "AEAD Algorithm Negotiation",
    RecordType.NEW_COOKIE: "New Cookie",
    RecordType.SERVER: "Server Negotiation",
    RecordType.PORT: "Port Negotiation",
    RecordType.COMPLIANT_GCM_SIV: "chrony compliant AES-128-GCM-SIV",
}


def _record_name(record_type: int) -> str:
    """How messages name a record: "Server Negotiation record (type 6)"."""
    name = _RECORD_NAMES.get(record_type)
    return f"{name} record (type {record_type})" if name else f"record type {record_type}"


class NextProtocol(IntEnum):
    """NTS Next Protocol ids (§7.7)."""

    NTPV4 = 0


class AeadId(IntEnum):
    """AEAD algorithm ids (RFC 5116 registry) that NTS uses."""

    AES_SIV_CMAC_256 = 15
    AES_128_GCM_SIV = 30


class KeErrorCode(IntEnum):
    """Error record codes (§4.1.3)."""

    UNRECOGNIZED_CRITICAL_RECORD = 0
    BAD_REQUEST = 1
    INTERNAL_SERVER_ERROR = 2


class KeError(WireError):
    """A KE message breaks a rule; ``code`` is the Error record a server answers with."""

    reason: ClassVar[str] = "ntske_bad_request"
    code: int = KeErrorCode.BAD_REQUEST

    def __init__(self, message: str, code: int = KeErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One NTS-KE record."""

    critical: bool
    record_type: int  # 0..32767
    body: bytes  # at most 65535 bytes


def encode_record(record: Record) -> bytes:
    """One record on the wire; ``ValueError`` for an impossible type or body length."""
    if not 0 <= record.record_type <= 0x7FFF:
        raise ValueError(f"NTS-KE record type {record.record_type} out of range 0..32767")
    if len(record.body) > 0xFFFF:
        raise ValueError(f"NTS-KE record body of {len(record.body)} bytes exceeds 65535")
    first = record.record_type | (0x8000 if record.critical else 0)
    return _HEAD.pack(first, len(record.body)) + record.body


def _u16_list(values: tuple[int, ...]) -> bytes:
    return b"".join(_U16.pack(v) for v in values)


def _decode_u16_list(record: Record) -> tuple[int, ...]:
    body = record.body
    if len(body) & 1:
        raise KeError(f"{_record_name(record.record_type)} has odd body length {len(body)}")
    return tuple(v for (v,) in _U16.iter_unpack(body))


class RecordParser:
    """Stream parser: ``feed`` TLS plaintext, collect records until End of Message.

    ``feed`` returns the records completed by the new bytes.  After End of Message ``done`` is
    True and further bytes are an error (a message is one request or one response).  More than
    ``max_len`` buffered or consumed bytes raise ``KeError`` so a slow or hostile peer cannot
    make us hold an unbounded message.
    """

    def __init__(self, max_len: int = MAX_MESSAGE_LEN) -> None:
        self.max_len = max_len
        self.done = False
        self._buf = bytearray()
        self._consumed = 0

    def feed(self, data: bytes) -> list[Record]:
        """Add bytes; return the records they complete (raises ``WireError`` on bad input)."""
        if self.done and data:
            raise KeError(f"{len(data)} bytes after End of Message")
        self._buf += data
        out: list[Record] = []
        while len(self._buf) >= _HEAD.size and not self.done:
            first, length = _HEAD.unpack_from(self._buf)
            if self._consumed + _HEAD.size + length > self.max_len:
                raise KeError(f"NTS-KE message longer than {self.max_len} bytes")
            if len(self._buf) < _HEAD.size + length:
                break
            body = bytes(self._buf[_HEAD.size : _HEAD.size + length])
            del self._buf[: _HEAD.size + length]
            self._consumed += _HEAD.size + length
            record = Record(critical=bool(first & 0x8000), record_type=first & 0x7FFF, body=body)
            if record.record_type == RecordType.END_OF_MESSAGE:
                if body:
                    raise KeError(f"End of Message record with a {length}-byte body")
                self.done = True
                if self._buf:
                    raise KeError(f"{len(self._buf)} bytes after End of Message")
            out.append(record)
        if self._consumed + len(self._buf) > self.max_len:
            raise KeError(f"NTS-KE message longer than {self.max_len} bytes")
        return out

    def close(self) -> None:
        """The stream ended: raise ``Truncated`` unless a whole message arrived."""
        if not self.done:
            raise Truncated(
                f"NTS-KE stream ended before End of Message ({len(self._buf)} bytes pending)"
            )


def decode_records(data: bytes, max_len: int = MAX_MESSAGE_LEN) -> tuple[Record, ...]:
    """A whole message (through End of Message, nothing after) as records."""
    parser = RecordParser(max_len)
    records = parser.feed(data)
    parser.close()
    return tuple(records)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True, kw_only=True)
class KeRequest:
    """A client's NTS-KE request (§4.1)."""

    next_protocols: tuple[int, ...] = (NextProtocol.NTPV4,)
    aead_algorithms: tuple[int, ...] = (AeadId.AES_SIV_CMAC_256,)  # preference order
    server: str | None = None  # Server Negotiation: a wish, not a command
    port: int | None = None
    compliant_gcm_siv: bool = False  # chrony record 1024


def encode_request(request: KeRequest) -> bytes:
    """The request as records, in chrony's order; ends with End of Message."""
    recs = [Record(critical=True, record_type=1, body=_u16_list(request.next_protocols))]
    recs.append(Record(critical=True, record_type=4, body=_u16_list(request.aead_algorithms)))
    if request.compliant_gcm_siv:
        recs.append(Record(critical=False, record_type=RecordType.COMPLIANT_GCM_SIV, body=b""))
    if request.server is not None:
        recs.append(Record(critical=False, record_type=6, body=request.server.encode("ascii")))
    if request.port is not None:
        recs.append(Record(critical=False, record_type=7, body=_U16.pack(request.port)))
    recs.append(Record(critical=True, record_type=0, body=b""))
    return b"".join(map(encode_record, recs))


def decode_request(records: tuple[Record, ...]) -> KeRequest:
    """Apply the server-side rules of §4.1 to a whole request (what chrony enforces).

    Raises ``KeError`` with the Error code to answer: 0 for an unknown critical record,
    1 for everything else that is malformed.
    """
    protocols: tuple[int, ...] | None = None
    aeads: tuple[int, ...] | None = None
    server: str | None = None
    port: int | None = None
    compliant = False
    for rec in records:
        t = rec.record_type
        if t == RecordType.END_OF_MESSAGE:
            continue
        if t == RecordType.NEXT_PROTOCOL:
            if protocols is not None or not rec.critical or not rec.body:
                raise KeError("Next Protocol must appear once, critical and non-empty")
            protocols = _decode_u16_list(rec)
        elif t == RecordType.AEAD_ALGORITHM:
            if aeads is not None:
                raise KeError("AEAD Algorithm Negotiation appears twice")
            aeads = _decode_u16_list(rec)
        elif t in (RecordType.ERROR, RecordType.WARNING, RecordType.NEW_COOKIE):
            raise KeError(f"{_record_name(t)} is not allowed in a request")
        elif t == RecordType.SERVER:
            server = _ascii(rec)
        elif t == RecordType.PORT:
            port = _single_u16(rec)
        elif t == RecordType.COMPLIANT_GCM_SIV:
            compliant = True
        elif rec.critical:
            raise KeError(
                f"unrecognized critical record type {t}",
                KeErrorCode.UNRECOGNIZED_CRITICAL_RECORD,
            )
    if protocols is None:
        raise KeError("request has no Next Protocol record")
    if NextProtocol.NTPV4 in protocols and aeads is None:
        raise KeError("NTPv4 requested without an AEAD Algorithm Negotiation record")
    return KeRequest(
        next_protocols=protocols,
        aead_algorithms=aeads or (),
        server=server,
        port=port,
        compliant_gcm_siv=compliant,
    )


def _ascii(rec: Record) -> str:
    try:
        text = rec.body.decode("ascii")
    except UnicodeDecodeError:
        raise KeError(f"{_record_name(rec.record_type)}: body is not ASCII") from None
    if not text or not text.isprintable():
        raise KeError(f"{_record_name(rec.record_type)}: body is empty or not printable")
    return text


def _single_u16(rec: Record) -> int:
    if len(rec.body) != 2:
        name = _record_name(rec.record_type)
        raise KeError(f"{name}: body must be 2 bytes, got {len(rec.body)}")
    value: int = _U16.unpack(rec.body)[0]
    return value


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True, kw_only=True)
class KeResponse:
    """A server's NTS-KE response (§4.1); on error only ``error``/``warnings`` matter."""

    next_protocol: int | None = None  # None: empty Next Protocol record (nothing acceptable)
    aead: int | None = None  # None: empty AEAD record, or none sent
    cookies: tuple[bytes, ...] = ()
    server: str | None = None  # where to send NTP; None: the KE server's address
    port: int | None = None  # None: 123
    compliant_gcm_siv: bool = False
    error: int | None = None
    warnings: tuple[int, ...] = ()


def encode_response(response: KeResponse) -> bytes:
    """The response as records, in chrony's order (§4.1); ends with End of Message."""
    recs: list[Record] = []
    if response.error is not None:
        recs.append(Record(critical=True, record_type=2, body=_U16.pack(response.error)))
    else:
        proto = () if response.next_protocol is None else (response.next_protocol,)
        recs.append(Record(critical=True, record_type=1, body=_u16_list(proto)))
        aead = () if response.aead is None else (response.aead,)
        recs.append(Record(critical=True, record_type=4, body=_u16_list(aead)))
        if response.compliant_gcm_siv:
            recs.append(Record(critical=False, record_type=1024, body=b""))
        if response.port is not None:
            recs.append(Record(critical=True, record_type=7, body=_U16.pack(response.port)))
        if response.server is not None:
            body = response.server.encode("ascii")
            recs.append(Record(critical=True, record_type=6, body=body))
        recs.extend(Record(critical=False, record_type=5, body=c) for c in response.cookies)
    recs.append(Record(critical=True, record_type=0, body=b""))
    return b"".join(map(encode_record, recs))


def decode_response(records: tuple[Record, ...]) -> KeResponse:
    """Apply the client-side rules of §4.1 to a whole response.

    An Error record, or any Warning (none are defined, so all are treated as errors), comes
    back in the result for the caller to act on; a malformed response raises ``KeError``.
    """
    protocol: tuple[int, ...] | None = None
    aead: tuple[int, ...] | None = None
    cookies: list[bytes] = []
    server: str | None = None
    port: int | None = None
    compliant = False
    error: int | None = None
    warnings: list[int] = []
    for rec in records:
        t = rec.record_type
        if t == RecordType.END_OF_MESSAGE:
            continue
        if t == RecordType.NEXT_PROTOCOL:
            if protocol is not None:
                raise KeError("Next Protocol appears twice")
            protocol = _decode_u16_list(rec)
            if len(protocol) > 1:
                raise KeError(f"server chose {len(protocol)} next protocols, at most 1 allowed")
        elif t == RecordType.AEAD_ALGORITHM:
            if aead is not None:
                raise KeError("AEAD Algorithm Negotiation appears twice")
            aead = _decode_u16_list(rec)
            if len(aead) > 1:
                raise KeError(f"server chose {len(aead)} AEAD algorithms, at most 1 allowed")
        elif t == RecordType.ERROR:
            error = _single_u16(rec)
        elif t == RecordType.WARNING:
            warnings.append(_single_u16(rec))
        elif t == RecordType.NEW_COOKIE:
            if not rec.body:
                raise KeError("empty New Cookie record")
            cookies.append(rec.body)
        elif t == RecordType.SERVER:
            if server is not None:
                raise KeError("Server Negotiation appears twice")
            server = _ascii(rec)
        elif t == RecordType.PORT:
            if port is not None:
                raise KeError("Port Negotiation appears twice")
            port = _single_u16(rec)
        elif t == RecordType.COMPLIANT_GCM_SIV:
            compliant = True
        elif rec.critical:
            raise KeError(f"unrecognized critical record type {t} in the response")
    if error is None and not warnings:
        if protocol is None:
            raise KeError("response has no Next Protocol record")
        if protocol == (NextProtocol.NTPV4,) and aead is None:  # §4.1.5: exactly once then
            raise KeError("NTS-KE server chose NTPv4 but sent no AEAD Algorithm Negotiation record")
    return KeResponse(
        next_protocol=protocol[0] if protocol else None,
        aead=aead[0] if aead else None,
        cookies=tuple(cookies),
        server=server,
        port=port,
        compliant_gcm_siv=compliant,
        error=error,
        warnings=tuple(warnings),
    )
