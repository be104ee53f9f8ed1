"""The message pipe between the main process and a server worker: pickles over a socketpair.

Why not ``multiprocessing.connection``: it is the same thing (length-prefixed pickles over a
``socketpair``), but importing it loads ``multiprocessing``, ``tempfile``, ``shutil``, ``bz2``
and ``lzma`` into the daemon: about 1.3 MB of heap and 0.5 MB of libraries in the main process,
which every forked worker inherits (bench/README.md, "Server memory").  The workers need only
``send``, ``recv``, ``poll`` (without a timeout), ``fileno`` and ``close``; this module offers
those, with the same meanings, so a ``multiprocessing`` pipe still fits where a test passes one.

Both ends are blocking: a message is written whole (``sendall``) and read whole; ``poll`` says
whether ``recv`` would return (or raise ``EOFError``) without waiting for the first byte.
The main process, whose event loop must never wait on a worker, writes with ``send_nowait``
instead: what the pipe does not take at once is queued here and written by ``flush`` when the
pipe drains; a worker that stopped reading (stopped, hung) shows as a queue over
``MAX_PENDING`` (QA s18 hunt-server-policy F2: a SIGSTOPped worker froze the main process,
and with it every other worker, once its pipe was full).
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
MAX_PENDING: Final = 1 << 20  # bytes queued by send_nowait before the peer counts as stuck


class Connection:
    """One end of a pipe: whole Python objects in, whole objects out."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._pending = bytearray()  # send_nowait's bytes the pipe has not taken yet
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)

    def fileno(self) -> int:
        """The socket's descriptor (for an event loop's reader, or to close it in a child)."""
        return self._sock.fileno()

    def send(self, obj: Any) -> None:
        """Write ``obj`` whole (blocks while the pipe is full); OSError if the peer is gone."""
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        self._sock.sendall(_HEADER.pack(len(data)) + data)

    def send_nowait(self, obj: Any) -> bool:
        """Write ``obj`` without blocking: what the pipe does not take now is queued, in
        order, for ``flush``.  False if more than ``MAX_PENDING`` bytes now wait (the peer is
        not reading); OSError if the peer is gone."""
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        self._pending += _HEADER.pack(len(data)) + data
        self.flush()
        return len(self._pending) <= MAX_PENDING

    def flush(self) -> bool:
        """Write as much of the queue as the pipe takes now; True when nothing is left."""
        while self._pending:
            try:
                n = self._sock.send(self._pending, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            del self._pending[:n]
        return True

    @property
    def pending(self) -> int:
        """Bytes queued by ``send_nowait`` and not written yet."""
        return len(self._pending)

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
