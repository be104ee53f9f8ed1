"""NTS-KE decisions, sans-IO (RFC 8915 §4): what a server answers, what a client accepts.

The TLS edge (``tsyncd/net/ntske.py``) parses records with ``RecordParser``, exports keys with
the contexts computed here, and sends the bytes built here.  Nothing in this module touches a
socket or TLS object.

AEAD choice (interop trap, see the spec summary §4.1): chrony 4.4-4.6.0 export AES-128-GCM-SIV
keys with AEAD id 15 in the exporter context; chrony >= 4.6.1 signals the compliant context with
its private record 1024.  A server cannot tell a legacy chrony from a compliant client, so we
select 30 only when the request carries record 1024 (and echo it); otherwise the mandatory 15.
As a client we offer ``[30, 15]`` with record 1024 and use the compliant context only when the
server echoes it (a chrony 4.4-4.6.0 server picks 30 without the echo: legacy context).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Final

from tsyncd.nts.aead import AEADS, aead_name
from tsyncd.nts.client import MAX_COOKIE_LEN, usable_cookie
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntske import (
    AeadId,
    KeErrorCode,
    KeRequest,
    KeResponse,
    NextProtocol,
    encode_request,
    encode_response,
)

__all__ = [
    "EXPORTER_LABEL",
    "KeFailed",
    "KeOutcome",
    "KeRefused",
    "ServerChoice",
    "choose",
    "client_outcome",
    "client_request",
    "exporter_context",
    "server_response",
]

EXPORTER_LABEL: Final = b"EXPORTER-network-time-security"
"""RFC 8446 §7.5 exporter label (§5.1): exact ASCII, no NUL, no "/1"."""

COOKIES_PER_KE: Final = 8
_NTP_PORT: Final = 123  # where NTP goes without a Port Negotiation record (§4.1.8)
CLIENT_AEADS: Final = tuple(
    a for a in (AeadId.AES_128_GCM_SIV, AeadId.AES_SIV_CMAC_256) if a in AEADS
)  # GCM-SIV first where this cryptography has it (aead.py)


class KeFailed(WireError):
    """The NTS-KE server refused us or answered something we cannot use."""

    reason: ClassVar[str] = "ntske_failed"


class KeRefused(KeFailed):
    """The server said no as the protocol lets it: an Error or Warning record, or nothing
    acceptable in what we offered.  Not a bad response, so not reported as one."""

    reason: ClassVar[str] = "ntske_refused"


_ERROR_MEANINGS: Final[dict[int, str]] = {  # §4.1.3
    KeErrorCode.UNRECOGNIZED_CRITICAL_RECORD: "Unrecognized Critical Record",
    KeErrorCode.BAD_REQUEST: "Bad Request",
    KeErrorCode.INTERNAL_SERVER_ERROR: "Internal Server Error",
}


def _error_meaning(code: int) -> str:
    """What Error code ``code`` means (§4.1.3, IANA: 32768-65535 are private or experimental)."""
    if code >= 0x8000:
        return "private or experimental use"
    return _ERROR_MEANINGS.get(code, "unassigned")


def exporter_context(aead_id: int, s2c: bool, protocol: int = NextProtocol.NTPV4) -> bytes:
    """The 5-byte exporter context of §5.1: protocol, AEAD, 0 (C2S) or 1 (S2C)."""
    return struct.pack("!HHB", protocol, aead_id, 1 if s2c else 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerChoice:
    """What the server agreed to; ``aead`` None means no keys, no cookies."""

    protocol: int | None
    aead: int | None
    compliant_gcm_siv: bool = False
    context_aead: int | None = None  # AEAD id to put in the exporter context


def choose(request: KeRequest) -> ServerChoice:
    """Pick the protocol and AEAD for ``request`` (client order, our policy)."""
    if NextProtocol.NTPV4 not in request.next_protocols:
        return ServerChoice(protocol=None, aead=None)
    for aead in request.aead_algorithms:
        if aead == AeadId.AES_SIV_CMAC_256:
            return ServerChoice(protocol=0, aead=aead, context_aead=aead)
        if aead == AeadId.AES_128_GCM_SIV and request.compliant_gcm_siv and aead in AEADS:
            return ServerChoice(protocol=0, aead=aead, compliant_gcm_siv=True, context_aead=aead)
    return ServerChoice(protocol=0, aead=None)


def server_response(
    choice: ServerChoice,
    keys: KeySet | None,
    c2s: bytes,
    s2c: bytes,
    *,
    ntp_server: str | None,
    ntp_port: int | None,
) -> tuple[bytes, int]:
    """(response bytes, cookies issued) for an accepted request (keys exported by the caller)."""
    if choice.protocol is None or choice.aead is None:
        return encode_response(KeResponse(next_protocol=choice.protocol, aead=None)), 0
    if keys is None:
        return encode_response(KeResponse(error=KeErrorCode.INTERNAL_SERVER_ERROR)), 0
    session = CookieContents(aead_id=choice.aead, c2s=c2s, s2c=s2c)
    cookies = tuple(keys.seal(session) for _ in range(COOKIES_PER_KE))
    response = KeResponse(
        next_protocol=choice.protocol,
        aead=choice.aead,
        cookies=cookies,
        server=ntp_server,
        port=ntp_port if ntp_port not in (None, _NTP_PORT) else None,
        compliant_gcm_siv=choice.compliant_gcm_siv,
    )
    return encode_response(response), len(cookies)


def error_response(code: int) -> bytes:
    """An Error record response (§4.1.3)."""
    return encode_response(KeResponse(error=code))


def client_request(aeads: tuple[int, ...] = CLIENT_AEADS) -> bytes:
    """Our request: NTPv4, ``aeads`` in preference order, record 1024 when 30 is offered."""
    return encode_request(
        KeRequest(
            next_protocols=(NextProtocol.NTPV4,),
            aead_algorithms=aeads,
            compliant_gcm_siv=AeadId.AES_128_GCM_SIV in aeads,
        )
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeOutcome:
    """A usable KE response: the AEAD, where to send NTP, and the cookies."""

    aead: int
    context_aead: int  # AEAD id for the exporter context (15 for legacy chrony GCM-SIV)
    key_len: int
    server: str | None
    port: int
    cookies: tuple[bytes, ...]


def client_outcome(response: KeResponse, offered: tuple[int, ...]) -> KeOutcome:
    """Check a KE response against what we asked for; ``KeFailed`` when unusable."""
    if response.error is not None:
        code = response.error
        raise KeRefused(f"the NTS-KE server sent Error record {code} ({_error_meaning(code)})")
    if response.warnings:
        # §4.1.4: none are defined, and a client must treat an unknown one as an error.
        codes = ", ".join(map(str, response.warnings))
        plural = "s" if len(response.warnings) > 1 else ""
        raise KeRefused(
            f"the NTS-KE server sent Warning record{plural} {codes} (no warnings are defined; "
            "RFC 8915 treats unknown ones as errors)"
        )
    if response.next_protocol is None:
        raise KeRefused("the NTS-KE server accepted none of the next protocols we offered (NTPv4)")
    if response.next_protocol != NextProtocol.NTPV4:
        raise KeFailed(
            f"NTS-KE server chose next protocol {response.next_protocol}, "
            "which we did not offer (we offered NTPv4)"
        )
    ours = ", ".join(map(aead_name, offered))
    if response.aead is None:
        raise KeRefused(f"the NTS-KE server accepted none of the AEADs we offered ({ours})")
    if response.aead not in offered:
        chosen = aead_name(response.aead)
        if not chosen.startswith("AEAD"):
            chosen += f" (AEAD {response.aead})"
        raise KeFailed(f"NTS-KE server chose {chosen}, which we did not offer (we offered {ours})")
    if not response.cookies:
        raise KeFailed("NTS-KE server sent no cookies")
    # As chrony's KE client: cookies of other lengths are ignored, and none left is an error.
    cookies = tuple(c for c in response.cookies if usable_cookie(c))
    if not cookies:
        raise KeFailed(
            f"NTS-KE server sent no usable cookies ({_lengths(response.cookies)}; we take "
            f"4 to {MAX_COOKIE_LEN} bytes, a multiple of 4, as chrony does)"
        )
    aead = AEADS[response.aead]
    legacy = response.aead == AeadId.AES_128_GCM_SIV and not response.compliant_gcm_siv
    return KeOutcome(
        aead=response.aead,
        context_aead=AeadId.AES_SIV_CMAC_256 if legacy else response.aead,
        key_len=aead.key_len,
        server=response.server,
        # RFC 8915 §4.1.8: no Port Negotiation record means port 123.  A record of 0 names no
        # port a server can listen on (sendto refuses it), so we read it as no record at all,
        # as chrony's set_ntp_address does ("if (new_address.port == 0)" -> the default port).
        port=response.port or _NTP_PORT,
        cookies=cookies,
    )


def _lengths(cookies: tuple[bytes, ...]) -> str:
    """How many cookies of which lengths, e.g. "8 cookies of 2 to 300 bytes"."""
    sizes = sorted({len(c) for c in cookies})
    span = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
    unit = "byte" if sizes == [1] else "bytes"
    return f"{len(cookies)} cookie{'s' if len(cookies) > 1 else ''} of {span} {unit}"
