"""NTS on the NTP server's packet path, sans-IO (RFC 8915 §5.7, server side).

Theory of operation
-------------------
``NtpResponder`` hands us every client request that carries extension fields, together with the
plain response it would send.  We answer one of three ways:

* not NTS at all (no UID, cookie or Authenticator): the plain response, unchanged;
* a valid NTS request: the response plus the echoed Unique Identifier and an Authenticator
  (S2C key) whose ciphertext holds ``1 + placeholders`` fresh cookies (at most 8), padded so the
  response is exactly as long as the request — never longer (no amplification, §5.7/§8);
* a request whose cookie we cannot open, or whose Authenticator fails with the cookie's C2S
  key: an NTS NAK (stratum 0, refid NTSN, the UID echoed, nothing else) so the client re-keys.

Malformed NTS fields are dropped silently, as are requests without a proper nonce area (§5.6
additional-padding rule).  Outcomes are stable reason strings for the responder's counters.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Final

from tsyncd.nts.aead import AEADS, AuthenticationFailed
from tsyncd.nts.cookie import BadCookie, CookieContents, KeySet
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import (
    HEADER_LEN,
    ExtensionField,
    KissCode,
    Leap,
    NtpPacket,
    encode_ntp,
    refid_from_ascii,
)
from tsyncd.wire.nts import (
    COOKIE,
    COOKIE_PLACEHOLDER,
    UNIQUE_ID,
    UNIQUE_ID_MIN_LEN,
    decode_inner,
    encode_authenticator,
    encode_ef,
    encode_inner,
    split_nts,
)

__all__ = ["MAX_COOKIES", "NtsResponder"]

MAX_COOKIES: Final = 8
_NTSN: Final = refid_from_ascii(KissCode.NTSN.value)


class NtsResponder:
    """Protects responses to NTS requests with keys recovered from the request's cookie."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.requests = 0  # NTS requests answered with an authenticated response
        self.naks = 0
        self.cookies_issued = 0

    def respond(
        self, data: bytes, request: NtpPacket, plain: NtpPacket
    ) -> tuple[str, bytes | None]:
        """(reason, response bytes) for ``request`` (decoded from ``data``)."""
        try:
            fields = split_nts(data, request)
        except WireError as exc:
            return f"nts_{exc.reason}", None
        if fields.unique_id is None and fields.cookie is None and fields.nonce is None:
            return "answered", encode_ntp(plain)
        uid = fields.unique_id
        if uid is None or len(uid) < UNIQUE_ID_MIN_LEN:
            return "nts_bad_unique_id", None
        if fields.cookie is None or fields.cookies != 1 or fields.nonce is None:
            return "nts_incomplete", None
        try:
            session = self.keys.open(fields.cookie)
        except BadCookie:
            return self._nak(uid, plain)
        aead = AEADS[session.aead_id]
        padded_nonce = len(fields.nonce) + (-len(fields.nonce) & 3)
        # §5.6: a nonce area shorter than N_REQ needs additional padding; we only ever see our
        # own AEADs' natural nonce sizes, so anything shorter is simply non-conforming.
        if padded_nonce < aead.min_padded_nonce:
            return "nts_short_nonce", None
        try:
            plaintext = aead.open(
                session.c2s, fields.nonce, fields.ciphertext, fields.associated_data
            )
            inner = decode_inner(plaintext)
        except AuthenticationFailed:
            return self._nak(uid, plain)
        except WireError as exc:
            return f"nts_{exc.reason}", None
        wanted = 1 + sum(1 for n in fields.placeholders if n == len(fields.cookie))
        wanted += sum(
            1
            for ef in inner
            if ef.field_type == COOKIE_PLACEHOLDER and len(ef.body) == len(fields.cookie)
        )
        response = self._seal(uid, plain, session, min(wanted, MAX_COOKIES), len(data))
        if response is None:
            return "nts_too_long", None
        self.requests += 1
        return "answered_nts", response

    def _seal(
        self, uid: bytes, plain: NtpPacket, session: CookieContents, count: int, limit: int
    ) -> bytes | None:
        aead = AEADS[session.aead_id]
        prefix = encode_ntp(plain)[:HEADER_LEN] + encode_ef(UNIQUE_ID, uid)
        while count > 0:
            cookies = [self.keys.seal(session) for _ in range(count)]
            plaintext = encode_inner([ExtensionField(field_type=COOKIE, body=c) for c in cookies])
            nonce = secrets.token_bytes(aead.nonce_len)
            ciphertext = aead.seal(session.s2c, nonce, plaintext, prefix)
            auth = encode_authenticator(nonce, ciphertext, limit - len(prefix))
            if len(prefix) + len(auth) <= limit:
                self.cookies_issued += count
                return prefix + auth
            count -= 1  # a request that paid for fewer bytes than we would send
        return None

    def _nak(self, uid: bytes, plain: NtpPacket) -> tuple[str, bytes | None]:
        """NTS NAK (§5.7): a KoD NTSN that echoes only the Unique Identifier."""
        self.naks += 1
        nak = replace(
            plain,
            leap=Leap.UNSYNCHRONIZED,
            stratum=0,
            reference_id=_NTSN,
            reference_ts=0,
            receive_ts=0,
            transmit_ts=0,
            extensions=(ExtensionField(field_type=UNIQUE_ID, body=uid),),
        )
        return "nts_nak", encode_ntp(nak)
