"""The NTS-KE server's IO edge (RFC 8915 §4): TLS over TCP, one request, one response.

Each connection gets a TLS 1.3 handshake (ALPN ``ntske/1``), then its request records are fed
to the sans-IO ``RecordParser``; the decisions (AEAD choice, cookies, errors) come from
``tsyncd/nts/ke.py``.  Garbage and half-open connections must cost little: the whole session has
one deadline (``SESSION_TIMEOUT_S``), requests are capped at 16 KiB by the parser, and at most
``max_connections`` sessions run at once; beyond that new connections are closed at once.  With a
``rate_limit`` (chrony's ``ntsratelimit``), each client IP has a token bucket like the NTP
server's (``servers/clientlog.py``): a connection over it is closed before any TLS work, except
one in 2**leak as there, none with ``leak = 0`` (TCP addresses cannot be spoofed the way UDP
ones can, so ``leak = 0`` is safe here).

Before that, as chronyd checks its NTP access rules right after accept(), a client ``access``
refuses (the listener's own rules, or those of the ``[[server]]`` the local address it reached
sends it to: ``keaccess``) is closed at once: no TLS work, no client log entry (a scanner must
not fill it), and only a DEBUG line; ``serverstats`` counts it under the NTP server's drop
reason (``denied`` or ``restricted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from OpenSSL import SSL

from tsyncd.asyncwait import wait_for
from tsyncd.net.tcp import start_tcp_server
from tsyncd.net.tls import TlsError, TlsStream
from tsyncd.nts.aead import AEADS
from tsyncd.nts.cookie import KeySet
from tsyncd.nts.ke import EXPORTER_LABEL, choose, error_response, exporter_context, server_response
from tsyncd.servers.clientlog import (
    ClientLog,
    ClientRecord,
    RateLimit,
    client_rows,
    take_token,
)
from tsyncd.servers.keaccess import ServerRules
from tsyncd.servers.responder import AccessList, IPAddress, client_ip
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntske import KeError, RecordParser, decode_request

log = logging.getLogger(__name__)

SESSION_TIMEOUT_S: Final = 5.0
MAX_CONNECTIONS: Final = 100
_MAX_GROUPS: Final = 16  # distinct TLS groups counted (a client picks among a few)


@dataclass(slots=True)
class KeServerStats:
    """Counters ``tsyncctl serverstats`` shows."""

    connections: int = 0
    completed: int = 0  # responses with cookies
    cookies_issued: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    last_group: str | None = None
    groups: Counter[str] = field(default_factory=Counter)  # completed handshakes per TLS group


class NtsKeServer:
    """Accepts NTS-KE clients on one TCP address."""

    def __init__(
        self,
        ctx: SSL.Context,
        keys: Callable[[], KeySet | None],
        *,
        ntp_server: str | None,
        ntp_port: int | None,
        max_connections: int = MAX_CONNECTIONS,
        timeout_s: float = SESSION_TIMEOUT_S,
        rate_limit: RateLimit | None = None,
        access: AccessList | ServerRules | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._ctx = ctx
        self._keys = keys
        self.ntp_server = ntp_server
        self.ntp_port = ntp_port
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.stats = KeServerStats()
        self.rate_limit = rate_limit
        # Who may connect: its own rules, replaced whole by ``tsyncctl allow``/``deny``
        # (daemon_commands), or those of the [[server]]s, read per connection (keaccess).
        self.access: AccessList | ServerRules = access if access is not None else AccessList()
        self.clients = ClientLog()  # per client IP: the rate limit's buckets
        self._rng = rng or random.Random()
        self._active = 0
        self._server: asyncio.Server | None = None
        self.listen = ""

    async def start(self, host: str, port: int) -> None:
        """Bind and start accepting; OSError if the address is taken."""
        self._server = await start_tcp_server(self._handle, host, port)
        addr = self._server.sockets[0].getsockname()
        self.listen = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"

    def use_context(self, ctx: SSL.Context) -> None:
        """Serve the connections to come with ``ctx`` (a renewed certificate)."""
        self._ctx = ctx

    async def close(self) -> None:
        """Stop accepting and close the listening socket."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        peer = writer.get_extra_info("peername")
        ip = _peer_ip(peer)
        access = self.access
        if ip is None:
            verdict = ""
        elif isinstance(access, AccessList):
            verdict = access.verdict(ip)
        else:  # the rules of the server the address it reached sends it to
            verdict = access.verdict(ip, _peer_ip(writer.get_extra_info("sockname")))
        if verdict:
            self.stats.failures[verdict] += 1
            log.debug("NTS-KE: rejected connection from %s (access %s)", ip, verdict)
            writer.close()
            return
        record, limited = self._count(ip)
        refused = "rate_limited" if limited else None
        if not limited and self._active >= self.max_connections:
            refused = "too_many_connections"
        if refused is not None:
            self.stats.failures[refused] += 1
            if record is not None:
                record.dropped += 1
            writer.close()
            return
        self._active += 1
        tls = TlsStream(self._ctx, reader, writer, server=True)
        try:
            async with asyncio.timeout(self.timeout_s):
                if await self._session(tls) and record is not None:
                    record.answered += 1
        except TimeoutError:
            self.stats.failures["timeout"] += 1
            log.debug("NTS-KE session with %s timed out", peer)
        except TlsError as exc:
            self.stats.failures[exc.reason] += 1
            log.debug("NTS-KE session with %s: %s", peer, exc)
        except OSError as exc:
            self.stats.failures["io"] += 1
            log.debug("NTS-KE session with %s: %s", peer, exc)
        except SSL.Error as exc:  # e.g. the exporter, outside TlsStream's own wrapping
            self.stats.failures["tls"] += 1
            log.debug("NTS-KE session with %s: %s", peer, exc)
        finally:
            self._active -= 1
            with contextlib.suppress(Exception):
                await wait_for(tls.close(), 1.0)

    def client_rows(self) -> list[dict[str, Any]]:
        """Its clients (connections, sessions with cookies, refused), busiest first."""
        return client_rows(self.clients, time.monotonic_ns())

    def _count(self, ip: IPAddress | None) -> tuple[ClientRecord | None, bool]:
        """This connection counted in its client's record (``tsyncctl clients --nts-ke``, and
        the rate limit's bucket; None without an IP peer), and whether it is over the client's
        rate limit and not let through by the leak."""
        if ip is None:
            return None, False
        now = time.monotonic_ns()
        limit = self.rate_limit
        address = str(ip)
        record = self.clients.records.get(address)
        if record is None:
            burst = limit.interval_ns * limit.burst if limit is not None else 0
            record = self.clients.add(ClientRecord(address, "", now, burst))
        allowed = limit is None or take_token(record, limit, now)
        record.last_ns = now
        record.received += 1
        if limit is None or allowed:
            return record, False
        return record, not (limit.leak_log2 and not self._rng.getrandbits(limit.leak_log2))

    async def _session(self, tls: TlsStream) -> bool:
        """One NTS-KE exchange; True if it ended with cookies."""
        await tls.handshake()
        parser = RecordParser()
        records = []
        try:
            while not parser.done:
                data = await tls.recv()
                if not data:
                    parser.close()
                records.extend(parser.feed(data))
            request = decode_request(tuple(records))
        except KeError as exc:
            self.stats.failures[exc.reason] += 1
            await tls.send(error_response(exc.code))
            return False
        except WireError as exc:
            self.stats.failures[exc.reason] += 1
            return False  # the client went away mid-request: nobody to answer
        choice = choose(request)
        c2s = s2c = b""
        if choice.aead is not None and choice.context_aead is not None:
            key_len = AEADS[choice.aead].key_len
            c2s = tls.export_key(
                EXPORTER_LABEL, key_len, exporter_context(choice.context_aead, False)
            )
            s2c = tls.export_key(
                EXPORTER_LABEL, key_len, exporter_context(choice.context_aead, True)
            )
        response, issued = server_response(
            choice, self._keys(), c2s, s2c, ntp_server=self.ntp_server, ntp_port=self.ntp_port
        )
        await tls.send(response)
        group = tls.group
        # Each group is logged the first time a client gets it, not at every change: clients
        # of different TLS libraries alternating would log a line per connection.
        if group is not None:
            groups = self.stats.groups
            if group not in groups and len(groups) < _MAX_GROUPS:
                log.info("NTS-KE: negotiated TLS group %s (first client with it)", group)
            if group in groups or len(groups) < _MAX_GROUPS:
                groups[group] += 1
        self.stats.last_group = group
        if issued:
            self.stats.completed += 1
            self.stats.cookies_issued += issued
            return True
        self.stats.failures["nothing_acceptable"] += 1
        return False


def _peer_ip(peer: object) -> IPAddress | None:
    """The IP (IPv4-mapped as IPv4) of a TCP socket name, the peer's or ours; None if it has
    none."""
    if not isinstance(peer, tuple) or not peer:
        return None
    return client_ip(str(peer[0]))
