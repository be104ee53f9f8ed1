"""JSON-RPC 2.0 framing and errors shared by the control server and ``tsyncctl``.

Theory of operation: the control socket carries one JSON object per line in both directions
(newline-delimited JSON, UTF-8).  This module is sans-IO: it turns bytes into requests and
responses and back, and splits a byte stream into capped lines; the asyncio server and the
blocking client only move bytes.  Batches (a JSON array) are refused: one object per line keeps
a request and its answer easy to match by eye in a socket trace.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

JSONRPC_VERSION = "2.0"


class ErrorCode(IntEnum):
    """JSON-RPC 2.0 error codes (the spec's own, then ours in the -32000..-32099 range)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    PERMISSION_DENIED = -32001
    SERVER_BUSY = -32002
    LINE_TOO_LONG = -32003


class RpcError(Exception):
    """A JSON-RPC error to send back (server) or that came back (client).

    Handlers raise it (or ``InvalidParams``) to answer with a specific code; the message must
    say what went wrong and what to do about it.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """Return the JSON-RPC ``error`` member for this error."""
        error: dict[str, Any] = {"code": int(self.code), "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class InvalidParams(RpcError):
    """A handler's parameters are missing or of the wrong type (-32602)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_PARAMS, message)


RequestId = str | int | float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One parsed JSON-RPC request."""

    id: RequestId  # None for a request with "id": null
    method: str
    params: dict[str, Any]
    notification: bool  # no "id" member: run it, send nothing back


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """One parsed JSON-RPC response: exactly one of ``result``/``error`` is meaningful."""

    id: RequestId
    result: Any
    error: RpcError | None


class LineTooLong(Exception):
    """The peer sent more than the line cap without a newline."""


class LineSplitter:
    """Split a byte stream into lines (without the newline), refusing lines over a cap.

    Feed it whatever ``recv`` returned; it returns the complete lines so far and keeps the rest.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete lines, or raise ``LineTooLong`` past the cap."""
        self._buffer += data
        lines: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            if end > self._max:
                raise LineTooLong(f"line of {end} bytes exceeds the limit of {self._max}")
            lines.append(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
        if len(self._buffer) > self._max:
            raise LineTooLong(
                f"more than {self._max} bytes without a newline (limit {self._max} per line)"
            )
        return lines

    @property
    def pending(self) -> int:
        """Bytes buffered after the last complete line."""
        return len(self._buffer)


def jsonable(value: Any) -> Any:
    """Return ``value`` with non-finite floats replaced by None.

    JSON has no NaN or infinity; Python's ``json`` would emit invalid tokens that other
    parsers (jq, Go, browsers) reject, so an unknown measurement becomes null.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def encode_message(message: dict[str, Any]) -> bytes:
    """Serialise one message as a line: compact UTF-8 JSON plus ``\\n``.

    Raises TypeError/ValueError if the message holds something JSON cannot carry.
    """
    text = json.dumps(jsonable(message), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def make_request(request_id: RequestId, method: str, params: dict[str, Any] | None) -> bytes:
    """Encode a request line."""
    message: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION, "id": request_id, "method": method}
    if params:
        message["params"] = params
    return encode_message(message)


def make_result(request_id: RequestId, result: Any) -> bytes:
    """Encode a success response line."""
    return encode_message({"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": result})


def make_error(request_id: RequestId, error: RpcError) -> bytes:
    """Encode an error response line."""
    return encode_message({"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": error.to_json()})


def _valid_id(value: Any) -> bool:
    # JSON-RPC 2.0 §4: an id is a string, a number or null (bool is not a number here, nor
    # NaN or infinity, which JSON cannot write).
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


def _loads(line: bytes, not_json: list[str]) -> Any:
    """``json.loads`` of a line; the NaN/Infinity tokens Python's json accepts (JSON has no
    such numbers) are appended to ``not_json``.  Raises UnicodeDecodeError, ValueError
    (JSONDecodeError, or an integer over Python's 4300-digit limit) or RecursionError (nested
    too deeply)."""

    def constant(token: str) -> float:
        not_json.append(token)
        return float(token)

    return json.loads(line.decode("utf-8"), parse_constant=constant)


def parse_request(line: bytes) -> Request:
    """Parse one request line.

    Raises ``RpcError`` with PARSE_ERROR or INVALID_REQUEST; its ``data`` is unused, and the
    caller answers with id null when the id could not be read (JSON-RPC 2.0 §5).
    """
    not_json: list[str] = []
    try:
        message = _loads(line, not_json)
    except UnicodeDecodeError as exc:
        raise RpcError(ErrorCode.PARSE_ERROR, f"parse error: request is not UTF-8 ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise RpcError(
            ErrorCode.PARSE_ERROR, f"parse error: invalid JSON at column {exc.colno}: {exc.msg}"
        ) from exc
    except ValueError as exc:  # Python's limit on integer digits
        raise RpcError(ErrorCode.PARSE_ERROR, f"parse error: {exc}") from exc
    except RecursionError as exc:
        raise RpcError(ErrorCode.PARSE_ERROR, "parse error: JSON nested too deeply") from exc
    if isinstance(message, list):
        raise RpcError(
            ErrorCode.INVALID_REQUEST,
            "invalid request: batches are not supported; send one JSON object per line",
        )
    if not isinstance(message, dict):
        raise RpcError(ErrorCode.INVALID_REQUEST, "invalid request: expected a JSON object")
    if message.get("jsonrpc") != JSONRPC_VERSION:
        raise RpcError(ErrorCode.INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    method = message.get("method")
    if not isinstance(method, str):
        raise RpcError(ErrorCode.INVALID_REQUEST, 'invalid request: "method" must be a string')
    notification = "id" not in message
    request_id = message.get("id")
    if not _valid_id(request_id):
        raise RpcError(
            ErrorCode.INVALID_REQUEST, 'invalid request: "id" must be a string, number or null'
        )
    if not_json:
        raise RpcError(
            ErrorCode.INVALID_REQUEST, f"invalid request: {not_json[0]} is not a JSON number"
        )
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(
            ErrorCode.INVALID_PARAMS,
            f"invalid params for '{method}': params must be a JSON object (named parameters)",
        )
    return Request(id=request_id, method=method, params=params, notification=notification)


def request_id_of(line: bytes) -> RequestId:
    """Best-effort id of a request that failed validation, so the error can still be matched."""
    try:
        message = _loads(line, [])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(message, dict):
        request_id = message.get("id")
        if _valid_id(request_id):
            return request_id
    return None


def parse_response(line: bytes) -> Response:
    """Parse one response line (client side).

    Raises ``ValueError`` with a short description if the line is not a JSON-RPC response.
    """
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from exc
    if not isinstance(message, dict) or message.get("jsonrpc") != JSONRPC_VERSION:
        raise ValueError("not a JSON-RPC 2.0 object")
    request_id = message.get("id")
    if not _valid_id(request_id):
        raise ValueError("response id is not a string, number or null")
    if "error" in message:
        error = message["error"]
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or not isinstance(error.get("message"), str)
        ):
            raise ValueError("malformed error object")
        return Response(
            id=request_id,
            result=None,
            error=RpcError(error["code"], error["message"], error.get("data")),
        )
    if "result" not in message:
        raise ValueError("response has neither result nor error")
    return Response(id=request_id, result=message["result"], error=None)
