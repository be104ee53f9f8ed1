"""JSON-RPC framing shared by the control server and tsyncctl (sans-IO)."""

from __future__ import annotations

import json

import pytest

from tsyncd.control.rpc import (
    ErrorCode,
    InvalidParams,
    LineSplitter,
    LineTooLong,
    RpcError,
    encode_message,
    make_error,
    make_request,
    make_result,
    parse_request,
    parse_response,
    request_id_of,
)

STREAM = b'{"a":1}\n{"b":2}\n\n{"c":3}\n'
LINES = [b'{"a":1}', b'{"b":2}', b"", b'{"c":3}']


def test_line_splitter_whole_and_byte_by_byte() -> None:
    assert LineSplitter(100).feed(STREAM) == LINES
    splitter = LineSplitter(100)
    got: list[bytes] = []
    for i in range(len(STREAM)):
        got += splitter.feed(STREAM[i : i + 1])
    assert got == LINES
    assert splitter.pending == 0


def test_line_splitter_keeps_trailing_bytes() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(STREAM + b'{"d"') == LINES
    assert splitter.pending == 4
    assert splitter.feed(b":4}\n") == [b'{"d":4}']


def test_line_splitter_cap() -> None:
    assert LineSplitter(4).feed(b"abcd\n") == [b"abcd"]  # exactly the cap
    with pytest.raises(LineTooLong):
        LineSplitter(4).feed(b"abcde\n")
    with pytest.raises(LineTooLong):
        LineSplitter(4).feed(b"abcde")  # no newline yet, but already too long


def test_request_round_trip() -> None:
    line = make_request(7, "status", {"verbose": True})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = parse_request(line)
    assert (request.id, request.method, request.params) == (7, "status", {"verbose": True})
    assert not request.notification
    assert parse_request(make_request(8, "status", None)).params == {}


def test_non_finite_floats_become_null() -> None:
    line = make_result(1, {"offset": float("nan"), "delay": [float("inf"), 1.5]})
    assert json.loads(line) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"offset": None, "delay": [None, 1.5]},
    }


def test_unserialisable_result_raises_type_error() -> None:
    with pytest.raises(TypeError):
        encode_message({"x": object()})


def test_response_parsing() -> None:
    ok = parse_response(make_result("a", [1, 2]))
    assert (ok.id, ok.result, ok.error) == ("a", [1, 2], None)
    err = parse_response(make_error(3, InvalidParams("need 'name'")))
    assert err.error is not None
    assert (err.id, err.error.code, err.error.message) == (
        3,
        ErrorCode.INVALID_PARAMS,
        "need 'name'",
    )


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"jsonrpc":"1.0","id":1,"result":1}',
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}',
        b'{"jsonrpc":"2.0","id":{},"result":1}',
    ],
)
def test_malformed_responses(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(line)


def test_rpc_error_data_is_carried() -> None:
    error = RpcError(-32000, "busy", data={"retry_after": 1})
    assert error.to_json() == {"code": -32000, "message": "busy", "data": {"retry_after": 1}}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b'{"jsonrpc":"2.0","id":' + b"1" * 5000 + b',"method":"status"}', ErrorCode.PARSE_ERROR),
        (b"[" * 5000 + b"]" * 5000, ErrorCode.PARSE_ERROR),
        (b'{"jsonrpc":"2.0","id":NaN,"method":"status"}', ErrorCode.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":Infinity,"method":"status"}', ErrorCode.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":"s","params":{"x":NaN}}', ErrorCode.INVALID_REQUEST),
    ],
)
def test_what_python_json_rejects_or_wrongly_accepts_is_an_rpc_error(
    line: bytes, code: ErrorCode
) -> None:
    with pytest.raises(RpcError) as info:
        parse_request(line)
    assert info.value.code == code
    assert request_id_of(line) in (None, 1)  # never raises either
