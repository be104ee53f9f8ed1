"""The message pipe between the main process and a server worker: pickles over a socketpair.

Why not ``multiprocessing.connection``: it is the same thing (length-prefixed pickles over a
``socketpair``), but importing it loads ``multiprocessing``, ``tempfile``, ``shutil``, ``bz2``
and ``lzma`` into the daemon: about 1.3 MB of heap and 0.5 MB of libraries in the main process,
which every forked worker inherits (bench/README.md, "Server memory").  The workers need only
``send``, ``recv``, ``poll`` (without a timeout), ``fileno`` and ``close``; this module offers
those, with the same meanings, so a ``multiprocessing`` pipe still fits where a test passes one.

Both ends are blocking: a message is written whole (``sendall``) and read whole; ``poll`` says
whether ``recv`` would return (or raise ``EOFError``) without waiting for the first byte.
Only the two processes of one daemon use a pipe, so the pickles are trusted.
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
from typing import Any, Final

_HEADER: Final = struct.Struct("!I")  # payload length, bytes
_MAX_MESSAGE: Final = 1 << 30  # a length past this means a broken stream, not a message


class Connection:
    """One end of a pipe: whole Python objects in, whole objects out."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)

    def fileno(self) -> int:
        """The socket's descriptor (for an event loop's reader, or to close it in a child)."""
        return self._sock.fileno()

    def send(self, obj: Any) -> None:
        """Write ``obj`` whole (blocks while the pipe is full); OSError if the peer is gone."""
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        self._sock.sendall(_HEADER.pack(len(data)) + data)

    def poll(self) -> bool:
        """Whether a message (or the end of the pipe) is waiting, without blocking."""
        return bool(self._poller.poll(0))

    def recv(self) -> Any:
        """The next object (blocks until it is whole); EOFError when the peer has closed."""
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        if size > _MAX_MESSAGE:
            raise OSError(f"pipe message of {size} bytes: the stream is out of step")
        return pickle.loads(self._read(size))

    def _read(self, size: int) -> bytes:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self._sock.recv_into(view[got:])
            if n == 0:
                raise EOFError("the other end of the pipe is closed")
            got += n
        return bytes(buf)

    def close(self) -> None:
        """Close this end (idempotent); the peer's ``recv`` then raises EOFError."""
        self._sock.close()


def pipe() -> tuple[Connection, Connection]:
    """A connected pair of ends (one for each process, to be split by ``fork``)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Connection(a), Connection(b)
