"""The minimal DNS codec: a captured-style dnsmasq answer, errors, and arbitrary bytes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsyncd.wire.dns import (
    BadDnsResponse,
    DnsAnswer,
    DnsError,
    QType,
    decode_response,
    encode_query,
)
from tsyncd.wire.errors import Truncated, WireError

QUERY = (
    bytes.fromhex("1234 0100 0001 0000 0000 0000") + b"\x04pool\x04test\x00" + b"\x00\x01\x00\x01"
)


def answer(qid: int = 0x1234, flags: int = 0x8580, records: bytes = b"", count: int = 2) -> bytes:
    header = struct.pack("!HHHHHH", qid, flags, 1, count, 0, 0)
    return header + QUERY[12:] + records


# Two A records whose owner is a compression pointer to the question name (offset 12).
RECORDS = (
    b"\xc0\x0c"
    + struct.pack("!HHIH", 1, 1, 300, 4)
    + bytes([127, 0, 0, 2])
    + b"\xc0\x0c"
    + struct.pack("!HHIH", 1, 1, 60, 4)
    + bytes([127, 0, 0, 4])
)


def test_encode_query() -> None:
    assert encode_query(0x1234, "pool.test.", QType.A) == QUERY
    assert encode_query(0x1234, "pool.test", QType.AAAA)[-4:] == b"\x00\x1c\x00\x01"


def test_decode_answer_with_compressed_names() -> None:
    got = decode_response(answer(records=RECORDS), 0x1234, "pool.test", QType.A)
    assert got == DnsAnswer(addresses=("127.0.0.2", "127.0.0.4"), ttl_s=60)


def test_decode_aaaa_and_skip_other_types() -> None:
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x0c"
    aaaa = b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 60, 16) + bytes(15) + b"\x01"
    query = encode_query(7, "pool.test", QType.AAAA)
    data = struct.pack("!HHHHHH", 7, 0x8180, 1, 2, 0, 0) + query[12:] + cname + aaaa
    assert decode_response(data, 7, "pool.test", QType.AAAA).addresses == ("::1",)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (answer(qid=1, records=RECORDS), BadDnsResponse),  # another query's id
        (answer(flags=0x0100, records=RECORDS), BadDnsResponse),  # a query, not a response
        (answer(flags=0x8780, records=RECORDS), BadDnsResponse),  # TC: truncated
        (answer(flags=0x8583, count=0), DnsError),  # NXDOMAIN
        (answer(records=RECORDS[:20]), Truncated),
        (answer(records=b"\xc0\x20" * 2, count=1), WireError),  # pointer into itself
        (b"\x12\x34", Truncated),
    ],
)
def test_bad_responses(data: bytes, error: type[WireError]) -> None:
    with pytest.raises(error):
        decode_response(data, 0x1234, "pool.test", QType.A)


def test_pointer_loop_is_caught() -> None:
    header = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 0, 0, 0)
    with pytest.raises(BadDnsResponse):
        decode_response(header + b"\xc0\x0c", 0x1234, "pool.test", QType.A)


@given(st.binary(max_size=200), st.integers(0, 4))
def test_arbitrary_records_give_an_answer_or_a_wire_error(data: bytes, count: int) -> None:
    for message in (answer(records=data, count=count), QUERY[:2] + data):
        with contextlib.suppress(WireError):
            got = decode_response(message, 0x1234, "pool.test", QType.A)
            assert len(got.addresses) <= count
