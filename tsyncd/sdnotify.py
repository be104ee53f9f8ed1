"""sd_notify(3) for a ``Type=notify`` service: readiness, status, watchdog, reload and stop.

Theory of operation: systemd passes the path of a datagram socket in ``$NOTIFY_SOCKET`` and
reads newline-separated ``KEY=VALUE`` assignments from it. When the optional ``systemd-python``
package is importable we hand the message to ``systemd.daemon.notify`` (libsystemd's
``sd_notify``); otherwise a few lines here do the same thing: one ``AF_UNIX``/``SOCK_DGRAM``
``sendto`` per message, with a leading ``@`` meaning Linux's abstract socket namespace.

Notification is best effort by design. A daemon that cannot reach systemd must keep keeping
time, so no method here raises on a send failure; failures are logged at DEBUG. Outside systemd
(no ``$NOTIFY_SOCKET``) every method is a cheap no-op.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Literal

__all__ = ["Backend", "Notifier", "systemd_python_available"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "pure", "systemd"]
"""Which sender to use: ``auto`` prefers systemd-python when it can reach the same socket."""

# A full queue on systemd's side should not stall the event loop for long; sd_notify blocks,
# we bound the wait instead and drop the message (logged) if systemd is that wedged.
_SEND_TIMEOUT_S = 0.5


def _load_systemd_notify() -> Callable[[str], object] | None:
    """Return ``systemd.daemon.notify`` if systemd-python is importable, else None."""
    # import_module keeps mypy's verdict the same whether or not the extra is installed.
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify = getattr(daemon, "notify", None)
    return notify if callable(notify) else None


def systemd_python_available() -> bool:
    """True when the optional systemd-python binding (``systemd.daemon.notify``) imports."""
    return _load_systemd_notify() is not None


def _socket_address(notify_socket: str) -> bytes | None:
    """Map ``$NOTIFY_SOCKET`` to a sockaddr_un path, or None for a form we do not speak.

    ``@name`` is an abstract-namespace socket (first byte NUL); ``/path`` is a filesystem
    socket. Newer systemd also accepts ``vsock:`` addresses, which a host-local daemon never
    receives, so those are refused rather than misread as a relative path.
    """
    if notify_socket.startswith("@"):
        return b"\0" + os.fsencode(notify_socket[1:])
    if notify_socket.startswith("/"):
        return os.fsencode(notify_socket)
    return None


def _send_pure(notify_socket: str, message: str) -> None:
    """Send one datagram to ``notify_socket``; raises OSError/ValueError on failure."""
    address = _socket_address(notify_socket)
    if address is None:
        raise ValueError(f"unsupported NOTIFY_SOCKET address {notify_socket!r}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(_SEND_TIMEOUT_S)
        sock.sendto(message.encode("utf-8"), address)


def _one_line(text: str) -> str:
    """Keep a free-text value on one line: a newline would start a new assignment."""
    return " ".join(text.splitlines())


class Notifier:
    """sd_notify for ``Type=notify``: systemd-python if importable, else a pure sender.

    The pure sender writes to ``$NOTIFY_SOCKET`` (``AF_UNIX`` datagrams; abstract namespace
    when the path starts with ``@``). ``environ`` defaults to a snapshot of ``os.environ``
    taken now. ``backend`` picks the sender: ``auto`` uses systemd-python only when it is
    importable and ``environ`` names the same socket as the process environment (libsystemd
    reads the real environment, so it cannot follow an injected one), and only when that socket
    is set (without it every method is a no-op, and nothing is imported); ``pure`` never imports
    systemd-python; ``systemd`` requires it and raises ImportError here if it is missing.
    """

    def __init__(
        self, environ: Mapping[str, str] | None = None, *, backend: Backend = "auto"
    ) -> None:
        env = os.environ if environ is None else environ
        self._notify_socket: str | None = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec: str | None = env.get("WATCHDOG_USEC")
        self._watchdog_pid: str | None = env.get("WATCHDOG_PID")
        self._systemd_notify: Callable[[str], object] | None = None
        if backend == "systemd":
            self._systemd_notify = _load_systemd_notify()
            if self._systemd_notify is None:
                raise ImportError("backend='systemd' needs systemd-python (systemd.daemon)")
        elif backend == "auto" and self._notify_socket == os.environ.get("NOTIFY_SOCKET"):
            # Only under systemd: outside it every method is a no-op, and systemd-python
            # would map libsystemd and its libraries (about 0.7 MB) for nothing.
            if self._notify_socket is not None:
                self._systemd_notify = _load_systemd_notify()
        elif backend not in ("auto", "pure"):
            raise ValueError(f"unknown sd_notify backend {backend!r}")

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` is set, i.e. systemd is listening for notifications."""
        return self._notify_socket is not None

    @property
    def backend(self) -> Literal["pure", "systemd"]:
        """The sender actually in use (``auto`` resolved)."""
        return "pure" if self._systemd_notify is None else "systemd"

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up (or a reload) is complete; ``systemctl start`` returns then."""
        message = "READY=1"
        if status is not None:
            message += f"\nSTATUS={_one_line(status)}"
        self._send(message)

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status``."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """Keep-alive ping; send at least every ``watchdog_interval_s() / 2`` seconds."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Announce an orderly shutdown so systemd does not count it as a failure."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """Announce a configuration reload; call ``ready()`` again once it is done.

        systemd >= 253 (``Type=notify-reload``) matches RELOADING=1 to the reload request by
        ``MONOTONIC_USEC``, the CLOCK_MONOTONIC time of the notification in microseconds;
        older versions ignore the extra field.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")

    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout from ``$WATCHDOG_USEC`` in seconds, or None if not armed.

        None also when ``$WATCHDOG_PID`` is set to another process (the variables were
        inherited, not meant for us) or either value is malformed. The daemon should ping at
        half the returned interval, as sd_watchdog_enabled(3) recommends.
        """
        if self._watchdog_usec is None:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            logger.debug("ignoring malformed WATCHDOG_USEC=%r", self._watchdog_usec)
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid is not None:
            try:
                pid = int(self._watchdog_pid)
            except ValueError:
                logger.debug("ignoring malformed WATCHDOG_PID=%r", self._watchdog_pid)
                return None
            if pid != os.getpid():
                return None
        return usec / 1_000_000

    def _send(self, message: str) -> None:
        """Deliver ``message`` if systemd listens; log failures at DEBUG, never raise."""
        if self._notify_socket is None:
            return
        try:
            if self._systemd_notify is not None:
                self._systemd_notify(message)
            else:
                _send_pure(self._notify_socket, message)
        except (OSError, ValueError) as exc:
            logger.debug("sd_notify %r to %r failed: %s", message, self._notify_socket, exc)
