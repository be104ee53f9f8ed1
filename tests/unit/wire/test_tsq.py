"""TSQ codec: spelled-out bytes from the reference (shared/specs/tsq.md §3) and the draft."""

from __future__ import annotations

import pytest

from tsyncd.wire.errors import Truncated, WireError
from tsyncd.wire.tsq import (
    ClockQuality,
    MissingTlv,
    Oversized,
    Signature,
    SourceInfo,
    Tlv,
    TsqBadTlv,
    TsqErrorReply,
    TsqRequest,
    TsqResponse,
    clip_utf8,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
)

NONCE = bytes.fromhex("4b297f97d35b731af930a419a80c5d98")
# The response captured from the reference stream server (spec §3.2).
CAPTURED = bytes.fromhex(
    "01104b297f97d35b731af930a419a80c5d980208eeae05f0ab01a5930308eeae05f0ab023136"
)


def test_reference_request_is_18_bytes() -> None:
    data = encode_request(TsqRequest(nonce=NONCE))
    assert data == bytes.fromhex("0110") + NONCE and len(data) == 18
    assert decode_request(data) == TsqRequest(nonce=NONCE)


def test_adjtime_fixed_nonce_request() -> None:
    data = bytes.fromhex("01100102030405060708090a0b0c0d0e0f10")
    assert decode_request(data).nonce == bytes(range(1, 17))


def test_captured_reference_response() -> None:
    reply = decode_response(CAPTURED)
    assert reply == TsqResponse(
        nonce=NONCE, receive_ts=0xEEAE05F0AB01A593, send_ts=0xEEAE05F0AB023136
    )
    assert encode_response(reply) == CAPTURED and len(CAPTURED) == 38


def test_response_order_is_free_for_clients() -> None:
    """Reference clients look TLVs up by type; so do we."""
    reordered = CAPTURED[28:] + CAPTURED[:28]
    reply = decode_response(reordered)
    assert isinstance(reply, TsqResponse) and reply.send_ts == 0xEEAE05F0AB023136


def test_request_optional_tlvs() -> None:
    request = TsqRequest(
        nonce=NONCE, metadata_query=True, precision_mode=True, signature_request=True, padding=3
    )
    data = encode_request(request)
    assert data == bytes.fromhex("0110") + NONCE + bytes.fromhex("f700fa00fc00fe03000000")
    assert decode_request(data) == request


def test_unknown_types_are_skipped_and_kept() -> None:
    data = bytes.fromhex("0110") + NONCE + bytes.fromhex("0402abcdf600")
    request = decode_request(data)
    assert request.unknown == (Tlv(type=4, value=b"\xab\xcd"), Tlv(type=246, value=b""))
    assert encode_request(request) == data


def test_response_optional_tlvs_round_trip() -> None:
    response = TsqResponse(
        nonce=NONCE,
        receive_ts=1,
        send_ts=2,
        clock_quality=ClockQuality(clock_class=3, error_us=250, drift_ppb=17, tag="ntp"),
        source_info=SourceInfo(stratum=2, source_type=3, info="127.0.0.1"),
        metadata=(("server", "tsyncd"),),
        precision_mode=True,
        padding=2,
        signature=Signature(algorithm=1, key_id=7, signature=b"\x01\x02"),
    )
    data = encode_response(response)
    assert data[:38] == bytes.fromhex("0110") + NONCE + bytes.fromhex(
        "0208000000000000000103080000000000000002"
    )
    assert data[38:] == bytes.fromhex(
        "f809"
        "03"
        "00"
        "00fa"
        "0011"
        "6e7470"
        "fb0b"
        "02"
        "03"
        "3132372e302e302e31"
        "fd0e"
        "06"
        "736572766572"
        "06"
        "7473796e6364"
        "fa00"
        "fe020000"
        "ff09"
        "01"
        "00000007"
        "0002"
        "0102"
    )
    assert decode_response(data) == response


def test_error_reply() -> None:
    data = encode_error(1, "Request too short")
    assert data == bytes.fromhex("f9130100") + b"Request too short"
    assert decode_response(data) == TsqErrorReply(code=1, reason="Request too short")
    with pytest.raises(TsqBadTlv, match="alone"):
        decode_response(CAPTURED + data)


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"", MissingTlv, "tsq_missing_tlv"),
        (bytes.fromhex("01"), Truncated, "truncated"),
        (bytes.fromhex("0110") + NONCE[:15], Truncated, "truncated"),
        (bytes.fromhex("010f") + NONCE[:15], TsqBadTlv, "tsq_bad_tlv"),  # nonce length 15
        (bytes.fromhex("fe00") + bytes.fromhex("0110") + NONCE, TsqBadTlv, "tsq_bad_tlv"),
        (bytes.fromhex("f700") + bytes.fromhex("0110") + NONCE, MissingTlv, "tsq_missing_tlv"),
        (bytes.fromhex("0110") + NONCE + bytes.fromhex("0000"), TsqBadTlv, "tsq_bad_tlv"),
        (bytes.fromhex("0110") + NONCE * 2 + bytes.fromhex("0110"), Truncated, "truncated"),
        (bytes.fromhex("0110") + NONCE + bytes.fromhex("0110") + NONCE, TsqBadTlv, "tsq_bad_tlv"),
        (bytes.fromhex("0110") + NONCE + bytes.fromhex("f701ff"), TsqBadTlv, "tsq_bad_tlv"),
        (bytes.fromhex("0110") + NONCE + bytes.fromhex("fe0101"), TsqBadTlv, "tsq_bad_tlv"),
        (bytes.fromhex("0110") + NONCE + CAPTURED[18:28], TsqBadTlv, "tsq_bad_tlv"),
        (
            bytes.fromhex("0110") + NONCE + bytes.fromhex("04ff") + bytes(255) * 5,
            Oversized,
            "oversized",
        ),
    ],
)
def test_bad_requests(data: bytes, error: type[Exception], reason: str) -> None:
    with pytest.raises(error) as info:
        decode_request(data)
    assert isinstance(info.value, WireError) and info.value.reason == reason


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (CAPTURED[:18] + CAPTURED[28:], MissingTlv),  # no T2
        (CAPTURED[:37], Truncated),
        (CAPTURED[:18] + bytes.fromhex("0207") + bytes(7) + CAPTURED[28:], TsqBadTlv),
        (CAPTURED + CAPTURED[18:28], TsqBadTlv),  # T2 twice
        (CAPTURED + bytes.fromhex("f802000000"), TsqBadTlv),  # clock quality too short
        (CAPTURED + bytes.fromhex("fb020203") + bytes.fromhex("fb020203"), TsqBadTlv),
        (CAPTURED + bytes.fromhex("fb030203ff"), TsqBadTlv),  # info not UTF-8
        (CAPTURED + bytes.fromhex("fd03026b65"), TsqBadTlv),  # key without value
        (CAPTURED + bytes.fromhex("fd02056b"), TsqBadTlv),  # item overruns
        (CAPTURED + bytes.fromhex("ff080100000007000201"), TsqBadTlv),  # sig length
        (CAPTURED + bytes.fromhex("ff0701000000070000fa00"), TsqBadTlv),  # after sig
        (CAPTURED + bytes.fromhex("f700"), TsqBadTlv),  # request-only TLV
    ],
)
def test_bad_responses(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_response(data)


def test_encoder_refuses_our_own_bugs() -> None:
    with pytest.raises(ValueError):
        encode_request(TsqRequest(nonce=b"short"))
    with pytest.raises(ValueError):
        encode_response(TsqResponse(nonce=NONCE, receive_ts=0, send_ts=0, padding=300))


def test_long_texts_are_clipped_to_the_tlv_on_a_character_boundary() -> None:
    """A Time Source Info of 300 bytes (100 x '€', 3 bytes each) would not fit the 1-byte
    length: the encoder cuts it to 253 bytes on a character boundary (84 '€'), and the
    Clock Quality tag to 249; metadata pairs that do not fit are left out."""
    reply = TsqResponse(
        nonce=NONCE,
        receive_ts=1,
        send_ts=2,
        clock_quality=ClockQuality(clock_class=3, error_us=1, drift_ppb=2, tag="é" * 200),
        source_info=SourceInfo(stratum=2, source_type=3, info="€" * 100),
        metadata=(("implementation", "tsyncd"), ("long", "x" * 300), ("more", "y" * 250)),
    )
    decoded = decode_response(encode_response(reply))
    assert isinstance(decoded, TsqResponse)
    assert decoded.source_info is not None and decoded.source_info.info == "€" * 84
    assert decoded.clock_quality is not None and decoded.clock_quality.tag == "é" * 124
    assert decoded.metadata == (("implementation", "tsyncd"),)
    assert clip_utf8("a€", 3) == b"a" and clip_utf8("a€", 4) == "a€".encode()
