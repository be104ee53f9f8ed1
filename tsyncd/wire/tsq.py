"""TSQ (time over QUIC) messages, sans-IO: bytes <-> frozen dataclasses.

Theory of operation
-------------------
A TSQ message is a plain sequence of TLVs (1-byte type, 1-byte length of the value, value;
draft-mccollum-ntp-tsq-01 §4), carried raw on a QUIC stream or in one DATAGRAM frame.  What
deployed peers speak is the reference code, not the draft (shared/specs/tsq.md §3):

* request, 18 bytes: Nonce(1, 16 bytes);
* response, 38 bytes: Nonce(1) echoed, Receive Timestamp T2 (2, 8 bytes), Send Timestamp T3
  (3, 8 bytes), both 64-bit NTP format.  T1 and T4 never travel.

The draft's optional TLVs (247..255) are decoded into typed fields so that we can ask for and
serve clock quality, source info and metadata; signatures are parsed (and their position
checked) but not verified, as no key provisioning exists yet.

Rules (each a typed ``WireError`` with a stable ``reason``):

* every TLV must fit in the bytes given (``truncated``), and the known types have exact or
  minimum lengths (``tsq_bad_tlv``) -- we are strict where the reference is not, so a bad peer
  is counted rather than producing a wrong sample;
* type 0 must not be used (draft §4.1); types 4..246 are reserved and ignored (kept in
  ``unknown`` so they can be counted), as the draft requires;
* a request starts with its Nonce: the reference datagram server drops anything else and the
  reference stream server echoes bytes 2..17 blindly (spec §5, §4);
* mandatory TLVs appear once; Padding (254) is all zero bytes and may be followed only by the
  Signature Block (255), which is last (draft §5.9, §5.10);
* an Error TLV (249) stands alone in a response (draft §5.4).

Messages above ``MAX_MESSAGE`` bytes are refused (``oversized``): a request is 18 bytes plus a
few optional TLVs, and the cap bounds what a stream server buffers per stream.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from tsyncd.wire.errors import Truncated, WireError

__all__ = [
    "CLOCK_QUALITY_TAG_MAX",
    "MAX_MESSAGE",
    "MAX_TLV_VALUE",
    "NONCE_LEN",
    "REQUEST_LEN",
    "RESPONSE_LEN",
    "SOURCE_INFO_TEXT_MAX",
    "ClockClass",
    "ClockQuality",
    "ErrorCode",
    "MissingTlv",
    "Oversized",
    "Signature",
    "SourceInfo",
    "SourceType",
    "Tlv",
    "TlvType",
    "TsqBadTlv",
    "TsqErrorReply",
    "TsqRequest",
    "TsqResponse",
    "clip_utf8",
    "decode_request",
    "decode_response",
    "decode_tlvs",
    "encode_error",
    "encode_request",
    "encode_response",
]

NONCE_LEN: Final = 16
REQUEST_LEN: Final = 18  # the reference request: Nonce TLV only
RESPONSE_LEN: Final = 38  # the reference response: Nonce, T2, T3
MAX_TLV_VALUE: Final = 255  # bytes: the Length field is one byte
SOURCE_INFO_TEXT_MAX: Final = MAX_TLV_VALUE - 2  # after stratum and source type
CLOCK_QUALITY_TAG_MAX: Final = MAX_TLV_VALUE - 6  # after class, reserved, error and drift
MAX_MESSAGE: Final = 1200  # bytes; QUIC's minimum datagram size, far above any real message


class TlvType(enum.IntEnum):
    """TLV types (draft §4.2 and §5)."""

    NONCE = 1
    RECEIVE_TS = 2
    SEND_TS = 3
    METADATA_QUERY = 247
    CLOCK_QUALITY = 248
    ERROR = 249
    PRECISION_MODE = 250
    SOURCE_INFO = 251
    SIGNATURE_REQUEST = 252
    METADATA = 253
    PADDING = 254
    SIGNATURE = 255


class ClockClass(enum.IntEnum):
    """Clock Quality class (draft §5.3)."""

    UNKNOWN = 0
    GNSS = 1
    PTP_GRANDMASTER = 2
    NTP_SYNCED = 3
    LOCAL_OCXO = 4
    HOLDOVER = 5


class SourceType(enum.IntEnum):
    """Time Source Info source type (draft §5.6)."""

    GPS = 1
    PTP = 2
    NTP = 3
    MANUAL = 4
    UNKNOWN = 5


class ErrorCode(enum.IntEnum):
    """Error TLV codes (draft §5.4)."""

    MALFORMED = 1
    UNSUPPORTED_TLV = 2
    AUTH_REQUIRED = 3


class TsqBadTlv(WireError):
    """A TLV with a wrong length or content, a forbidden type, or in a forbidden place."""

    reason = "tsq_bad_tlv"


class MissingTlv(WireError):
    """A mandatory TLV is absent (or a request does not start with its Nonce)."""

    reason = "tsq_missing_tlv"


class Oversized(WireError):
    """The message is longer than any TSQ message we accept."""

    reason = "oversized"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tlv:
    """One raw TLV, as kept for unknown (reserved) types."""

    type: int  # 0..255
    value: bytes  # at most 255 bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockQuality:
    """Clock Quality Info (248): how good the server thinks its clock is."""

    clock_class: int  # ClockClass value; unknown values kept as ints
    error_us: int  # estimated error, µs, 0..65535 (saturated)
    drift_ppb: int  # frequency drift, ppb, 0..65535 (saturated)
    tag: str = ""  # free UTF-8 text


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInfo:
    """Time Source Info (251): where the server gets its time."""

    stratum: int  # 0 unsynchronized, 1 reference, 2+ as in NTP
    source_type: int  # SourceType value; unknown values kept as ints
    info: str = ""  # free UTF-8 text (e.g. the upstream's name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    """Signature Block (255), parsed but not verified."""

    algorithm: int  # 1 Ed25519, 2 HMAC-SHA256
    key_id: int  # u32
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TsqRequest:
    """A client's request."""

    nonce: bytes  # 16 bytes, echoed by the server
    metadata_query: bool = False  # 247: ask for metadata, clock quality and source info
    precision_mode: bool = False  # 250
    signature_request: bool = False  # 252
    padding: int = 0  # length of the Padding TLV value, or 0 for none
    unknown: tuple[Tlv, ...] = ()  # reserved types, ignored


@dataclass(frozen=True, slots=True, kw_only=True)
class TsqResponse:
    """A server's time response; timestamps are raw 64-bit NTP values (era not carried)."""

    nonce: bytes  # 16 bytes
    receive_ts: int  # T2, NTP 64-bit
    send_ts: int  # T3, NTP 64-bit
    clock_quality: ClockQuality | None = None
    source_info: SourceInfo | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # 253: (key, value) pairs in wire order
    precision_mode: bool = False  # 250 acknowledged
    padding: int = 0
    signature: Signature | None = None
    unknown: tuple[Tlv, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TsqErrorReply:
    """A server's Error TLV (249), alone in a stream response."""

    code: int  # ErrorCode value; unknown codes kept as ints
    reason: str


# --- TLV layer --------------------------------------------------------------------------------

_ZERO_LENGTH: Final = frozenset(
    {TlvType.METADATA_QUERY, TlvType.PRECISION_MODE, TlvType.SIGNATURE_REQUEST}
)
_EXACT_LENGTH: Final = {TlvType.NONCE: NONCE_LEN, TlvType.RECEIVE_TS: 8, TlvType.SEND_TS: 8}
_MIN_LENGTH: Final = {
    TlvType.CLOCK_QUALITY: 6,
    TlvType.ERROR: 2,
    TlvType.SOURCE_INFO: 2,
    TlvType.SIGNATURE: 7,
}
_CLOCK_QUALITY: Final = struct.Struct("!BBHH")
_SIGNATURE: Final = struct.Struct("!BIH")


def decode_tlvs(data: bytes) -> tuple[Tlv, ...]:
    """Split ``data`` into TLVs, checking each one's length and the ordering rules."""
    if len(data) > MAX_MESSAGE:
        raise Oversized(f"{len(data)} bytes, more than {MAX_MESSAGE}")
    tlvs: list[Tlv] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise Truncated(f"TLV header at offset {pos} cut off ({len(data) - pos} byte left)")
        kind, length = data[pos], data[pos + 1]
        end = pos + 2 + length
        if end > len(data):
            raise Truncated(f"TLV type {kind} at offset {pos} needs {length} bytes, has fewer")
        value = data[pos + 2 : end]
        _check_tlv(kind, value, pos)
        if tlvs and tlvs[-1].type == TlvType.SIGNATURE:
            raise TsqBadTlv(f"TLV type {kind} at offset {pos} after the Signature Block")
        if tlvs and tlvs[-1].type == TlvType.PADDING and kind != TlvType.SIGNATURE:
            raise TsqBadTlv(f"TLV type {kind} at offset {pos} after Padding")
        tlvs.append(Tlv(type=kind, value=value))
        pos = end
    return tuple(tlvs)


def _check_tlv(kind: int, value: bytes, pos: int) -> None:
    """Length and content rules of one known TLV type (draft §5)."""
    if kind == 0:
        raise TsqBadTlv(f"TLV type 0 at offset {pos} (must not be used)")
    if kind in _EXACT_LENGTH and len(value) != _EXACT_LENGTH[TlvType(kind)]:
        raise TsqBadTlv(
            f"TLV type {kind} at offset {pos}: length {len(value)}, "
            f"expected {_EXACT_LENGTH[TlvType(kind)]}"
        )
    if kind in _ZERO_LENGTH and value:
        raise TsqBadTlv(f"TLV type {kind} at offset {pos}: length {len(value)}, expected 0")
    if kind in _MIN_LENGTH and len(value) < _MIN_LENGTH[TlvType(kind)]:
        raise TsqBadTlv(
            f"TLV type {kind} at offset {pos}: length {len(value)}, "
            f"expected at least {_MIN_LENGTH[TlvType(kind)]}"
        )
    if kind == TlvType.PADDING and value.count(0) != len(value):
        raise TsqBadTlv(f"Padding at offset {pos} has non-zero bytes")
    if kind == TlvType.SIGNATURE:
        sig_len = _SIGNATURE.unpack_from(value)[2]
        if sig_len != len(value) - _SIGNATURE.size:
            raise TsqBadTlv(
                f"Signature Block at offset {pos}: signature length {sig_len}, "
                f"{len(value) - _SIGNATURE.size} bytes present"
            )


def clip_utf8(text: str, max_bytes: int) -> bytes:
    """``text`` in UTF-8, cut to at most ``max_bytes`` bytes on a character boundary."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data
    return data[:max_bytes].decode("utf-8", "ignore").encode()


def _tlv(kind: int, value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError(f"TLV type {kind} value of {len(value)} bytes does not fit (max 255)")
    return bytes((kind, len(value))) + value


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TsqBadTlv(f"{what} is not UTF-8") from None


def _once(tlvs: tuple[Tlv, ...], kind: TlvType) -> Tlv | None:
    found = [t for t in tlvs if t.type == kind]
    if len(found) > 1:
        raise TsqBadTlv(f"TLV type {int(kind)} appears {len(found)} times")
    return found[0] if found else None


def _unknown(tlvs: tuple[Tlv, ...]) -> tuple[Tlv, ...]:
    known = set(TlvType)
    return tuple(t for t in tlvs if t.type not in known)


# --- requests ---------------------------------------------------------------------------------


def encode_request(request: TsqRequest) -> bytes:
    """The request's bytes: Nonce first, then the optional TLVs (padding last)."""
    if len(request.nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes, not {len(request.nonce)}")
    out = _tlv(TlvType.NONCE, request.nonce)
    if request.metadata_query:
        out += _tlv(TlvType.METADATA_QUERY, b"")
    if request.precision_mode:
        out += _tlv(TlvType.PRECISION_MODE, b"")
    if request.signature_request:
        out += _tlv(TlvType.SIGNATURE_REQUEST, b"")
    for tlv in request.unknown:
        out += _tlv(tlv.type, tlv.value)
    if request.padding:
        out += _tlv(TlvType.PADDING, bytes(request.padding))
    return out


def decode_request(data: bytes) -> TsqRequest:
    """Parse a request; it must start with its Nonce (spec §14: never put anything before it)."""
    tlvs = decode_tlvs(data)
    if not tlvs or tlvs[0].type != TlvType.NONCE:
        raise MissingTlv("a TSQ request must start with a Nonce TLV")
    for kind in (TlvType.RECEIVE_TS, TlvType.SEND_TS, TlvType.ERROR, TlvType.SIGNATURE):
        if _once(tlvs, kind) is not None:
            raise TsqBadTlv(f"TLV type {int(kind)} is not allowed in a request")
    _once(tlvs, TlvType.NONCE)
    padding = _once(tlvs, TlvType.PADDING)
    return TsqRequest(
        nonce=tlvs[0].value,
        metadata_query=_once(tlvs, TlvType.METADATA_QUERY) is not None,
        precision_mode=_once(tlvs, TlvType.PRECISION_MODE) is not None,
        signature_request=_once(tlvs, TlvType.SIGNATURE_REQUEST) is not None,
        padding=len(padding.value) if padding is not None else 0,
        unknown=_unknown(tlvs),
    )


# --- responses --------------------------------------------------------------------------------


def encode_response(response: TsqResponse) -> bytes:
    """The response's bytes: the 38 reference bytes first, then the optional TLVs.

    The reference stream client reads at most 100 bytes (spec §3.4), so the mandatory part
    always leads.
    """
    if len(response.nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes, not {len(response.nonce)}")
    out = (
        _tlv(TlvType.NONCE, response.nonce)
        + _tlv(TlvType.RECEIVE_TS, response.receive_ts.to_bytes(8, "big"))
        + _tlv(TlvType.SEND_TS, response.send_ts.to_bytes(8, "big"))
    )
    if response.clock_quality is not None:
        q = response.clock_quality
        out += _tlv(
            TlvType.CLOCK_QUALITY,
            _CLOCK_QUALITY.pack(q.clock_class, 0, min(q.error_us, 0xFFFF), min(q.drift_ppb, 0xFFFF))
            + clip_utf8(q.tag, CLOCK_QUALITY_TAG_MAX),
        )
    if response.source_info is not None:
        s = response.source_info
        out += _tlv(
            TlvType.SOURCE_INFO,
            bytes((s.stratum, s.source_type)) + clip_utf8(s.info, SOURCE_INFO_TEXT_MAX),
        )
    if response.metadata:
        out += _tlv(TlvType.METADATA, _encode_metadata(response.metadata))
    if response.precision_mode:
        out += _tlv(TlvType.PRECISION_MODE, b"")
    for tlv in response.unknown:
        out += _tlv(tlv.type, tlv.value)
    if response.padding:
        out += _tlv(TlvType.PADDING, bytes(response.padding))
    if response.signature is not None:
        sig = response.signature
        out += _tlv(
            TlvType.SIGNATURE,
            _SIGNATURE.pack(sig.algorithm, sig.key_id, len(sig.signature)) + sig.signature,
        )
    return out


def encode_error(code: int, reason: str) -> bytes:
    """An Error TLV response (stream mode only); the reason is cut to fit one TLV."""
    text = reason.encode()[:253].decode("utf-8", "ignore").encode()
    return _tlv(TlvType.ERROR, bytes((code, 0)) + text)


def decode_response(data: bytes) -> TsqResponse | TsqErrorReply:
    """Parse a response: a time response, or an Error TLV standing alone."""
    tlvs = decode_tlvs(data)
    error = _once(tlvs, TlvType.ERROR)
    if error is not None:
        if len(tlvs) != 1:
            raise TsqBadTlv("an Error TLV must be alone in its response")
        return TsqErrorReply(code=error.value[0], reason=_text(error.value[2:], "Error reason"))
    nonce = _once(tlvs, TlvType.NONCE)
    t2 = _once(tlvs, TlvType.RECEIVE_TS)
    t3 = _once(tlvs, TlvType.SEND_TS)
    if nonce is None or t2 is None or t3 is None:
        missing = [
            name
            for name, t in (("Nonce", nonce), ("Receive Timestamp", t2), ("Send Timestamp", t3))
            if t is None
        ]
        raise MissingTlv("response without " + ", ".join(missing))
    for kind in (TlvType.METADATA_QUERY, TlvType.SIGNATURE_REQUEST):
        if _once(tlvs, kind) is not None:
            raise TsqBadTlv(f"TLV type {int(kind)} is not allowed in a response")
    quality = _once(tlvs, TlvType.CLOCK_QUALITY)
    source = _once(tlvs, TlvType.SOURCE_INFO)
    metadata = _once(tlvs, TlvType.METADATA)
    padding = _once(tlvs, TlvType.PADDING)
    signature = _once(tlvs, TlvType.SIGNATURE)
    return TsqResponse(
        nonce=nonce.value,
        receive_ts=int.from_bytes(t2.value, "big"),
        send_ts=int.from_bytes(t3.value, "big"),
        clock_quality=_decode_clock_quality(quality.value) if quality is not None else None,
        source_info=SourceInfo(
            stratum=source.value[0],
            source_type=source.value[1],
            info=_text(source.value[2:], "Time Source Info text"),
        )
        if source is not None
        else None,
        metadata=_decode_metadata(metadata.value) if metadata is not None else (),
        precision_mode=_once(tlvs, TlvType.PRECISION_MODE) is not None,
        padding=len(padding.value) if padding is not None else 0,
        signature=_decode_signature(signature.value) if signature is not None else None,
        unknown=_unknown(tlvs),
    )


def _decode_clock_quality(value: bytes) -> ClockQuality:
    clock_class, _reserved, error_us, drift_ppb = _CLOCK_QUALITY.unpack_from(value)
    return ClockQuality(
        clock_class=clock_class,
        error_us=error_us,
        drift_ppb=drift_ppb,
        tag=_text(value[_CLOCK_QUALITY.size :], "Clock Quality tag"),
    )


def _decode_signature(value: bytes) -> Signature:
    algorithm, key_id, _length = _SIGNATURE.unpack_from(value)
    return Signature(algorithm=algorithm, key_id=key_id, signature=value[_SIGNATURE.size :])


def _encode_metadata(pairs: tuple[tuple[str, str], ...]) -> bytes:
    """The pairs that fit in one TLV, in order; longer ones are left out, not cut (a cut key or
    value would say something else)."""
    out = b""
    for key, value in pairs:
        k, v = key.encode("utf-8", "replace"), value.encode("utf-8", "replace")
        item = bytes((len(k),)) + k + bytes((len(v),)) + v if max(len(k), len(v)) < 256 else b""
        if item and len(out) + len(item) <= MAX_TLV_VALUE:
            out += item
    return out


def _decode_metadata(value: bytes) -> tuple[tuple[str, str], ...]:
    """Metadata (253): 1-byte length + key, 1-byte length + value, repeated (draft §5.8)."""
    items: list[str] = []
    pos = 0
    while pos < len(value):
        end = pos + 1 + value[pos]
        if end > len(value):
            raise TsqBadTlv(f"Metadata item at offset {pos} overruns the TLV")
        items.append(_text(value[pos + 1 : end], "Metadata item"))
        pos = end
    if len(items) % 2:
        raise TsqBadTlv("Metadata has a key without a value")
    return tuple(zip(items[::2], items[1::2], strict=True))
