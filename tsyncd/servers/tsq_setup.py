"""What the daemon needs to run TSQ servers: start one from its config, describe our clock to
clients who ask (Clock Quality and Time Source Info from the system state), and snapshot the
counters.  Kept apart from ``daemon.py`` so the daemon only calls three functions."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from tsyncd import __version__
from tsyncd.config import Config, TsqServerConfig
from tsyncd.net.sockets import listen_error
from tsyncd.servers.credentials import ServedCredentials
from tsyncd.snapshots import TsqServerStatsSnapshot
from tsyncd.sync.core import SyncCore

if TYPE_CHECKING:
    from tsyncd.servers.tsq import TsqServer, TsqServerInfo

_U16: Final = 0xFFFF
# What aioquic's load_cert_chain raises for PEM files it cannot use, besides OSError.
TSQ_CREDENTIAL_ERRORS: Final = (ValueError, TypeError)


def require_aioquic(config: Config) -> None:
    """OSError if the config uses TSQ and aioquic is missing (Debian 12 does not package it).

    Everything that imports aioquic is imported lazily, so tsyncd without TSQ runs without it.
    """
    if not config.tsq_servers and not any(s.mode == "tsq" for s in config.sources):
        return
    try:
        import aioquic  # noqa: F401
    except ImportError:
        from tsyncd.config_host import AIOQUIC_HINT

        raise OSError(f"TSQ needs the Python package aioquic ({AIOQUIC_HINT})") from None


async def start_tsq_server(
    cfg: TsqServerConfig,
    now_ns: Callable[[], int],
    info: Callable[[], TsqServerInfo],
    where: str = "tsq-server",
) -> tuple[TsqServer, ServedCredentials]:
    """Load the certificate and bind; OSError naming the file if a PEM file is unusable, or
    ``where``'s listen address if it cannot be bound.  With the server, its files as loaded,
    for ``reload_changed`` to serve renewed ones (the connections to come use them)."""
    from tsyncd.net.quic import server_configuration
    from tsyncd.servers.tsq import TsqResponder, TsqServer

    chain, key = cfg.certificate_chain_path, cfg.private_key_path
    try:
        served = ServedCredentials.watch(
            where,
            chain,
            key,
            lambda: server.use_configuration(server_configuration(cfg.transport, chain, key)),
        )
        configuration = server_configuration(cfg.transport, chain, key)
    except (OSError, *TSQ_CREDENTIAL_ERRORS) as exc:
        raise OSError(f"cannot load the TSQ certificate {chain} or key {key}: {exc}") from exc
    try:
        server = await TsqServer.create(
            cfg.listen.host,
            cfg.listen.port,
            cfg.transport,
            configuration,
            TsqResponder(now_ns, info),
            max_connections_per_client=cfg.max_connections_per_client,
        )
    except OSError as exc:
        raise listen_error(f"{where}.listen", cfg.listen, exc) from exc
    return server, served


def tsq_server_info(core: SyncCore, now_ns: int) -> TsqServerInfo:
    """Our clock as TSQ's optional TLVs describe it (draft §5.3, §5.6).

    Synchronized: class "NTP-synced", our stratum, the system peer's name, an error of half
    the root delay plus the root dispersion (RFC 5905's root distance), and as the drift the
    skew ``tsyncctl tracking`` shows (the 99.9 % bound of our frequency's error, in ppb).
    Serving the local clock (local-stratum): class unknown, source type "manual".  Otherwise
    stratum 0, which tells clients not to use us.  Unsynchronized, the drift is unknown: the
    field's largest value (tracking shows 0.000 there, as chronyc does).
    """
    # Imported here, like the TSQ server itself: a daemon without TSQ never loads the codec.
    from tsyncd.servers.tsq import TsqServerInfo
    from tsyncd.wire.tsq import (
        SOURCE_INFO_TEXT_MAX,
        ClockClass,
        ClockQuality,
        SourceInfo,
        SourceType,
        clip_utf8,
    )

    d = core.decision
    error_ns = d.root_delay_ns // 2 + d.root_dispersion_ns
    skew_ppm = core.reference_skew_ppm(now_ns) if d.synchronized else math.inf
    drift_ppb = min(_U16, math.ceil(abs(skew_ppm) * 1000)) if math.isfinite(skew_ppm) else _U16
    if d.synchronized:
        clock_class, stratum, source_type = ClockClass.NTP_SYNCED, d.stratum, SourceType.NTP
    elif core.system.local_stratum is not None:
        clock_class, stratum, source_type = ClockClass.UNKNOWN, d.stratum, SourceType.MANUAL
    else:
        clock_class, stratum, source_type = ClockClass.UNKNOWN, 0, SourceType.UNKNOWN
    return TsqServerInfo(
        clock_quality=ClockQuality(
            clock_class=clock_class,
            error_us=min(_U16, math.ceil(error_ns / 1000)),
            drift_ppb=drift_ppb,
        ),
        source_info=SourceInfo(
            stratum=stratum if stratum < 16 else 0,
            source_type=source_type,
            # The name as it fits the TLV: in bytes, cut on a character boundary.
            info=clip_utf8(d.selected or "", SOURCE_INFO_TEXT_MAX).decode(),
        ),
        metadata=(("implementation", "tsyncd"), ("version", __version__)),
    )


def tsq_server_snapshots(servers: Iterable[TsqServer]) -> list[TsqServerStatsSnapshot]:
    """Counters of each TSQ server."""
    out: list[TsqServerStatsSnapshot] = []
    for server in servers:
        c = server.responder.counters
        out.append(
            TsqServerStatsSnapshot(
                listen=server.listen,
                transport=server.transport,
                connections=server.connections(),
                connections_accepted=c.connections,
                connections_refused=c.connections_refused,
                received=c.received,
                sent=c.sent,
                errors_sent=c.errors_sent,
                dropped=c.dropped,
                dropped_by_reason=dict(c.dropped_by_reason),
            )
        )
    return out
