"""The control socket: JSON-RPC 2.0 over a Unix stream socket, one JSON object per line.

Theory of operation: each connection is read one line at a time and answered in order.  A
request names a method from one of two tables, fixed at construction: read-only methods (open to
whoever can open the socket, like chronyc's monitoring commands) and admin methods, which change
the daemon and need uid 0, the daemon's own uid, or membership in the admin group.  The peer's
uid/gid come from ``SO_PEERCRED`` and its supplementary groups from ``SO_PEERGROUPS`` (the
kernel vouches for both, as they were at connect()): membership is the process's own, as the
kernel checks it for files and for this socket's own group (groups given by systemd's
``SupplementaryGroups=``, ``setpriv`` or a container count; one added in /etc/group counts
from the user's next login).  Where the kernel does not report the groups (before Linux 4.13,
or an architecture whose option number we do not know), the user's groups are looked up in the
group database at each admin request instead.  Not /proc/PID/status: the pid may be reused by
another process after the caller exits, while its socket lives on in a child.

A bad client can cost us at most one connection slot for ``idle_timeout`` seconds and
``max_line_bytes`` of memory: every failure becomes a JSON-RPC error or a closed connection,
never an exception out of the server.  The idle timeout runs from the connection's start or
its last request to the next complete request: blank lines and partial lines do not restart
it, so a client must keep asking to keep its slot.

Connection slots (chronyc's datagrams need none; a stream socket does): at most
``max_connections`` at once.  Any local user may open the socket, so one user must not be
able to take every slot and lock out the rest, root included (``tsyncctl waitsync``, the
admin commands).  So a user other than root or the daemon's own holds at most
``max_connections_per_uid`` connections, and the last ``reserved_connections`` slots are only
for callers who may use admin methods (``may_call_admin``).  A refused connection gets one
SERVER_BUSY error line, then is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from tsyncd.control.rpc import (
    ErrorCode,
    InvalidParams,
    Request,
    RpcError,
    make_error,
    make_result,
    parse_request,
    request_id_of,
)
from tsyncd.groups import group_expected, group_id, group_unjoined
from tsyncd.snapshots import as_json

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any] | Any]

# struct ucred from <sys/socket.h>: pid_t pid; uid_t uid; gid_t gid (three 32-bit ints on Linux).
_UCRED = struct.Struct("=iII")
# SO_PEERGROUPS (Linux >= 4.13), which Python 3.11's socket module lacks: 59 in
# asm-generic/socket.h, which these architectures use; others number it differently.
_SO_PEERGROUPS: int | None = getattr(socket, "SO_PEERGROUPS", None)
if _SO_PEERGROUPS is None and os.uname().machine in (
    "x86_64",
    "i686",
    "i386",
    "aarch64",
    "armv7l",
    "armv8l",
    "riscv64",
    "ppc64le",
    "s390x",
    "loongarch64",
):
    _SO_PEERGROUPS = 59


class ControlSetupError(Exception):
    """The control socket cannot be set up; the message says what to change, and ``key``
    which ``[control]`` setting it is about, if one is ("control.group")."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def supplementary_groups(uid: int) -> set[int]:
    """Return every gid the user ``uid`` belongs to (primary and supplementary).

    A uid with no passwd entry (e.g. a container's arbitrary uid) belongs to no group.
    """
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return set()
    try:
        return set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        return {entry.pw_gid}


def may_call_admin(
    uid: int,
    gid: int,
    *,
    own_uid: int,
    admin_gid: int | None,
    groups: Collection[int] | None = None,
    supplementary: Callable[[int], set[int]] = supplementary_groups,
) -> bool:
    """Decide whether a peer with ``uid``/``gid`` (from SO_PEERCRED) may call admin methods.

    Root and the daemon's own user always may; otherwise the peer's effective gid or one of its
    supplementary ``groups`` (SO_PEERGROUPS) must be ``admin_gid``, or, where those are not
    known (None), one of its user's groups in the group database.  With no admin group only
    those two users may.
    """
    if uid == 0 or uid == own_uid:
        return True
    if admin_gid is None:
        return False
    if gid == admin_gid:
        return True
    if groups is not None:
        return admin_gid in groups
    return admin_gid in supplementary(uid)


def _resolve_group(name: str, key: str) -> int:
    """Map a group name (or a numeric gid) to a gid, or explain why it cannot, naming the
    setting (``key``: "control.group") in the config check's words (``config_host``)."""
    gid = group_id(name)
    if gid is None:
        raise ControlSetupError(f"{key} = {json.dumps(name)}: expected {group_expected(name)}", key)
    return gid


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """Return (pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def peer_groups(sock: Any) -> frozenset[int] | None:
    """The supplementary groups of the process at the other end of a Unix socket, as the
    kernel recorded them at connect() (SO_PEERGROUPS); None where it does not say."""
    if _SO_PEERGROUPS is None:
        return None
    for count in (256, 65536):  # NGROUPS_MAX is 65536
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * count)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue  # more groups than that: ask again with room for all
            return None
        return frozenset(struct.unpack(f"={len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return None


def check_param_names(
    method: str, params: Mapping[str, Any], known: Collection[str] | None
) -> None:
    """``InvalidParams`` if ``params`` has a name ``method`` does not take (``known``; None:
    not checked here)."""
    if known is None:
        return
    unknown = sorted(set(params) - set(known))
    if unknown:
        takes = ", ".join(sorted(known)) or "no params"
        names = ", ".join(repr(name) for name in unknown)
        raise InvalidParams(f"{method}: unknown param {names}; it takes {takes}")


class ControlServer:
    """JSON-RPC control server on a Unix stream socket.

    Call ``start()`` once, then ``close()`` on shutdown (it removes the socket file).
    """

    def __init__(
        self,
        socket_path: Path,
        *,
        read_methods: Mapping[str, Handler],
        admin_methods: Mapping[str, Handler],
        params: Mapping[str, Collection[str] | None] | None = None,
        group: str | None = None,
        admin_group: str | None = None,
        max_connections: int = 32,
        max_connections_per_uid: int = 8,
        reserved_connections: int = 4,
        max_line_bytes: int = 65536,
        idle_timeout: float = 60.0,
        refusal_log_interval: float = 60.0,
    ) -> None:
        both = sorted(set(read_methods) & set(admin_methods))
        if both:
            raise ValueError(f"methods both read-only and admin: {', '.join(both)}")
        if max_connections < 1 or max_connections_per_uid < 1 or max_line_bytes < 64:
            raise ValueError(
                "max_connections and max_connections_per_uid must be >= 1, max_line_bytes >= 64"
            )
        self._path = Path(socket_path)
        self._read = dict(read_methods)
        self._admin = dict(admin_methods)
        # Per method, the param names it takes: others are refused before it runs, so a
        # misspelt one cannot pass for a missing one.  None, or a method not listed: the
        # handler checks its params itself.
        self._params = {m: None if k is None else frozenset(k) for m, k in (params or {}).items()}
        self._group = group
        self._admin_group = admin_group
        self._admin_gid: int | None = None
        self._max_connections = max_connections
        self._max_per_uid = max_connections_per_uid
        self._reserved = max(0, min(reserved_connections, max_connections - 1))
        self._by_uid: dict[int, int] = {}  # open connections per peer uid
        self._max_line = max_line_bytes
        self._idle_timeout = idle_timeout
        # Refused connections: one WARNING, then one line per interval with how many more.
        self._refusal_log_interval = refusal_log_interval
        self._refused_unlogged = 0
        self._refusal_log_timer: asyncio.TimerHandle | None = None
        self._own_uid = os.geteuid()
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def socket_path(self) -> Path:
        """Where the socket lives."""
        return self._path

    @property
    def connection_count(self) -> int:
        """Connections being served right now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Create the socket and start accepting connections.

        Raises ``ControlSetupError`` if a group is unknown, another daemon is listening on the
        path, or the path holds something that is not a socket.
        """
        gid = _resolve_group(self._group, "control.group") if self._group else None
        if self._admin_group is not None:
            self._admin_gid = _resolve_group(self._admin_group, "control.admin-group")
        self._prepare_path()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self._path), limit=self._max_line
        )
        self._inode = os.stat(self._path).st_ino
        try:
            if gid is not None:
                os.chown(self._path, -1, gid)
                os.chmod(self._path, 0o660)
            else:
                # Read-only methods are for every local user, like chronyc's monitoring commands;
                # admin methods are still guarded per request.
                os.chmod(self._path, 0o666)
        except OSError as exc:
            await self.close()
            if gid is not None and exc.errno == errno.EPERM:
                raise ControlSetupError(
                    f"control.group = {json.dumps(self._group)}: expected"
                    f" {group_unjoined(str(self._group))}",
                    "control.group",
                ) from exc
            raise ControlSetupError(
                f"cannot set ownership/permissions of {self._path}: {exc.strerror}"
            ) from exc
        logger.info("control socket listening on %s", self._path)

    def _prepare_path(self) -> None:
        parent = self._path.parent
        if not parent.exists():
            try:
                parent.mkdir(parents=True, mode=0o755)
                os.chmod(parent, 0o755)  # mkdir's mode is filtered through the umask
            except OSError as exc:
                raise ControlSetupError(
                    f"cannot create directory {parent} for the control socket: {exc.strerror}"
                ) from exc
        try:
            st = os.lstat(self._path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSetupError(
                f"{self._path} exists and is not a socket; remove it or choose another path"
            )
        if self._someone_listening():
            raise ControlSetupError(
                f"another process is already listening on {self._path} (is tsyncd running?)"
            )
        # A socket file nobody listens on is left over from a daemon that died: replace it.
        logger.info("removing stale control socket %s", self._path)
        self._path.unlink()

    def _someone_listening(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(str(self._path))
        except (TimeoutError, BlockingIOError):
            return True  # a full backlog: someone is there, just busy
        except OSError:
            return False  # ECONNREFUSED: nobody has it open
        else:
            return True
        finally:
            probe.close()

    async def close(self) -> None:
        """Stop accepting, drop open connections and remove our socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._refusal_log_timer is not None:
            self._refusal_log_timer.cancel()
            self._refusal_log_timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        # Only unlink the file we created: a newer daemon may have replaced it.
        if self._inode is not None:
            with contextlib.suppress(OSError):
                if os.lstat(self._path).st_ino == self._inode:
                    self._path.unlink()
            self._inode = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            uid, gid, groups = self._credentials(writer)
            refusal = self._refusal(uid, gid, groups)
            if refusal is not None:
                self._log_refusal(uid)
                await self._send(writer, make_error(None, RpcError(ErrorCode.SERVER_BUSY, refusal)))
                return
            if task is not None:
                self._tasks.add(task)
            self._by_uid[uid] = self._by_uid.get(uid, 0) + 1
            try:
                await self._serve_lines(reader, writer, uid, gid, groups)
            finally:
                if task is not None:
                    self._tasks.discard(task)
                left = self._by_uid.pop(uid, 1) - 1
                if left > 0:
                    self._by_uid[uid] = left
        except asyncio.CancelledError:
            raise
        except OSError as exc:  # includes TimeoutError from a stuck drain()
            logger.debug("control connection ended: %s", exc)
        except Exception:  # a bug here must not stop the server
            logger.exception("control connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _log_refusal(self, uid: int) -> None:
        """A WARNING for a refused connection, at most one per ``refusal_log_interval``: any
        user can make refusals, and must not flood the log with them.  The others are
        counted and reported in one line at the end of the interval."""
        if self._refusal_log_timer is not None:
            self._refused_unlogged += 1
            return
        logger.warning(
            "control socket: refusing a connection from uid %d, %d already open",
            uid,
            len(self._tasks),
        )
        self._arm_refusal_log()

    def _arm_refusal_log(self) -> None:
        loop = asyncio.get_running_loop()
        self._refusal_log_timer = loop.call_later(
            self._refusal_log_interval, self._flush_refusal_log
        )

    def _flush_refusal_log(self) -> None:
        self._refusal_log_timer = None
        if self._refused_unlogged:
            logger.warning(
                "control socket: refused %d more connections in the last %g s"
                " (all slots, or the caller's share, taken)",
                self._refused_unlogged,
                self._refusal_log_interval,
            )
            self._refused_unlogged = 0
            self._arm_refusal_log()  # the next ones are counted for another interval

    def _refusal(self, uid: int, gid: int, groups: frozenset[int] | None) -> str | None:
        """Why a new connection from ``uid``/``gid`` gets no slot (the error message), or None.

        Root and the daemon's user may take any free slot; another user at most
        ``max_connections_per_uid``, and the reserved last slots only if it may call admin
        methods (looked up only then: the group lookup may be slow)."""
        open_now = len(self._tasks)
        if open_now >= self._max_connections:
            return (
                f"tsyncd is serving {self._max_connections} control connections already;"
                " try again later"
            )
        if uid == 0 or uid == self._own_uid:
            return None
        mine = self._by_uid.get(uid, 0)
        if mine >= self._max_per_uid:
            return (
                f"tsyncd is serving {mine} control connections for uid {uid} already"
                f" (at most {self._max_per_uid} per user); try again later"
            )
        if open_now >= self._max_connections - self._reserved and not may_call_admin(
            uid, gid, own_uid=self._own_uid, admin_gid=self._admin_gid, groups=groups
        ):
            return (
                f"tsyncd is serving {open_now} control connections already; the last"
                f" {self._reserved} are kept for administrators; try again later"
            )
        return None

    def _credentials(self, writer: asyncio.StreamWriter) -> tuple[int, int, frozenset[int] | None]:
        sock = writer.get_extra_info("socket")
        try:
            _pid, uid, gid = peer_credentials(sock)
        except (OSError, struct.error):
            # Without credentials, assume the least privilege.
            return -1, -1, frozenset()
        return uid, gid, peer_groups(sock)

    async def _serve_lines(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        uid: int,
        gid: int,
        groups: frozenset[int] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_timeout  # the next request's; blank lines keep it
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    # The peer closed after a last line without its newline: answer it anyway.
                    await self._answer(writer, exc.partial, uid, gid, groups)
                return
            except asyncio.LimitOverrunError:
                error = RpcError(
                    ErrorCode.LINE_TOO_LONG,
                    f"request longer than {self._max_line} bytes; closing the connection",
                )
                await self._send(writer, make_error(None, error))
                return
            except TimeoutError:
                logger.debug("control connection idle for %.0f s, closing", self._idle_timeout)
                return
            if not line.strip():
                continue  # blank lines keep a hand-typed session (socat) forgiving
            await self._answer(writer, line, uid, gid, groups)
            deadline = loop.time() + self._idle_timeout

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        line: bytes,
        uid: int,
        gid: int,
        groups: frozenset[int] | None,
    ) -> None:
        response = await self.handle_line(line, uid=uid, gid=gid, groups=groups)
        if response is not None:
            await self._send(writer, response)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        # A client that never reads must not pin the connection forever.
        async with asyncio.timeout(self._idle_timeout):
            await writer.drain()

    async def handle_line(
        self, line: bytes, *, uid: int, gid: int, groups: frozenset[int] | None = None
    ) -> bytes | None:
        """Answer one request line from a peer with ``uid``/``gid`` and supplementary
        ``groups`` (None: not known, looked up by uid); None for notifications."""
        try:
            request = parse_request(line)
        except RpcError as error:
            return make_error(request_id_of(line), error)
        try:
            result = await self._dispatch(request, uid, gid, groups)
            if request.notification:
                return None
            try:
                return make_result(request.id, result)
            except (TypeError, ValueError) as exc:
                logger.error(
                    "control method %r returned a non-JSON result: %s", request.method, exc
                )
                raise RpcError(
                    ErrorCode.INTERNAL_ERROR,
                    f"internal error in '{request.method}': result is not JSON ({exc});"
                    " please report this bug",
                ) from exc
        except RpcError as error:
            return None if request.notification else make_error(request.id, error)

    async def _dispatch(
        self, request: Request, uid: int, gid: int, groups: frozenset[int] | None
    ) -> Any:
        method = request.method
        handler = self._read.get(method)
        if handler is None:
            handler = self._admin.get(method)
            if handler is None:
                known = ", ".join(sorted({*self._read, *self._admin}))
                raise RpcError(
                    ErrorCode.METHOD_NOT_FOUND, f"unknown method '{method}'; known: {known}"
                )
            if not may_call_admin(
                uid, gid, own_uid=self._own_uid, admin_gid=self._admin_gid, groups=groups
            ):
                who = f"root or group '{self._admin_group}'" if self._admin_group else "root"
                logger.info("control: uid %d denied admin method %r", uid, method)
                raise RpcError(
                    ErrorCode.PERMISSION_DENIED, f"permission denied: '{method}' needs {who}"
                )
        check_param_names(method, request.params, self._params.get(method))
        try:
            result = handler(request.params)
            if inspect.isawaitable(result):
                result = await result
        except RpcError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler bug must not end the connection
            logger.exception("control method %r failed", method)
            raise RpcError(
                ErrorCode.INTERNAL_ERROR,
                f"internal error in '{method}': {type(exc).__name__}: {exc};"
                " see the tsyncd log for details",
            ) from exc
        return as_json(result)
