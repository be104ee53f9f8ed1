"""NTS-KE record codec: one table drives encode and decode; the stream parser is fed whole,
byte by byte and with trailing bytes (STYLE.md §8)."""

from __future__ import annotations

import pytest

from tsyncd.wire.errors import Truncated
from tsyncd.wire.ntske import (
    KeError,
    KeErrorCode,
    KeRequest,
    KeResponse,
    Record,
    RecordParser,
    decode_records,
    decode_request,
    decode_response,
    encode_record,
    encode_request,
    encode_response,
)

# chrony 4.3's response head as captured on loopback (spec §8): NextProto, AEAD (critical!),
# Port (critical), one 4-byte cookie here instead of eight 100-byte ones, End of Message.
CHRONY_RESPONSE = bytes.fromhex(
    "80010002 0000"  # C=1 Next Protocol [0]
    "80040002 000f"  # C=1 AEAD [15]
    "80070002 1f90"  # C=1 Port 8080
    "00050004 deadbeef"  # C=0 New Cookie
    "80000000"  # End of Message
)

CASES = [
    (Record(critical=True, record_type=0, body=b""), "80000000"),
    (Record(critical=True, record_type=1, body=b"\x00\x00"), "800100020000"),
    (Record(critical=False, record_type=1024, body=b""), "04000000"),
    (Record(critical=False, record_type=0x7FFF, body=b"ab"), "7fff00026162"),
]


@pytest.mark.parametrize(("record", "hex_"), CASES)
def test_record_table(record: Record, hex_: str) -> None:
    wire = bytes.fromhex(hex_)
    assert encode_record(record) == wire
    end = encode_record(Record(critical=True, record_type=0, body=b""))
    msg = wire if record.record_type == 0 else wire + end
    assert decode_records(msg)[0] == record


def test_chrony_response_whole_and_byte_by_byte() -> None:
    whole = decode_records(CHRONY_RESPONSE)
    parser = RecordParser()
    pieces = [
        r for i in range(len(CHRONY_RESPONSE)) for r in parser.feed(CHRONY_RESPONSE[i : i + 1])
    ]
    parser.close()
    assert tuple(pieces) == whole
    response = decode_response(whole)
    assert response == KeResponse(
        next_protocol=0, aead=15, cookies=(b"\xde\xad\xbe\xef",), server=None, port=8080
    )


def test_trailing_bytes_after_end_of_message() -> None:
    with pytest.raises(KeError):
        decode_records(CHRONY_RESPONSE + b"\x00")
    parser = RecordParser()
    parser.feed(CHRONY_RESPONSE)
    with pytest.raises(KeError):
        parser.feed(b"x")


def test_truncated_stream() -> None:
    parser = RecordParser()
    parser.feed(CHRONY_RESPONSE[:-1])
    assert not parser.done
    with pytest.raises(Truncated):
        parser.close()


def test_buffer_cap() -> None:
    parser = RecordParser(max_len=64)
    with pytest.raises(KeError):
        parser.feed(encode_record(Record(critical=False, record_type=5, body=bytes(100))))
    parser = RecordParser(max_len=64)
    with pytest.raises(KeError):  # a header promising more than the cap fails before the body
        parser.feed(bytes.fromhex("0005ffff"))


def test_request_round_trip_and_rules() -> None:
    req = KeRequest(aead_algorithms=(30, 15), compliant_gcm_siv=True, server="a.example", port=9)
    assert decode_request(decode_records(encode_request(req))) == req
    eom = "80000000"
    bad = {
        "no next protocol": "80040002000f" + eom,
        "next protocol not critical": "00010002 0000" + eom,
        "ntpv4 without aead": "800100020000" + eom,
        "cookie in request": "800100020000 80040002000f 00050001ff" + eom,
        "odd aead list": "800100020000 80040003000f00" + eom,
    }
    for why, hex_ in bad.items():
        with pytest.raises(KeError) as info:
            decode_request(decode_records(bytes.fromhex(hex_)))
        assert info.value.code == KeErrorCode.BAD_REQUEST, why
    critical = bytes.fromhex("800100020000 80040002000f 81230000" + eom)
    with pytest.raises(KeError) as info:
        decode_request(decode_records(critical))
    assert info.value.code == KeErrorCode.UNRECOGNIZED_CRITICAL_RECORD
    ignored = bytes.fromhex("800100020000 80040002000f 01230000" + eom)
    assert decode_request(decode_records(ignored)).aead_algorithms == (15,)


def test_response_error_and_warning() -> None:
    err = decode_response(decode_records(encode_response(KeResponse(error=1))))
    assert err.error == 1
    warn = decode_response(decode_records(bytes.fromhex("80030002 0007 80000000")))
    assert warn.warnings == (7,)
    with pytest.raises(KeError):
        decode_response(decode_records(bytes.fromhex("80000000")))


def test_response_round_trip() -> None:
    resp = KeResponse(
        next_protocol=0,
        aead=30,
        cookies=(b"a" * 72,) * 8,
        server="::1",
        port=4123,
        compliant_gcm_siv=True,
    )
    assert decode_response(decode_records(encode_response(resp))) == resp


def test_response_record_rules_name_the_record() -> None:
    # §4.1.5: with NTPv4 chosen the AEAD record must be there (empty means "none of yours").
    with pytest.raises(KeError, match="chose NTPv4 but sent no AEAD Algorithm Negotiation record"):
        decode_response(decode_records(bytes.fromhex("80010002 0000 80000000")))
    nothing = decode_response(decode_records(bytes.fromhex("80010000 80000000")))
    assert nothing.next_protocol is None and nothing.aead is None  # no protocol, no AEAD: fine
    with pytest.raises(KeError, match=r"^Server Negotiation record \(type 6\): body is empty"):
        decode_response(
            decode_records(bytes.fromhex("800100020000 80040002000f 80060000 80000000"))
        )
    with pytest.raises(KeError, match=r"^Port Negotiation record \(type 7\): body must be 2"):
        decode_response(
            decode_records(bytes.fromhex("800100020000 80040002000f 80070000 80000000"))
        )
