"""Blocking JSON-RPC client for the tsyncd control socket.

A CLI makes one or two calls and exits, so a plain blocking socket with a timeout is enough.
Every failure becomes ``ControlError`` carrying one sentence a person can act on.
"""

from __future__ import annotations

import errno
import socket
import stat
from pathlib import Path
from types import TracebackType
from typing import Any

from tsyncd.control.rpc import LineSplitter, LineTooLong, make_request, parse_response

# Responses can be larger than requests (a long source list); cap them to stay bounded anyway.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class ControlError(Exception):
    """A control call failed; ``str(error)`` is the message to show, ``code`` the RPC code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ControlClient:
    """Calls methods on tsyncd's control socket; usable as a context manager."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._splitter = LineSplitter(MAX_RESPONSE_BYTES)
        self._lines: list[bytes] = []
        self._next_id = 1

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._splitter = LineSplitter(MAX_RESPONSE_BYTES)
        self._lines = []

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call ``method`` and return its result; raise ``ControlError`` on any failure."""
        sock = self._connect()
        request_id = self._next_id
        self._next_id += 1
        try:
            sock.sendall(make_request(request_id, method, params))
            while True:
                line = self._read_line(sock)
                try:
                    response = parse_response(line)
                except ValueError as exc:
                    raise ControlError(f"tsyncd sent an invalid response: {exc}") from None
                if response.id != request_id and response.id is not None:
                    continue  # an answer to an earlier, abandoned call
                if response.error is not None:
                    raise ControlError(response.error.message, response.error.code)
                return response.result
        except ControlError:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise ControlError(
                f"tsyncd at {self.socket_path} did not answer '{method}' within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            # A busy server answers a new connection with an error line and closes at once: a
            # request sent after that fails (EPIPE), while the error waits unread.
            refusal = self._pending_error(sock)
            self.close()
            if refusal is not None:
                raise refusal from None
            raise ControlError(
                f"lost the connection to tsyncd at {self.socket_path}: {exc.strerror or exc}"
            ) from None

    def _pending_error(self, sock: socket.socket) -> ControlError | None:
        """The error response the server sent before it closed the connection, if one is
        waiting in our receive buffer (read without waiting)."""
        try:
            sock.setblocking(False)
            while not self._lines:
                data = sock.recv(65536)
                if not data:
                    break
                self._lines.extend(self._splitter.feed(data))
        except (OSError, LineTooLong):
            pass
        for line in self._lines:
            try:
                response = parse_response(line)
            except ValueError:
                continue
            if response.error is not None:
                return ControlError(response.error.message, response.error.code)
        return None

    def _read_line(self, sock: socket.socket) -> bytes:
        while not self._lines:
            data = sock.recv(65536)
            if not data:
                raise ControlError(
                    f"tsyncd at {self.socket_path} closed the connection without answering"
                )
            try:
                self._lines.extend(self._splitter.feed(data))
            except LineTooLong as exc:
                raise ControlError(f"tsyncd sent an oversized response: {exc}") from None
        return self._lines.pop(0)

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        where = f"cannot connect to tsyncd at {self.socket_path}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except BaseException as exc:
            sock.close()
            if isinstance(exc, FileNotFoundError):
                message = (
                    f"{where}: no such socket (is tsyncd running? use -s to choose the socket)"
                )
            elif isinstance(exc, ConnectionRefusedError) and not _is_socket(self.socket_path):
                message = f"{where}: not a socket (use -s to choose tsyncd's control socket)"
            elif isinstance(exc, ConnectionRefusedError):
                message = f"{where}: connection refused (stale socket: is tsyncd running?)"
            elif isinstance(exc, PermissionError):
                message = (
                    f"{where}: permission denied (run as root or as a member of the socket's group)"
                )
            elif isinstance(exc, TimeoutError) or (
                isinstance(exc, OSError) and exc.errno == errno.EAGAIN
            ):
                message = f"{where}: timed out (tsyncd is busy or hung)"
            elif isinstance(exc, OSError):
                message = f"{where}: {exc.strerror or exc}"
            else:
                raise
            raise ControlError(message) from None
        self._sock = sock
        return sock


def _is_socket(path: Path) -> bool:
    """Whether ``path`` is a Unix socket (connecting to a plain file is "refused" too)."""
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
