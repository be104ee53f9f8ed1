"""TLS 1.3 for NTS-KE on the event loop: pyOpenSSL through memory BIOs, no threads.

Why pyOpenSSL: NTS-KE derives the NTP keys with the TLS exporter (RFC 8915 §5.1), which the
stdlib ``ssl`` module does not offer.  pyOpenSSL has no asyncio transport, so a
``SSL.Connection`` without a socket sits between two memory BIOs: whatever OpenSSL wants to
send is drained from the BIO into the asyncio writer, and whatever arrives from the reader is
pushed into it.  Each ``WantReadError`` means "flush, then wait for more bytes".

Post-quantum: OpenSSL >= 3.5 offers X25519MLKEM768 first by default (and a key share for it), so
the hybrid is preferred whenever the library has it; ``group`` reports what was negotiated.
pyOpenSSL exposes no call to change the group list, so we do not try.

Why a client's certificate check failed: OpenSSL only says "certificate verify failed", and
pyOpenSSL has no ``SSL_get_verify_result``.  The client context's verify callback sees each
certificate's error number; the first failure is kept on the connection (its app data) and
``handshake`` names it in OpenSSL's words ("certificate has expired"), as chronyd does.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Final

from OpenSSL import SSL, crypto

from tsyncd.wire.ntske import ALPN

__all__ = [
    "AlpnError",
    "TlsClosed",
    "TlsError",
    "TlsStream",
    "client_context",
    "server_context",
    "ssl_error_text",
]

_CHUNK: Final = 65536


class TlsError(Exception):
    """The TLS session failed (handshake, ALPN, certificate, or the peer went away).
    ``reason``: the NTS-KE server's failure counter it goes to."""

    reason = "tls"


class AlpnError(TlsError):
    """The peer did not offer or choose ALPN ``ntske/1`` (RFC 8915 §4)."""

    reason = "alpn"


class _AlpnRefused(SSL.Error):
    """Raised by the server's ALPN callback: pyOpenSSL then fails the handshake with a
    ``no_application_protocol`` alert (RFC 7301 §3.2) and raises this from ``do_handshake``."""


class TlsClosed(TlsError):
    """The peer closed the connection before the handshake was done."""


def ssl_error_text(exc: BaseException) -> str:
    """OpenSSL's reasons in ``exc`` ("no certificate or crl found"), without the
    ``[('x509 certificate routines', '', ...)]`` list pyOpenSSL shows."""
    queue = exc.args[0] if exc.args else None
    if isinstance(queue, list):
        reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry[-1]]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
    return str(exc) or type(exc).__name__


def _tls13_context() -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    # RFC 8915 §3: NTS-KE never runs over anything older than TLS 1.3.
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    return ctx


def server_context(chain_path: Path, key_path: Path) -> SSL.Context:
    """Context for an NTS-KE server; ``SSL.Error``/``OSError`` if the files are unusable."""
    ctx = _tls13_context()
    ctx.use_certificate_chain_file(str(chain_path))
    ctx.use_privatekey_file(str(key_path))
    ctx.check_privatekey()

    def select_alpn(_conn: SSL.Connection, offered: list[bytes]) -> bytes:
        # RFC 7301 §3.2: a server that supports none of the offered protocols answers with a
        # fatal no_application_protocol alert.  Returning NO_OVERLAPPING_PROTOCOLS would let
        # the handshake finish without ALPN and leave the client guessing why we hang up.
        if ALPN not in offered:
            raise _AlpnRefused(f"client offered ALPN {offered!r}, not ntske/1")
        return ALPN

    ctx.set_alpn_select_callback(select_alpn)
    # Session tickets only cost us bytes: NTS-KE clients connect rarely and never resume.
    ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


def client_context(ca_path: Path | None) -> SSL.Context:
    """Context for an NTS-KE client trusting ``ca_path`` (PEM), else the system store."""
    ctx = _tls13_context()
    ctx.set_verify(SSL.VERIFY_PEER, _note_verify_failure)
    if ca_path is not None:
        ctx.load_verify_locations(str(ca_path))
    else:
        ctx.set_default_verify_paths()
    ctx.set_alpn_protos([ALPN])
    return ctx


def _note_verify_failure(
    conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    """OpenSSL's verify callback: keep why the first certificate failed; change nothing."""
    failures = conn.get_app_data()
    if not ok and isinstance(failures, list) and not failures:
        which = "the server's certificate" if depth == 0 else f"certificate {depth} up its chain"
        try:  # an exception here would end the handshake as something else than SSL.Error
            subject = cert.to_cryptography().subject.rfc4514_string()  # e.g. "CN=localhost"
        except Exception:
            subject = ""
        failures.append(f"{verify_error_text(errnum)} ({which}{', ' if subject else ''}{subject})")
    return bool(ok)


def verify_error_text(errnum: int) -> str:
    """OpenSSL's text for the X509 verify error ``errnum`` (``X509_verify_cert_error_string``,
    through the bindings pyOpenSSL itself uses for ``X509StoreContextError``)."""
    try:
        from OpenSSL._util import ffi, lib

        text: bytes = ffi.string(lib.X509_verify_cert_error_string(errnum))
        return text.decode("ascii", "replace")
    except (ImportError, AttributeError):  # bindings without it: the number, at least
        return f"X509 verify error {errnum}"


class TlsStream:
    """One TLS connection over an asyncio stream pair (server or client side)."""

    def __init__(
        self,
        ctx: SSL.Context,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        server: bool,
        server_name: str | None = None,
    ) -> None:
        self.conn = SSL.Connection(ctx, None)
        self._verify_failures: list[str] = []  # from _note_verify_failure, client side
        self.conn.set_app_data(self._verify_failures)
        if server:
            self.conn.set_accept_state()
        else:
            self.conn.set_connect_state()
            if server_name is not None:
                self.conn.set_tlsext_host_name(server_name.encode("idna"))
        self._reader = reader
        self._writer = writer

    async def _flush(self) -> None:
        out = bytearray()
        while True:
            try:
                out += self.conn.bio_read(_CHUNK)
            except SSL.WantReadError:
                break
        if out:
            self._writer.write(bytes(out))
            await self._writer.drain()

    async def _fill(self) -> bool:
        data = await self._reader.read(_CHUNK)
        if not data:
            self.conn.bio_shutdown()
            return False
        self.conn.bio_write(data)
        return True

    async def handshake(self) -> None:
        """Run the handshake and check ALPN ``ntske/1``; ``TlsError`` on any failure."""
        try:
            while True:
                try:
                    self.conn.do_handshake()
                    break
                except SSL.WantReadError:
                    await self._flush()
                    if not await self._fill():
                        raise TlsClosed("connection closed during the TLS handshake") from None
            await self._flush()
        except _AlpnRefused as exc:
            await self._flush_quietly()  # the alert
            raise AlpnError(f"TLS handshake failed: {exc}") from None
        except SSL.Error as exc:
            await self._flush_quietly()
            if self._verify_failures:
                why = self._verify_failures[0]
                raise TlsError(f"TLS handshake failed: certificate not trusted: {why}") from None
            raise TlsError(f"TLS handshake failed: {exc}") from None
        if self.conn.get_alpn_proto_negotiated() != ALPN:
            # A client that offers no ALPN at all never reaches select_alpn (OpenSSL calls it
            # only for an offer), and pyOpenSSL cannot send an alert after the handshake.
            raise AlpnError("peer did not negotiate ALPN ntske/1")

    async def _flush_quietly(self) -> None:
        """Send a pending alert, if any, ignoring a dead connection."""
        with contextlib.suppress(OSError, SSL.Error):
            await self._flush()

    async def recv(self) -> bytes:
        """Application bytes; b"" once the peer closed (close_notify or EOF)."""
        try:
            while True:
                try:
                    return self.conn.recv(_CHUNK)
                except SSL.WantReadError:
                    await self._flush()
                    if not await self._fill():
                        return b""
                except SSL.ZeroReturnError:
                    return b""
        except SSL.Error as exc:
            raise TlsError(f"TLS receive failed: {exc}") from None

    async def send(self, data: bytes) -> None:
        """Send application bytes now."""
        try:
            self.conn.sendall(data)
        except SSL.Error as exc:
            raise TlsError(f"TLS send failed: {exc}") from None
        await self._flush()

    async def close(self) -> None:
        """Send close_notify (best effort) and close the stream."""
        try:
            self.conn.shutdown()
            await self._flush()
        except (OSError, SSL.Error):
            pass
        self._writer.close()

    def export_key(self, label: bytes, length: int, context: bytes) -> bytes:
        """RFC 8446 §7.5 exporter output (RFC 8915 §5.1)."""
        return self.conn.export_keying_material(label, length, context)

    @property
    def group(self) -> str | None:
        """The negotiated key-exchange group, e.g. "X25519MLKEM768" or "x25519"; None where
        pyOpenSSL cannot tell (before 24.3, e.g. Debian 12's 23.0)."""
        get_group_name = getattr(self.conn, "get_group_name", None)
        if get_group_name is None:
            return None
        try:
            name: str | None = get_group_name()
        except (NotImplementedError, SSL.Error):
            return None
        return name
