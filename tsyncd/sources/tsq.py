"""A TSQ source's IO edge: one QUIC connection to a TSQ server, reused across polls.

The sync core decides when to poll exactly as for an NTP source (its association keeps the
poll interval, reach and statistics); the daemon hands the poll to ``send``, which runs one TSQ
exchange in a task.  The exchange is checked by ``sync/tsq.evaluate`` (fresh random nonce
echoed, T3 >= T2, non-negative delay) and becomes a ``Sample`` for ``SyncCore.handle_sample``.

* one connection serves every poll (kept open with PINGs between polls up to 256 s apart);
* connect and reply timeouts bound every step (the reference has no connect timeout, spec
  §2.4); a failed connection is dropped and the next poll reconnects;
* a reply that arrives but is rejected (unsynchronized server, wrong nonce, T3 < T2, negative
  delay, Error TLV, malformed) is a bad sample, dropped with its reason as chronyd drops an NTP
  reply with LI=3: the connection works and is kept, with no new handshake at the next poll;
* the log says each failure once until it changes, and "connected" at the first connect and
  at the first reconnect after a logged failure or a lost connection, never at every poll
  (beyond KEEPALIVE_MAX_POLL_S each poll reconnects, quietly);
* each request carries a Metadata Query (247): a tsyncd server answers with its stratum
  (Time Source Info) and error estimate (Clock Quality), used as the sample's stratum and root
  dispersion; reference servers skip the TLV and send the 38 bytes (spec §4), and are then
  taken as stratum 1 with no root error, since TSQ carries nothing more (spec §3.3);
* a server that says it is unsynchronized (stratum 0) is not used, as NTP's test 6.

Subclassing ``NtpSourceSocket`` keeps the daemon's snapshot code and source table as they are;
only ``send`` and ``close`` differ.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from tsyncd.net.quic import NowNs, Transport, client_configuration
from tsyncd.net.tsq import TsqClient, TsqClientError
from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.sync.sample import PHI_PPM, Sample
from tsyncd.sync.tsq import Rejected, evaluate
from tsyncd.wire.ntp import refid_for_address
from tsyncd.wire.tsq import TsqResponse

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 5.0
# Servers close a connection idle for 30 s (tsyncd and the reference datagram server).  Between
# polls up to KEEPALIVE_MAX_POLL_S apart we send a PING every KEEPALIVE_S to keep the one
# connection; beyond that a handshake per poll costs less than the pings would.
KEEPALIVE_S: Final = 10.0
KEEPALIVE_MAX_POLL_S: Final = 256.0
REPLY_TIMEOUT_S: Final = 3.0  # the reference clients' per-query wait
_UNKNOWN_STRATUM: Final = 1
_IDLE_TIMEOUT: Final = "Idle timeout"  # aioquic's reason phrase when the idle timer ends it

SampleHandler = Callable[[str, Sample], None]
DropHandler = Callable[[str, str], None]  # (source name, drop reason) of a rejected reply
FailureHandler = Callable[[str, str], None]  # (source name, why) of any failed exchange


class TsqSource(NtpSourceSocket):
    """Polls one TSQ server over a kept QUIC connection."""

    def __init__(
        self,
        *,
        name: str,
        ip: str,
        port: int,
        server_name: str,
        transport: Transport,
        ca_file: Path | None,
        now_ns: NowNs,
        precision_ns: int,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        dscp: int = 0,
    ) -> None:
        super().__init__(name=name, mode="tsq", ip=ip, port=port)
        self.server_name = server_name
        self.transport = transport
        self.ca_file = ca_file
        self.now_ns = now_ns
        self.precision_ns = precision_ns
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.dscp = dscp  # DSCP code point of the connection's packets
        self.connects = 0
        self._client: TsqClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_sample: SampleHandler | None = None
        self._on_drop: DropHandler | None = None
        self._on_failure: FailureHandler | None = None
        self._last_error: str | None = None
        self._say_connected = True  # log the next connect at INFO (first, or after a failure)
        self._timeouts = 0  # consecutive reply timeouts
        self._last_poll_s: float | None = None  # loop time of the last poll
        self._poll_gap_s = 0.0  # between the last two polls
        self._keepalive: asyncio.Task[None] | None = None

    def start(
        self,
        on_sample: SampleHandler,
        on_drop: DropHandler,
        on_failure: FailureHandler | None = None,
    ) -> None:
        """Where samples, rejected replies and why exchanges failed go."""
        self._on_sample = on_sample
        self._on_drop = on_drop
        self._on_failure = on_failure

    def send(self, data: bytes) -> bool:
        """Poll now (``data``, the NTP request the core built, is not used)."""
        if self._task is not None and not self._task.done():
            return False  # the previous exchange is still running: this poll is lost
        loop = asyncio.get_running_loop()
        if self._last_poll_s is not None:
            self._poll_gap_s = loop.time() - self._last_poll_s
        self._last_poll_s = loop.time()
        self._task = loop.create_task(self._poll())
        if self._keepalive is None:
            self._keepalive = loop.create_task(self._keep_alive())
        return True

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            if self._client is not None and self._poll_gap_s <= KEEPALIVE_MAX_POLL_S:
                self._client.ping()

    async def _poll(self) -> None:
        try:
            client = await self._connected()
            exchange = await client.query(self.reply_timeout_s, metadata_query=True)
            sample = self._sample(exchange.reply, exchange.nonce, exchange.t1_ns, exchange.t4_ns)
        except TsqClientError as exc:
            self._fail(exc.reason, str(exc), drop=exc.replied)
            return
        except Rejected as exc:
            self._fail(exc.reason, str(exc), drop=True)
            return
        self._timeouts = 0
        if self._last_error is not None:
            log.info("TSQ source %s answers again", self.name)
            self._last_error = None
        if self._on_sample is not None:
            self._on_sample(self.name, sample)

    async def _connected(self) -> TsqClient:
        if self._client is not None and not self._client.closed:
            return self._client
        if self._client is not None:
            self._lost(self._client)
        config = client_configuration(
            self.transport, server_name=self.server_name, ca_file=self.ca_file
        )
        self._client = await TsqClient.connect(
            self.ip,
            self.port,
            config,
            now_ns=self.now_ns,
            timeout_s=self.connect_timeout_s,
            dscp=self.dscp,
        )
        self.connects += 1
        log.log(
            logging.INFO if self._say_connected else logging.DEBUG,
            "TSQ source %s: connected (%s)",
            self.name,
            self.transport,
        )
        self._say_connected = False
        return self._client

    def _lost(self, client: TsqClient) -> None:
        """``client``'s connection ended between polls: say why, unless it idled out while we
        let it (polls too far apart for keepalive PINGs)."""
        why = client.close_reason
        client.close()
        self._client = None
        idle = why == _IDLE_TIMEOUT and self._poll_gap_s > KEEPALIVE_MAX_POLL_S
        if why is not None and not idle:
            self._say(f"connection closed: {why}")

    def _sample(self, reply: object, nonce: bytes, t1_ns: int, t4_ns: int) -> Sample:
        if not isinstance(reply, TsqResponse):
            raise Rejected("error_reply", f"server error: {reply}")
        s = evaluate(reply, nonce=nonce, t1_ns=t1_ns, t4_ns=t4_ns, precision_ns=self.precision_ns)
        stratum = reply.source_info.stratum if reply.source_info else _UNKNOWN_STRATUM
        if stratum == 0 or stratum >= 16:
            raise Rejected("unsynchronized", "the server says it is not synchronized")
        quality = reply.clock_quality
        return Sample(
            offset_ns=s.offset_ns,
            delay_ns=max(s.delay_ns, self.precision_ns),
            dispersion_ns=2 * self.precision_ns + (t4_ns - t1_ns) * PHI_PPM // 1_000_000,
            root_delay_ns=0,
            root_dispersion_ns=quality.error_us * 1000 if quality else 0,
            stratum=stratum,
            leap=0,
            reference_id=refid_for_address(self.ip),
            local_rx_ns=t4_ns,
        )

    def _fail(self, reason: str, message: str, *, drop: bool = False) -> None:
        if drop and self._on_drop is not None:
            self._on_drop(self.name, reason)
        if self._on_failure is not None:
            self._on_failure(self.name, f"TSQ failed: {message}")
        self._timeouts = self._timeouts + 1 if reason == "timeout" else 0
        # A reply that came (``drop``) shows the connection works: keep it.  A lost datagram
        # is one timeout; two in a row, or a connection-level failure (closed, handshake),
        # suggest the connection is gone (server restarted, path changed): reconnect at the
        # next poll.
        gone = not drop and (reason != "timeout" or self._timeouts >= 2)
        if gone and self._client is not None:
            self._client.close()
            self._client = None
        self._say(message)

    def _say(self, message: str) -> None:
        """Log a failure once until it changes; the next connect is then logged too."""
        if message != self._last_error:
            log.warning("TSQ source %s: %s", self.name, message)
            self._last_error = message
            self._say_connected = True

    def close(self) -> None:
        """Stop polling and close the connection."""
        for task in (self._task, self._keepalive):
            if task is not None:
                task.cancel()
        if self._client is not None:
            self._client.close()
            self._client = None
