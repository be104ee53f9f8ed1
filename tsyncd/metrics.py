"""Prometheus exporter: ``GET /metrics`` built from fresh snapshots at every scrape.

Theory of operation: a private ``CollectorRegistry`` holds one custom collector that asks the
``SnapshotProvider`` for the system, source and server snapshots when Prometheus scrapes, so
there is no second copy of the state to keep in step (the same rule as the control socket:
read snapshots, never live objects).  The HTTP side is a deliberately tiny asyncio server on
the daemon's event loop, no threads: one GET per connection, answered and closed, with a cap
on request size, time and concurrent connections, since a scraper is the only expected client.
One client address holds at most half of the connections, so a slow or hostile client on one
host cannot lock the scraper out.  A connection over a cap has its request read (briefly)
before its 503, as closing with unread data would reset the connection instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tsyncd import __version__
from tsyncd.net.tcp import start_tcp_server
from tsyncd.snapshots import (
    ServerStatsSnapshot,
    SnapshotProvider,
    SourceSnapshot,
    TsqServerStatsSnapshot,
)

logger = logging.getLogger(__name__)

LEAP_VALUES = {"none": 0, "insert": 1, "delete": 2, "unsynchronized": 3}
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16
MAX_CONNECTIONS_PER_IP = MAX_CONNECTIONS // 2
REFUSE_READ_TIMEOUT_S = 1.0  # how long a refused connection may take to send its request


class SnapshotCollector(Collector):
    """Turns the provider's snapshots into metric families at scrape time.

    A value that is None (not measured yet) leaves its sample out rather than inventing 0.
    """

    def __init__(self, provider: SnapshotProvider) -> None:
        self._provider = provider

    def collect(self) -> Iterator[Metric]:
        yield from self._system()
        yield from self._sources()
        yield from self._server()
        build = GaugeMetricFamily(
            "tsyncd_build_info", "tsyncd build information (always 1).", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build

    def _system(self) -> Iterator[Metric]:
        snap = self._provider.system_snapshot()

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc)
            if value is not None:
                family.add_metric([], value)
            return family

        yield gauge(
            "tsyncd_system_offset_seconds",
            "Estimated correction to add to the clock (chrony sign: positive means slow); "
            "absent while unsynchronized.",
            # Unsynchronized there is no estimate: a 0 would read as a perfect clock.
            snap.offset if snap.synchronized else None,
        )
        yield gauge(
            "tsyncd_system_stratum", "Stratum we serve (16 when unsynchronized).", snap.stratum
        )
        yield gauge(
            "tsyncd_system_root_delay_seconds",
            "Round-trip delay to the primary reference.",
            snap.root_delay,
        )
        yield gauge(
            "tsyncd_system_root_dispersion_seconds",
            "Error bound accumulated up to the primary reference.",
            snap.root_dispersion,
        )
        yield gauge(
            "tsyncd_system_leap",
            "Leap indicator: 0 none, 1 insert, 2 delete, 3 unsynchronized.",
            LEAP_VALUES.get(snap.leap),
        )
        yield gauge("tsyncd_system_poll_log2_seconds", "System poll interval (log2 s).", snap.poll)
        yield gauge(
            "tsyncd_system_precision_log2_seconds", "Clock precision (log2 s).", snap.precision
        )
        yield gauge(
            "tsyncd_system_synchronized",
            "1 if a source is selected and the offset is known, else 0.",
            1 if snap.synchronized else 0,
        )
        yield gauge(
            "tsyncd_system_uptime_seconds", "Seconds since the daemon started.", snap.uptime
        )

    def _sources(self) -> Iterator[Metric]:
        sources = self._provider.source_snapshots()
        labels = ["source", "address"]
        gauges = {
            "offset": GaugeMetricFamily(
                "tsyncd_source_offset_seconds",
                "Offset of the source from our clock (positive: source ahead).",
                labels=labels,
            ),
            "delay": GaugeMetricFamily(
                "tsyncd_source_delay_seconds", "Round-trip delay to the source.", labels=labels
            ),
            "jitter": GaugeMetricFamily(
                "tsyncd_source_jitter_seconds", "Jitter of the source's offsets.", labels=labels
            ),
            "dispersion": GaugeMetricFamily(
                "tsyncd_source_dispersion_seconds", "Dispersion of the source.", labels=labels
            ),
            "reach": GaugeMetricFamily(
                "tsyncd_source_reach",
                "8-bit reachability register (377 octal = 255).",
                labels=labels,
            ),
            "poll": GaugeMetricFamily(
                "tsyncd_source_poll_log2_seconds", "Poll interval (log2 s).", labels=labels
            ),
            "stratum": GaugeMetricFamily(
                "tsyncd_source_stratum", "Stratum the source reported.", labels=labels
            ),
            "selected": GaugeMetricFamily(
                "tsyncd_source_selected", "1 for the system peer, else 0.", labels=labels
            ),
            "online": GaugeMetricFamily(
                "tsyncd_source_online",
                "1 while the source is polled, 0 after tsyncctl offline or a KoD DENY/RSTR stop.",
                labels=labels,
            ),
        }
        counters = {
            "packets_sent": CounterMetricFamily(
                "tsyncd_source_packets_sent", "Requests sent to the source.", labels=labels
            ),
            "packets_received": CounterMetricFamily(
                "tsyncd_source_packets_received", "Valid replies from the source.", labels=labels
            ),
            "packets_dropped": CounterMetricFamily(
                "tsyncd_source_packets_dropped", "Replies that failed a check.", labels=labels
            ),
        }
        dropped = CounterMetricFamily(
            "tsyncd_source_dropped_packets",
            "Replies from the source that failed a check, by reason.",
            labels=[*labels, "reason"],
        )
        # chrony_exporter's pattern: the state as labels of a gauge that is 1, so a query can
        # group sources by it; code is tsyncctl selectdata's letter ("" before a selection).
        state = GaugeMetricFamily(
            "tsyncd_source_state_info",
            "1, labelled with the source's selection state and selectdata letter.",
            labels=[*labels, "state", "code"],
        )
        for src in sources:
            state.add_metric([src.name, src.address, src.state, src.select_code or ""], 1)
            values: dict[str, float | None] = {
                "offset": src.offset,
                "delay": src.delay,
                "jitter": src.jitter,
                "dispersion": src.dispersion,
                "reach": src.reach,
                "poll": src.poll,
                "stratum": src.stratum,
                "selected": 1 if src.state == "selected" else 0,
                "online": 1 if src.online else 0,
            }
            label_values = [src.name, src.address]
            for key, family in gauges.items():
                value = values[key]
                if value is not None:
                    family.add_metric(label_values, value)
            counters["packets_sent"].add_metric(label_values, src.packets_sent)
            counters["packets_received"].add_metric(label_values, src.packets_received)
            counters["packets_dropped"].add_metric(label_values, src.packets_dropped)
            for reason, count in sorted(src.drops_by_reason.items()):
                dropped.add_metric([*label_values, reason], count)
        yield from gauges.values()
        yield from counters.values()
        yield dropped
        yield state
        nts = [src for src in sources if src.nts is not None]
        if nts:
            yield from _nts_source_metrics(nts)

    def _server(self) -> Iterator[Metric]:
        snap = self._provider.server_snapshot()
        received = CounterMetricFamily(
            "tsyncd_server_received_packets", "Datagrams the NTP server read."
        )
        received.add_metric([], snap.received)
        sent = CounterMetricFamily("tsyncd_server_sent_packets", "Responses the NTP server sent.")
        sent.add_metric([], snap.sent)
        dropped = _by_reason(
            "tsyncd_server_dropped_packets",
            "Requests answered with nothing, by reason.",
            snap.dropped_by_reason,
        )
        kod = CounterMetricFamily("tsyncd_server_kod_sent", "Kiss-o'-Death responses sent.")
        kod.add_metric([], snap.kod_sent)
        answered = CounterMetricFamily(
            "tsyncd_server_answered_packets",
            "Responses carrying time, by mode.",
            labels=["mode"],
        )
        answered.add_metric(["basic"], snap.answered - snap.interleaved_answered)
        answered.add_metric(["interleaved"], snap.interleaved_answered)
        clients = GaugeMetricFamily(
            "tsyncd_server_clients", "Different client IPs in the servers' client logs."
        )
        clients.add_metric([], snap.clients)
        evicted = CounterMetricFamily(
            "tsyncd_server_clients_evicted", "Client log entries forgotten to make room."
        )
        evicted.add_metric([], snap.clients_evicted)
        workers = GaugeMetricFamily("tsyncd_server_workers", "Server receive worker processes.")
        workers.add_metric([], snap.workers)
        restarts = CounterMetricFamily(
            "tsyncd_server_worker_restarts", "Server workers restarted after dying."
        )
        restarts.add_metric([], snap.worker_restarts)
        yield from (received, sent, dropped, kod, answered, clients, evicted, workers, restarts)
        if snap.nts_key_epoch is not None:  # NTS keys loaded: NTS-KE and/or NTS served
            yield from _nts_server_metrics(snap)
        yield from _tsq_server_metrics(snap.tsq)


def _by_reason(name: str, text: str, counts: dict[str, int]) -> CounterMetricFamily:
    """A counter family with a ``reason`` label, one sample per reason."""
    family = CounterMetricFamily(name, text, labels=["reason"])
    for reason, count in sorted(counts.items()):
        family.add_metric([reason], count)
    return family


def _nts_server_metrics(snap: ServerStatsSnapshot) -> Iterator[Metric]:
    """NTS-KE sessions and NTS traffic (RFC 8915), the counters ``tsyncctl serverstats`` shows."""
    counters = (
        ("tsyncd_nts_ke_connections", "NTS-KE TCP connections accepted.", snap.nts_ke_connections),
        (
            "tsyncd_nts_ke_completed",
            "NTS-KE sessions that ended with cookies.",
            snap.nts_ke_completed,
        ),
        ("tsyncd_nts_ke_failures", "NTS-KE sessions that failed.", snap.nts_ke_failures),
        (
            "tsyncd_nts_cookies_issued",
            "NTS cookies issued (NTS-KE and NTS responses).",
            snap.nts_cookies_issued,
        ),
        (
            "tsyncd_nts_requests",
            "NTS requests answered with authenticated responses.",
            snap.nts_requests,
        ),
        ("tsyncd_nts_naks", "NTS NAKs sent (cookie or authenticator not accepted).", snap.nts_naks),
    )
    for name, text, value in counters:
        family = CounterMetricFamily(name, text)
        family.add_metric([], value)
        yield family
    yield _by_reason(
        "tsyncd_nts_ke_failed_sessions",
        "NTS-KE sessions that failed, by reason.",
        snap.nts_ke_failures_by_reason,
    )
    epoch = GaugeMetricFamily("tsyncd_nts_key_epoch", "Key id of the current NTS cookie key.")
    epoch.add_metric([], snap.nts_key_epoch or 0)
    yield epoch
    if snap.nts_key_id is not None:  # one value across a fleet sharing a key file
        key = GaugeMetricFamily(
            "tsyncd_nts_key_info",
            "Fingerprint of the current NTS cookie key (members sharing keys show one value).",
            labels=["key_id"],
        )
        key.add_metric([snap.nts_key_id], 1)
        yield key


def _nts_source_metrics(sources: list[SourceSnapshot]) -> Iterator[Metric]:
    """Per NTS source: cookies held, key exchanges and their failures, NAKs, key age, and a
    key exchange backing off, so an operator can alert on NTS-KE failing (an expired
    certificate shows nowhere else: the source just never answers)."""
    labels = ["source", "address"]
    cookies = GaugeMetricFamily(
        "tsyncd_source_nts_cookies", "Unused NTS cookies the source holds.", labels=labels
    )
    kes = CounterMetricFamily(
        "tsyncd_source_nts_key_exchanges", "Successful NTS-KE sessions.", labels=labels
    )
    failures = CounterMetricFamily(
        "tsyncd_source_nts_key_exchange_failures", "Failed NTS-KE attempts.", labels=labels
    )
    naks = CounterMetricFamily("tsyncd_source_nts_naks", "NTS NAKs received.", labels=labels)
    authenticated = CounterMetricFamily(
        "tsyncd_source_nts_authenticated_responses",
        "Responses that passed NTS authentication.",
        labels=labels,
    )
    age = GaugeMetricFamily(
        "tsyncd_source_nts_key_age_seconds",
        "Seconds since the NTS-KE that gave the keys in use (absent while none are).",
        labels=labels,
    )
    backoff = GaugeMetricFamily(
        "tsyncd_source_nts_key_exchange_backoff_seconds",
        "Seconds until the next NTS-KE while one waits out a back-off, else 0.",
        labels=labels,
    )
    for src in sources:
        n = src.nts
        assert n is not None
        values = [src.name, src.address]
        cookies.add_metric(values, n.cookies)
        kes.add_metric(values, n.key_exchanges)
        failures.add_metric(values, n.ke_failures)
        naks.add_metric(values, n.naks)
        authenticated.add_metric(values, n.authenticated)
        if n.last_ke is not None:
            age.add_metric(values, n.last_ke)
        backoff.add_metric(values, n.next_ke or 0.0)
    yield from (cookies, kes, failures, naks, authenticated, age, backoff)


def _tsq_server_metrics(servers: list[TsqServerStatsSnapshot]) -> Iterator[Metric]:
    """TSQ server counters, labelled by listening address and transport."""
    labels = ["listen", "transport"]
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        "received": CounterMetricFamily(
            "tsyncd_tsq_server_received_requests", "TSQ requests received.", labels=labels
        ),
        "sent": CounterMetricFamily(
            "tsyncd_tsq_server_sent_responses", "TSQ time responses sent.", labels=labels
        ),
        "errors_sent": CounterMetricFamily(
            "tsyncd_tsq_server_error_responses", "TSQ Error TLV responses sent.", labels=labels
        ),
        "connections_accepted": CounterMetricFamily(
            "tsyncd_tsq_server_connections_accepted", "QUIC connections accepted.", labels=labels
        ),
        "connections_refused": CounterMetricFamily(
            "tsyncd_tsq_server_connections_refused",
            "QUIC connections refused (per-client limit).",
            labels=labels,
        ),
        "connections": GaugeMetricFamily(
            "tsyncd_tsq_server_connections", "QUIC connections open.", labels=labels
        ),
    }
    dropped = CounterMetricFamily(
        "tsyncd_tsq_server_dropped_requests",
        "TSQ requests answered with no time, by reason.",
        labels=[*labels, "reason"],
    )
    for snap in servers:
        for key, family in families.items():
            family.add_metric([snap.listen, snap.transport], getattr(snap, key))
        for reason, count in sorted(snap.dropped_by_reason.items()):
            dropped.add_metric([snap.listen, snap.transport, reason], count)
    yield from families.values()
    yield dropped


class MetricsExporter:
    """Serves ``/metrics`` over HTTP on ``host``:``port`` (port 0 picks a free one)."""

    def __init__(self, provider: SnapshotProvider, host: str, port: int) -> None:
        self._host = host
        self._requested_port = port
        self._provider = provider
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(provider))
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_ip: dict[str, int] = {}  # open connections per client address
        self._refusing: set[asyncio.Task[None]] = set()  # connections over a cap, being told

    @property
    def port(self) -> int:
        """The port actually bound; raises RuntimeError before ``start()``."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("metrics exporter is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        """Connections being served right now (refused ones not counted)."""
        return len(self._tasks)

    async def start(self) -> None:
        """Bind and start serving; OSError (e.g. port in use) propagates to the caller."""
        self._server = await start_tcp_server(
            self._serve, self._host, self._requested_port, limit=MAX_REQUEST_BYTES
        )
        logger.info("metrics exporter listening on %s port %d", self._host, self.port)

    async def close(self) -> None:
        """Stop serving and drop open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = [*self._tasks, *self._refusing]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        counted = False
        try:
            if len(self._tasks) >= MAX_CONNECTIONS or (
                self._by_ip.get(ip, 0) >= MAX_CONNECTIONS_PER_IP
            ):
                await self._refuse(reader, writer, task)
                return
            if task is not None:
                self._tasks.add(task)
            self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
            counted = True
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                # Providers whose counters live in other processes (server workers) may
                # gather them first, so a scrape shows what has been served up to now.
                refresh = getattr(self._provider, "refresh_snapshots", None)
                if refresh is not None:
                    await refresh()
                status, content_type, body, head_only = self._route(head)
                await self._respond(writer, status, content_type, body, head_only=head_only)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass  # a scraper that hung up or sent junk: nothing to answer
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a collector must not stop the exporter
            logger.exception("metrics request failed")
            with contextlib.suppress(Exception):
                await self._respond(writer, 500, "text/plain", b"internal error, see the log\n")
        finally:
            if task is not None:
                self._tasks.discard(task)
            if counted:
                left = self._by_ip.pop(ip, 1) - 1
                if left > 0:
                    self._by_ip[ip] = left
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refuse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        task: asyncio.Task[None] | None,
    ) -> None:
        """503 for a connection over a cap, after reading its request (closing with the
        request unread would reset the connection, and the scraper would see no answer).
        At most ``MAX_CONNECTIONS`` are told at once; beyond that, a flood: just close."""
        if len(self._refusing) >= MAX_CONNECTIONS or task is None:
            return
        self._refusing.add(task)
        try:
            with contextlib.suppress(
                asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError
            ):
                async with asyncio.timeout(REFUSE_READ_TIMEOUT_S):
                    await reader.readuntil(b"\r\n\r\n")
            await self._respond(writer, 503, "text/plain", b"too many connections\n")
        finally:
            self._refusing.discard(task)

    def _route(self, head: bytes) -> tuple[int, str, bytes, bool]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain", b"bad request\n", False
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD are supported\n", False
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), method == "HEAD"
        if path == "/":
            body = b'<html><body><a href="/metrics">tsyncd metrics</a></body></html>\n'
            return 200, "text/html; charset=utf-8", body, method == "HEAD"
        return 404, "text/plain", b"not found; metrics are at /metrics\n", method == "HEAD"

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        body: bytes,
        *,
        head_only: bool = False,
    ) -> None:
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        reasons.update({500: "Internal Server Error", 503: "Service Unavailable"})
        head = (
            f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        writer.write(head if head_only else head + body)
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            await writer.drain()
