"""Fuzz every NTS parser: arbitrary bytes give a message or a WireError, nothing else."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.nts import decode_authenticator, decode_inner, split_nts
from tsyncd.wire.ntske import (
    KeResponse,
    Record,
    RecordParser,
    decode_records,
    decode_request,
    decode_response,
    encode_record,
    encode_response,
)

# 300 examples in the suite, more under --hypothesis-profile=fuzz (tests/conftest.py)
EXAMPLES = settings(max_examples=max(300, settings.default.max_examples), deadline=None)
KEYS = KeySet(1, bytes(32), 86400)
SESSION = CookieContents(aead_id=15, c2s=b"c" * 32, s2c=b"s" * 32)


@EXAMPLES
@given(st.binary(max_size=300))
def test_ke_decoders_total(data: bytes) -> None:
    try:
        records = decode_records(data)
    except WireError:
        return
    for decode in (decode_request, decode_response):
        with contextlib.suppress(WireError):
            decode(records)


@EXAMPLES
@given(st.binary(max_size=200), st.integers(1, 7))
def test_stream_parser_chunking_agrees(data: bytes, step: int) -> None:
    whole: list[Record] | str
    try:
        whole = list(decode_records(data))
    except WireError as exc:
        whole = exc.reason
    parser = RecordParser()
    parts: list[Record] | str = []
    try:
        for i in range(0, len(data), step):
            parts += parser.feed(data[i : i + step])  # type: ignore[operator]
        parser.close()
    except WireError as exc:
        parts = exc.reason
    assert (whole == parts) or (isinstance(whole, str) and isinstance(parts, str))


@EXAMPLES
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8), st.integers(0, 0xFFFF))
def test_response_round_trip(cookies: list[bytes], port: int) -> None:
    resp = KeResponse(next_protocol=0, aead=15, cookies=tuple(cookies), port=port)
    assert decode_response(decode_records(encode_response(resp))) == resp


@EXAMPLES
@given(st.binary(max_size=120))
def test_ef_decoders_total(data: bytes) -> None:
    for decode in (decode_inner, decode_authenticator):
        with contextlib.suppress(WireError):
            decode(data)
    with contextlib.suppress(WireError):
        KEYS.open(data)


@EXAMPLES
@given(st.binary(max_size=400), st.integers(0, 400))
def test_server_and_client_paths_total(junk: bytes, cut: int) -> None:
    session = NtsSession(15, SESSION.c2s, SESSION.s2c, [KEYS.seal(SESSION)])
    request = session.protect(encode_ntp(NtpPacket()))
    assert request is not None
    server = NtsResponder(KEYS)
    for data in (request[:cut] + junk, encode_ntp(NtpPacket()) + junk):
        try:
            packet = decode_ntp(data)
        except WireError:
            continue
        _reason, response = server.respond(data, packet, NtpPacket())
        assert response is None or len(response) <= len(data)
        assert session.verify(data, packet) is not None


_EFS = st.lists(
    st.tuples(
        st.sampled_from([0x0104, 0x0204, 0x0304, 0x0404, 0xFFF0]),
        st.integers(0, 40).map(lambda n: n * 4),
        st.binary(min_size=0, max_size=8),
    ),
    max_size=5,
)


@EXAMPLES
@given(st.integers(48, 400), st.binary(max_size=200), _EFS, st.sampled_from([0, 4, 20, 24]))
def test_raw_server_path_agrees_with_the_decoders(
    cut: int, junk: bytes, efs: list[tuple[int, int, bytes]], mac: int
) -> None:
    """respond_raw parses the datagram itself: its verdict must match decode_ntp + split_nts."""
    session = NtsSession(15, SESSION.c2s, SESSION.s2c, [KEYS.seal(SESSION)])
    request = session.protect(encode_ntp(NtpPacket()))
    assert request is not None
    # EF headers with the given lengths (some illegal), bodies that start with ``head``.
    framed = b"".join(
        struct.pack("!HH", t, n) + (head + bytes(n))[: max(n - 4, 0)] for t, n, head in efs
    )
    plain = encode_ntp(NtpPacket())
    for data in (request[:cut] + junk, request[:cut] + framed + bytes(mac), plain + framed):
        reason, response = NtsResponder(KEYS).respond_raw(data, plain)
        assert response is None or len(response) <= len(data)
        try:
            packet = decode_ntp(data)
        except WireError as exc:
            assert reason == f"malformed_{exc.reason}"
            continue
        try:
            fields = split_nts(data, packet)
        except WireError as exc:
            assert reason == f"nts_{exc.reason}"
            continue
        if fields.unique_id is None and fields.cookie is None and fields.nonce is None:
            assert (reason, response) == ("answered", plain)
        else:
            assert reason.startswith(("answered_nts", "nts_"))


def test_record_encoding_sanity() -> None:
    assert encode_record(Record(critical=True, record_type=0, body=b"")) == b"\x80\x00\x00\x00"
