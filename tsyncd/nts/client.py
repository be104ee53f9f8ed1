"""NTS on an NTP association's packet path, sans-IO (RFC 8915 §5.7, client side).

Theory of operation
-------------------
An ``NtsSession`` is what one NTS-KE gave us: the AEAD, the C2S/S2C keys and up to eight
cookies.  The association calls ``protect`` on each request it is about to send and ``verify``
on each datagram that comes back (before any other check), through two small hooks.

``protect`` appends a fresh 32-byte Unique Identifier, one unused cookie, ``8 - k``
placeholders (k = cookies held, counting the one sent) so the server refills us to eight, and
an Authenticator over all of it with an empty plaintext.  With no cookie left it returns None:
the request is not sent and ``needs_ke`` tells the source to run NTS-KE again.

``verify`` accepts only a response whose Unique Identifier matches the outstanding request and
whose Authenticator opens with the S2C key; new cookies come only from the decrypted part.
Cookies of a length chrony would not take (``usable_cookie``) are never kept, from NTS-KE or
from a response: the server must not decide how large our requests get.
Everything else is dropped with a reason, including unauthenticated KoDs (a spoofer could
otherwise silence us) and second responses to the same request (replays).

A NAK (KoD NTSN echoing our UID) says the server can no longer read our cookies.  As §5.7 asks
(and chrony's check_cookies does), we wait for the next poll: an authentic response to the same
request may still come (a NAK is unauthenticated, so it may be forged) and then nothing
changes.  If none came, the next ``protect`` drops every cookie (the server said it cannot read
them), sends nothing and sets ``needs_ke``; nothing goes out until a new NTS-KE.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Final

from tsyncd.nts.aead import AEADS, Aead
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import KissCode, NtpPacket, kiss_code
from tsyncd.wire.nts import (
    COOKIE,
    COOKIE_PLACEHOLDER,
    UNIQUE_ID,
    decode_inner,
    encode_authenticator,
    encode_ef,
    split_nts,
)

__all__ = ["MAX_COOKIES", "MAX_COOKIE_LEN", "NtsCounters", "NtsSession", "usable_cookie"]

MAX_COOKIES: Final = 8
MAX_COOKIE_LEN: Final = 256  # chrony's NKE_MAX_COOKIE_LENGTH (its cookies are 64 or 100 bytes)
_UID_LEN: Final = 32
_MAX_PLACEHOLDER_BYTES: Final = 8 * 108  # chrony's cap, keeps requests unfragmented


def usable_cookie(cookie: bytes) -> bool:
    """Whether we keep and send ``cookie``: 4 to ``MAX_COOKIE_LEN`` bytes, a multiple of 4.

    chrony's rule for NTS-KE cookies: a longer one would make every request as long (a hostile
    or broken server could push them past the path MTU), and a Cookie EF pads its body to 4
    octets, so the server would not get other lengths back as it sent them."""
    return 0 < len(cookie) <= MAX_COOKIE_LEN and len(cookie) % 4 == 0


@dataclass(slots=True)
class NtsCounters:
    """What ``tsyncctl peers`` shows about the packet path."""

    authenticated: int = 0
    naks: int = 0
    dropped: int = 0


class NtsSession:
    """Keys and cookies from one NTS-KE, used until cookies run out or the server NAKs."""

    def __init__(self, aead_id: int, c2s: bytes, s2c: bytes, cookies: list[bytes]) -> None:
        aead = AEADS.get(aead_id)
        if aead is None:
            raise ValueError(f"unsupported AEAD {aead_id}")
        self.aead: Aead = aead
        self.c2s = c2s
        self.s2c = s2c
        usable = [c for c in cookies if usable_cookie(c)]
        self.cookies: deque[bytes] = deque(usable[-MAX_COOKIES:])
        self.needs_ke = not self.cookies
        self.counters = NtsCounters()
        self._uid: bytes | None = None  # of the outstanding request
        self._answered_uid: bytes | None = None  # of the last request answered (a replay's)
        self._naked = False  # the outstanding request got a NAK and no authentic response

    def discard(self) -> None:
        """Drop every cookie and ask for a new NTS-KE (the source will not use these keys)."""
        self.cookies.clear()
        self._uid = None
        self.needs_ke = True

    def protect(self, request: bytes) -> bytes | None:
        """``request`` (a bare 48-byte header) with NTS fields, or None without a cookie."""
        if self._naked:  # a NAK, and no authentic response since: these cookies are dead
            self._naked = False
            self._uid = None
            self.cookies.clear()
        if not self.cookies:
            self.needs_ke = True
            return None
        cookie = self.cookies.popleft()
        uid = secrets.token_bytes(_UID_LEN)
        self._uid = uid
        parts = [request, encode_ef(UNIQUE_ID, uid), encode_ef(COOKIE, cookie)]
        missing = MAX_COOKIES - 1 - len(self.cookies)
        padded = len(cookie) + (-len(cookie) & 3) + 4
        missing = min(missing, _MAX_PLACEHOLDER_BYTES // padded - 1)
        parts.extend(encode_ef(COOKIE_PLACEHOLDER, bytes(len(cookie))) for _ in range(missing))
        ad = b"".join(parts)
        nonce = secrets.token_bytes(self.aead.nonce_len)
        ciphertext = self.aead.seal(self.c2s, nonce, b"", ad)
        return ad + encode_authenticator(nonce, ciphertext)

    def verify(self, data: bytes, packet: NtpPacket) -> str | None:
        """None if ``packet`` is the authentic answer to our request, else the drop reason."""
        reason = self._verify(data, packet)
        if reason is not None:
            self.counters.dropped += 1
        return reason

    def _verify(self, data: bytes, packet: NtpPacket) -> str | None:
        try:
            fields = split_nts(data, packet)
        except WireError as exc:
            return f"nts_{exc.reason}"
        if fields.unique_id is None:  # a plain NTP answer: nothing authenticates it
            return "nts_unauthenticated"
        if self._uid is None or fields.unique_id != self._uid:
            # A second copy of the answer already taken is a replay, as plain NTP says.
            return "duplicate" if fields.unique_id == self._answered_uid else "nts_unknown_uid"
        if fields.nonce is None:
            if kiss_code(packet) == KissCode.NTSN and fields.cookie is None:
                # §5.7: a NAK that echoes our UID; the server lost our cookies' key.  The UID
                # stays outstanding: a genuine response still wins over a forged NAK.
                if not self._naked:
                    self.counters.naks += 1
                self._naked = True
                return "nts_nak"
            return "nts_unauthenticated"
        try:
            plaintext = self.aead.open(
                self.s2c, fields.nonce, fields.ciphertext, fields.associated_data
            )
            inner = decode_inner(plaintext)
        except WireError as exc:
            return f"nts_{exc.reason}"
        self._answered_uid, self._uid = self._uid, None  # one response per request
        self._naked = False
        new = [ef.body for ef in inner if ef.field_type == COOKIE and usable_cookie(ef.body)]
        self.cookies.extend(new)
        while len(self.cookies) > MAX_COOKIES:
            self.cookies.popleft()
        self.counters.authenticated += 1
        return None
