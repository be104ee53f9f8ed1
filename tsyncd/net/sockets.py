"""Making sockets where Python's usual way is refused.

Python's socket module asks ``socket()`` for ``SOCK_CLOEXEC`` and, when that fails with
EINVAL, marks the descriptor close-on-exec with the ``FIOCLEX`` ioctl; ``setblocking(False)``
uses the ``FIONBIO`` ioctl.  A clock-and-network simulator loaded with LD_PRELOAD (clknetsim)
implements only the socket calls chronyd and ntpd make: it refuses the flag and both ioctls,
so ``socket.socket()`` raises there.  ``open_socket`` then makes the socket with the C
library's own ``socket()`` (through ``ctypes.CDLL(None)``, the process's symbols, so the
simulator's version is the one called) and wraps the descriptor.  Callers that cannot make a
socket non-blocking pass ``MSG_DONTWAIT`` on each call instead (``set_nonblocking``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from functools import cache


@cache
def libc() -> ctypes.CDLL:
    """The process's own C library symbols (``errno`` kept), one handle for all."""
    return ctypes.CDLL(None, use_errno=True)


def open_socket(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
    """A new socket; made through libc's ``socket()`` where Python's way is refused."""
    try:
        return socket.socket(family, kind)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    fd = libc().socket(int(family), int(kind), 0)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    # family, type and proto given: the module then asks the descriptor nothing more.
    return socket.socket(family, kind, 0, fileno=fd)


def set_nonblocking(sock: socket.socket) -> int:
    """Make ``sock`` non-blocking if allowed; return the flags each send/recv must add."""
    try:
        sock.setblocking(False)
    except OSError:
        return socket.MSG_DONTWAIT
    return 0


_BIND_HINTS = {
    errno.EADDRINUSE: "another process already uses this port",
    errno.EADDRNOTAVAIL: "not an address of this host",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
}


def listen_error(key: str, listen: object, exc: OSError) -> OSError:
    """``exc`` (a failed bind of a configured listening address) as the start-up error an
    operator can act on: which key and value, and why (``errno`` kept), e.g.
    ``server[1].listen = "192.0.2.1:123": cannot bind (Cannot assign requested address:
    not an address of this host)``."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = _BIND_HINTS.get(exc.errno or 0)
    error = OSError(f'{key} = "{listen}": cannot bind ({why}{": " + hint if hint else ""})')
    error.errno = exc.errno
    return error
