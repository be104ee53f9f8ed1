"""The NTS-KE client's IO edge (RFC 8915 §4): one TLS session, one request, one response.

The request bytes and the checks on the response come from ``tsyncd/nts/ke.py``; this module
only connects, runs TLS (``tsyncd/net/tls.py``, memory BIOs on the event loop), verifies the
server's name, exports the keys and returns a ``KeResult``.  Every failure is a ``KeFailure``
with a message an operator can act on; the whole exchange has one deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address

from tsyncd.config import Endpoint
from tsyncd.net.tls import TlsClosed, TlsError, TlsStream, client_context, ssl_error_text
from tsyncd.net.udp import ip_text, is_ip_literal
from tsyncd.nts.ke import (
    CLIENT_AEADS,
    EXPORTER_LABEL,
    KeOutcome,
    KeRefused,
    client_outcome,
    client_request,
    exporter_context,
)
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntske import RecordParser, decode_response

__all__ = ["KeFailure", "KeResult", "run_ke"]

KE_TIMEOUT_S: Final = 10.0


class KeFailure(Exception):
    """NTS-KE did not give us usable keys and cookies."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeResult:
    """Keys, cookies and the NTP address one NTS-KE session gave us."""

    outcome: KeOutcome
    c2s: bytes
    s2c: bytes
    ntp_host: str  # the Server Negotiation answer, else the KE host
    ntp_port: int
    group: str | None  # TLS key-exchange group
    finished_s: float  # wall-clock time of the exchange (for "last KE")
    # The NTS-KE server's IP address this exchange reached (None: not known, a session saved
    # by an older tsyncd): tsyncctl refresh runs NTS-KE again once the name no longer gives it.
    ke_address: str | None = None


async def run_ke(
    host: str,
    port: int,
    ca_path: Path | None,
    *,
    connect_host: str | Sequence[str] | None = None,
    aeads: tuple[int, ...] = CLIENT_AEADS,
    timeout_s: float = KE_TIMEOUT_S,
) -> KeResult:
    """Run NTS-KE with ``host`` (name checked against the certificate) on ``port``, connecting
    to ``connect_host`` (default ``host``): one address or name, or several addresses tried in
    turn until one accepts, as a connection by name tries each address of the name."""
    try:
        ctx = client_context(ca_path)
    except (SSL.Error, OSError) as exc:
        # Checked with the config, so gone or changed since: say how, in the config's words.
        from tsyncd.config_host import pem_ca_problem  # forgotten after start-up: on need

        what = f"certificate-authority = {ca_path}" if ca_path else "the system trust store"
        problem = pem_ca_problem(ca_path) if ca_path is not None else None
        if problem is not None:
            raise KeFailure(f"{what}: expected {problem}") from exc
        why = ssl_error_text(exc) if isinstance(exc, SSL.Error) else str(exc)
        raise KeFailure(f"{what}: OpenSSL cannot use it ({why})") from exc
    try:
        async with asyncio.timeout(timeout_s):
            hosts = (
                (connect_host or host,) if isinstance(connect_host, str | None) else connect_host
            )
            return await _exchange(ctx, host, port, hosts, aeads, timeout_s)
    except TimeoutError:
        where = Endpoint(host, port)  # [::1]:4460, as the source is named
        raise KeFailure(f"NTS-KE with {where} timed out after {timeout_s:g} s") from None
    except OSError as exc:
        raise KeFailure(f"cannot connect to NTS-KE server {Endpoint(host, port)}: {exc}") from exc
    except (TlsError, KeRefused) as exc:  # a refusal is no bad response: say it as it came
        raise KeFailure(f"NTS-KE with {Endpoint(host, port)}: {exc}") from exc
    except WireError as exc:
        raise KeFailure(f"NTS-KE with {Endpoint(host, port)}: bad response: {exc}") from exc


CONNECT_SHARE_MIN_S: Final = 1.0


async def _connect(
    hosts: Sequence[str], port: int, timeout_s: float = KE_TIMEOUT_S
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first of ``hosts`` that accepts one; the last error if none does.

    Each address but the last gets an equal share of ``timeout_s`` (at least
    ``CONNECT_SHARE_MIN_S``) to connect: an address that swallows SYNs (a firewall, an IPv6
    route that goes nowhere) would otherwise use the whole NTS-KE deadline on every retry and
    the next address would never be tried."""
    error: OSError = OSError(f"no address to connect to for port {port}")
    share = max(CONNECT_SHARE_MIN_S, timeout_s / max(1, len(hosts)))
    for i, host in enumerate(hosts):
        try:
            if i == len(hosts) - 1:
                return await asyncio.open_connection(host, port)
            async with asyncio.timeout(share):
                return await asyncio.open_connection(host, port)
        except TimeoutError:
            error = OSError(f"connecting to {host} timed out after {share:g} s")
        except OSError as exc:
            error = exc
    raise error


async def _exchange(
    ctx: SSL.Context,
    host: str,
    port: int,
    hosts: Sequence[str],
    aeads: tuple[int, ...],
    timeout_s: float,
) -> KeResult:
    reader, writer = await _connect(hosts, port, timeout_s)
    # With no NTPv4 Server Negotiation record, NTP goes to the NTS-KE server's IP address
    # (RFC 8915 §4.1.7): the address this connection reached, not a fresh lookup of the name
    # (which may give another address first, e.g. ::1 for a localhost that listens on IPv4).
    ke_address = str(writer.get_extra_info("peername")[0])
    is_ip = is_ip_literal(host)
    tls = TlsStream(ctx, reader, writer, server=False, server_name=None if is_ip else host)
    try:
        try:
            await tls.handshake()
        except (TlsClosed, ConnectionError) as exc:
            # We did connect: a server that accepts and then closes (or resets) is no
            # "cannot connect", whichever of the two the kernel reports first.
            how = f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else ""
            raise TlsError(
                f"the server closed the connection during the TLS handshake{how}"
            ) from exc
        try:
            if is_ip:
                verify_ip_address(tls.conn, host)
            else:
                verify_hostname(tls.conn, host)
        except (VerificationError, CertificateError):  # the latter: no subjectAltName at all
            raise TlsError(_name_mismatch(tls.conn, host)) from None
        await tls.send(client_request(aeads))
        parser = RecordParser()
        records = []
        while not parser.done:
            data = await tls.recv()
            if not data:
                parser.close()
            records.extend(parser.feed(data))
        outcome = client_outcome(decode_response(tuple(records)), aeads)
        c2s = tls.export_key(
            EXPORTER_LABEL, outcome.key_len, exporter_context(outcome.context_aead, False)
        )
        s2c = tls.export_key(
            EXPORTER_LABEL, outcome.key_len, exporter_context(outcome.context_aead, True)
        )
        group = tls.group
    finally:
        await tls.close()
    return KeResult(
        outcome=outcome,
        c2s=c2s,
        s2c=s2c,
        ntp_host=outcome.server or ke_address,
        ntp_port=outcome.port,
        group=group,
        finished_s=time.time(),
        ke_address=ip_text(ke_address),
    )


def _name_mismatch(conn: SSL.Connection, host: str) -> str:
    """Why the server's certificate is not for ``host``, with the names it does carry (its
    subjectAltName DNS names and IP addresses, which are all that is checked: RFC 6125)."""
    names: list[str] = []
    cert = conn.get_peer_certificate()
    try:
        if cert is not None:
            alt = cert.to_cryptography().extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
            names = alt.value.get_values_for_type(x509.DNSName) + [
                str(ip) for ip in alt.value.get_values_for_type(x509.IPAddress)
            ]
    except (x509.ExtensionNotFound, ValueError):  # none, or one cryptography cannot parse
        pass
    if not names:
        return f"certificate names no host name or IP address (no subjectAltName); not {host}"
    return f"certificate names {', '.join(names)}; not {host}"
