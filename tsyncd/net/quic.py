"""QUIC plumbing shared by the TSQ servers and clients (aioquic): configurations and a
protocol base that timestamps every arriving UDP packet.

The reference speaks ALPN ``tsq/1`` (shared/specs/tsq.md §1; the draft's ``tsq`` is rejected by
deployed servers).  Which TSQ variant a connection speaks is decided by the port, never
negotiated: a datagram endpoint advertises ``max_datagram_frame_size`` (the quiche server sends
nothing to a peer that does not, spec §2.1), a stream endpoint does not (and aioquic then closes
the connection on a DATAGRAM frame, as the reference stream server does, spec §2.3).
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection


class RepeatFilter(logging.Filter):
    """Leaves out an aioquic line said already within the last ``window_s`` seconds.

    aioquic logs a connection's failure with the connection's ID (``[5f2a...] Error: 298,
    reason: certificate signature failure``), so a source that fails the same way at every
    poll, with a new connection each time, would log the same line at every poll.  Lines are
    compared without the ID; the last ``size`` distinct ones are remembered.
    """

    _CONNECTION_ID: Final = re.compile(r"^\[[0-9a-f]*\] ")

    def __init__(self, window_s: float = 3600.0, size: int = 64) -> None:
        super().__init__()
        self.window_s = window_s
        self.size = size
        self._said: OrderedDict[str, float] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        text = self._CONNECTION_ID.sub("", record.getMessage(), count=1)
        now = time.monotonic()
        said = self._said.get(text)
        if said is not None and now - said < self.window_s:
            return False
        self._said[text] = now
        self._said.move_to_end(text)
        while len(self._said) > self.size:
            self._said.popitem(last=False)
        return True


_quic_log = logging.getLogger("quic")
if _quic_log.level == logging.NOTSET:
    # aioquic logs every connection's version and ALPN at INFO: noise for a time server.  A
    # level set already is kept: tsyncctl's tsq commands silence aioquic before importing us.
    _quic_log.setLevel(logging.WARNING)
if not any(isinstance(f, RepeatFilter) for f in _quic_log.filters):
    _quic_log.addFilter(RepeatFilter())

ALPN: Final = "tsq/1"
MAX_DATAGRAM_FRAME_SIZE: Final = 65536  # what quiche's enable_dgram advertises (spec §2.1)
SERVER_IDLE_TIMEOUT_S: Final = 30.0  # the reference datagram server's max_idle_timeout
STREAM_PORT: Final = 8443  # the public reference host's stream server (spec §1)
DATAGRAM_PORT: Final = 443  # ... and its datagram server

Transport = Literal["stream", "datagram"]
NowNs = Callable[[], int]


def server_configuration(
    transport: Transport, certificate_chain: Path, private_key: Path
) -> QuicConfiguration:
    """A server configuration for one variant; raises OSError/ValueError on bad PEM files."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        idle_timeout=SERVER_IDLE_TIMEOUT_S,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE if transport == "datagram" else None,
    )
    config.load_cert_chain(certificate_chain, private_key)
    return config


def client_configuration(
    transport: Transport,
    *,
    server_name: str | None,
    ca_file: Path | None = None,
    insecure: bool = False,
    idle_timeout_s: float = SERVER_IDLE_TIMEOUT_S,
) -> QuicConfiguration:
    """A client configuration: verify against ``ca_file`` (else certifi's bundle) unless
    ``insecure``; SNI and the name verified are ``server_name``."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout_s,
        server_name=server_name,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE if transport == "datagram" else None,
    )
    if insecure:
        config.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        config.load_verify_locations(cafile=str(ca_file))
    return config


def limit_client_streams(connection: QuicConnection, count: int) -> None:
    """Advertise at most ``count`` client bidirectional streams (0 for the datagram variant,
    as the reference datagram server does, spec §2.1).

    aioquic has no configuration knob for it; the limit is read when the transport parameters
    are built during the handshake, so setting it on a fresh connection takes effect.
    """
    connection._local_max_streams_bidi.value = count
    connection._local_max_streams_uni.value = 0


class TimestampedProtocol(QuicConnectionProtocol):
    """A QUIC connection protocol that reads ``now_ns()`` as each UDP packet arrives, before
    decryption, so T2 (servers) and T4 (clients) exclude aioquic's processing of the packet."""

    def __init__(self, quic: QuicConnection, *, now_ns: NowNs, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.now_ns = now_ns
        self.rx_ns = 0  # arrival time of the packet being processed

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        self.rx_ns = self.now_ns()
        super().datagram_received(data, addr)
