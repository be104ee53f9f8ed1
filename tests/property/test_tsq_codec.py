"""Fuzzing the TSQ codec: any bytes give a message or a WireError, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tsyncd.wire.errors import WireError
from tsyncd.wire.tsq import (
    TsqErrorReply,
    TsqRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

# 400 examples in the suite, more under --hypothesis-profile=fuzz (tests/conftest.py)
EXAMPLES = settings(max_examples=max(400, settings.default.max_examples), deadline=None)


def _tlv_soup() -> st.SearchStrategy[bytes]:
    """Byte strings built from plausible TLVs (so decoding goes deep), sometimes cut."""
    tlv = st.tuples(
        st.sampled_from([0, 1, 2, 3, 4, 200, 247, 248, 249, 250, 251, 252, 253, 254, 255]),
        st.binary(max_size=40),
    ).map(lambda t: bytes((t[0], len(t[1]))) + t[1])
    return st.tuples(st.lists(tlv, max_size=6), st.integers(0, 3)).map(
        lambda t: b"".join(t[0])[: max(0, len(b"".join(t[0])) - t[1])]
    )


@EXAMPLES
@given(st.one_of(st.binary(max_size=1300), _tlv_soup()))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        try:
            message = decode(data)
        except WireError as exc:
            assert exc.reason
            continue
        if isinstance(message, TsqRequest):
            assert len(message.nonce) == 16
            assert decode_request(encode_request(message)) == message
        elif not isinstance(message, TsqErrorReply):
            assert decode_response(encode_response(message)) == message


@EXAMPLES
@given(st.binary(min_size=16, max_size=16), st.booleans(), st.integers(0, 255))
def test_requests_round_trip(nonce: bytes, query: bool, padding: int) -> None:
    request = TsqRequest(nonce=nonce, metadata_query=query, padding=padding)
    assert decode_request(encode_request(request)) == request
