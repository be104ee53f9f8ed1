"""An NTS client's session kept across restarts: keys, unused cookies, and where NTP goes.

Why: without it every restart costs each NTS source a TLS handshake before its first
authenticated sample (seconds against a far or busy NTS-KE server, and load on it), and
../shared/specs/nts.md §5.2 asks the client to persist an unused cookie with its keys and
AEAD "to resume without KE" (chrony's ``ntsdumpdir`` does the same).

What is kept is exactly what NTS-KE gave (RFC 8915 §4): the AEAD, the C2S and S2C keys, the
NTP server and port it negotiated, and the cookies not yet sent, plus the KE's time (for
``tsyncctl peers`` and ``[nts-client] key-refresh-interval``), what the server's certificate
was checked against (``trust_fingerprint``), and the TLS group and NTS-KE server address of
that handshake (``tsyncctl authdata`` shows the group the keys came from after a resume;
``tsyncctl refresh`` runs NTS-KE again once the name no longer gives that address).  A
session is resumed only under the same trust: a ``certificate-authority`` changed since
(another file, or new bytes in the same file) may no longer trust the server, so its keys are
not used again without a new NTS-KE.  Files written before that field existed have none and
are not resumed either (one NTS-KE, once).  The file
holds keys, so it is written 0600 (``statefile.write_atomic``).
The daemon reads it once at start and deletes it at once, so a crash later can never make it
send the same cookies twice (that would link its requests, §6); it writes it again on a clean
exit.  Cookies the server no longer accepts (its keys rotated past them) cost one NTS NAK,
which starts a new NTS-KE as usual.

Format: one JSON object, bytes in hex, a ``version`` to refuse files of another layout.
Fields added later are optional (``trust``, ``tls-group``, ``ke-address``), so no version reads
the other's files wrongly: an older file loads with them unknown.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tsyncd.nts.aead import AEADS

__all__ = [
    "SYSTEM_TRUST",
    "SavedSession",
    "decode_saved",
    "encode_saved",
    "saved_path",
    "trust_fingerprint",
    "trust_text",
]

_VERSION: Final = 1
_MAX_COOKIES: Final = 8
_MAX_COOKIE_LEN: Final = 1024
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]")
SYSTEM_TRUST: Final = "system"  # the trust of a source without certificate-authority
_SHA256: Final = "sha256:"


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedSession:
    """One NTS source's session as NTS-KE left it, minus the cookies already spent."""

    ke_server: str  # the source's address as configured (host:port of the NTS-KE server)
    ntp_host: str
    ntp_port: int
    aead: int
    c2s: bytes
    s2c: bytes
    cookies: tuple[bytes, ...]
    ke_s: float  # wall-clock time of the NTS-KE that gave the keys
    trust: str | None = None  # trust_fingerprint at that NTS-KE; None: not saved (older file)
    group: str | None = None  # its TLS key-exchange group; None: not known (older file)
    ke_address: str | None = None  # the NTS-KE server's IP it reached; None: not known


def trust_fingerprint(ca_path: Path | None) -> str | None:
    """What a source's server certificate is checked against: "sha256:<hex>" of the bytes of
    its ``certificate-authority`` file, ``SYSTEM_TRUST`` without one; None if the file cannot
    be read (nothing to compare: a saved session is not resumed)."""
    if ca_path is None:
        return SYSTEM_TRUST
    try:
        return _SHA256 + hashlib.sha256(ca_path.read_bytes()).hexdigest()
    except OSError:
        return None


def trust_text(fingerprint: str) -> str:
    """``fingerprint`` for the log: "the system trust store", "a CA file with SHA-256 ..."."""
    if fingerprint == SYSTEM_TRUST:
        return "the system trust store"
    return f"a CA file with SHA-256 {fingerprint.removeprefix(_SHA256)[:16]}..."


def saved_path(directory: Path, ke_server: str) -> Path:
    """The file for the source whose NTS-KE server is ``ke_server`` ("host:port")."""
    return directory / (_UNSAFE.sub("_", ke_server) + ".nts.json")


def encode_saved(session: SavedSession) -> bytes:
    """The file's bytes."""
    body = {
        "version": _VERSION,
        "ke-server": session.ke_server,
        "ntp-host": session.ntp_host,
        "ntp-port": session.ntp_port,
        "aead": session.aead,
        "c2s": session.c2s.hex(),
        "s2c": session.s2c.hex(),
        "cookies": [c.hex() for c in session.cookies],
        "ke-time": session.ke_s,
    }
    for key, value in (
        ("trust", session.trust),
        ("tls-group", session.group),
        ("ke-address", session.ke_address),
    ):
        if value is not None:
            body[key] = value
    return (json.dumps(body, indent=1) + "\n").encode("ascii")


def decode_saved(data: bytes) -> SavedSession:
    """The session in ``data``; ``ValueError`` naming what is wrong with it."""
    try:
        body: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("version") != _VERSION:
        raise ValueError(f"not a version {_VERSION} saved NTS session")
    aead = AEADS.get(_field(body, "aead", int))
    if aead is None:
        raise ValueError(f"unknown AEAD {body['aead']}")
    c2s, s2c = _hex(body, "c2s"), _hex(body, "s2c")
    if len(c2s) != aead.key_len or len(s2c) != aead.key_len:
        raise ValueError(f"keys of {len(c2s)}/{len(s2c)} bytes for AEAD {aead.aead_id}")
    cookies = body.get("cookies")
    if not isinstance(cookies, list) or len(cookies) > _MAX_COOKIES:
        raise ValueError(f"cookies must be a list of at most {_MAX_COOKIES}")
    parsed = tuple(_hex({"cookie": c}, "cookie") for c in cookies)
    if any(not 0 < len(c) <= _MAX_COOKIE_LEN for c in parsed):
        raise ValueError("a cookie of an impossible length")
    port = _field(body, "ntp-port", int)
    if not 1 <= port <= 65535:
        raise ValueError(f"NTP port {port}")
    ke_s = float(_field(body, "ke-time", (int, float)))
    if not math.isfinite(ke_s):  # JSON's NaN would never be older than any interval
        raise ValueError(f"ke-time {ke_s}")
    trust, group, ke_address = (
        _field(body, key, str) if key in body else None
        for key in ("trust", "tls-group", "ke-address")
    )
    if ke_address is not None:
        try:
            ipaddress.ip_address(ke_address)
        except ValueError:
            raise ValueError(f"ke-address {ke_address!r} is not an IP address") from None
    return SavedSession(
        ke_server=_field(body, "ke-server", str),
        ntp_host=_field(body, "ntp-host", str),
        ntp_port=port,
        aead=aead.aead_id,
        c2s=c2s,
        s2c=s2c,
        cookies=parsed,
        ke_s=ke_s,
        trust=trust,
        group=group,
        ke_address=ke_address,
    )


def _field(body: dict[str, Any], key: str, kind: Any) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key} missing or of the wrong type")
    return value


def _hex(body: dict[str, Any], key: str) -> bytes:
    try:
        return bytes.fromhex(_field(body, key, str))
    except ValueError:
        raise ValueError(f"{key} is not hex") from None
