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

Speed: this is the per-packet path of every NTS client, so ``respond_raw`` works on the raw
datagram: one pass over the RFC 7822 framing with ``struct.unpack_from`` (the same checks, in
the same order and with the same reasons, as ``decode_ntp`` + ``split_nts``), AEAD inputs as
slices of the datagram as it came (bytes from the workers: ``cryptography`` reads bytes faster
than memoryviews, and a small copy costs no more than a memoryview slice), the response built
by one join, and the keyed cipher
objects of recent client sessions kept (keying AES-SIV costs as much as two small seals),
with the session's AEAD: a cached session needs no second look at the cookie's plaintext, and
the cipher objects are called directly (``Aead.open_with``/``seal_with`` inlined).  The session
plaintext opened from the cookie is re-sealed as is into the new cookies, and nonces come from
a pool of kernel random bytes (one ``getrandom`` per 128 requests, emptied on fork).
``respond`` (decoded packets in) is the same code behind an ``encode_ntp``.
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag

from tsyncd.nts.aead import AEADS, SIV_TYPES, TAG_LEN, Bytes, Cipher
from tsyncd.nts.cookie import COOKIE_NONCE_LEN, COOKIE_OVERHEAD, BadCookie, KeySet
from tsyncd.wire.errors import BadExtension, BadLength, WireError
from tsyncd.wire.ntp import (
    CRYPTO_NAK,
    EF_MIN_LEN,
    HEADER_LEN,
    MAC_LENGTHS,
    KissCode,
    NtpPacket,
    encode_ntp,
    refid_from_ascii,
)
from tsyncd.wire.nts import (
    AUTHENTICATOR,
    COOKIE,
    COOKIE_PLACEHOLDER,
    UNIQUE_ID,
    UNIQUE_ID_MIN_LEN,
    BadNts,
    decode_inner,
)

__all__ = ["MAX_COOKIES", "SESSION_CACHE", "NtsResponder"]

MAX_COOKIES: Final = 8
SESSION_CACHE: Final = 512
"""Client sessions whose keyed ciphers are kept (FIFO).  Each costs about 8 kB (two OpenSSL
contexts, measured), so 4 MB per process at most; a hit saves keying AES twice (about 6 µs:
``python -m bench.nts --micro``, 8.3 µs a request with 1 session against 14-16 with 4096)."""

_NTSN: Final = refid_from_ascii(KissCode.NTSN.value)
_EF: Final = struct.Struct("!HH")  # type, length (whole EF)
_AUTH_HEAD: Final = struct.Struct("!HHHH")  # type, length, nonce length, ciphertext length
# NTS NAK header fields after LI/VN/mode: stratum 0, the plain reply's poll, precision, root
# delay and dispersion, then refid NTSN and a zero reference timestamp (RFC 8915 §5.7).
_NAK_MIDDLE: Final = struct.pack("!IQ", _NTSN, 0)
_LEAP_UNSYNC: Final = 0xC0
_EMPTY: Final = b""
_ZEROS: Final = bytes(2048)  # padding is sliced from here (responses are never that long)
_urandom: Final = os.urandom  # secrets.token_bytes is this behind one more call
_POOL_BYTES: Final = 4096
"""Kernel random bytes taken per ``getrandom`` call: at least 32 per request (a nonce and a
cookie nonce), so one call serves 128 requests instead of one (0.33 µs a call).  Each byte is
used once; a fork empties the pools (``_after_fork``), so processes never share bytes."""
_LIVE: Final[weakref.WeakSet[NtsResponder]] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child: forget the random bytes the parent had drawn (and may still use)."""
    for responder in _LIVE:
        responder._pool = _EMPTY
        responder._pool_at = 0


os.register_at_fork(after_in_child=_after_fork)
_N_REQ: Final = {aead_id: aead.min_padded_nonce for aead_id, aead in AEADS.items()}
_Session = tuple[Cipher, Cipher, int, int, int, bytes]
"""A client session's keyed C2S and S2C ciphers, then what its requests and responses need:
N_REQ (§5.6), the AEAD's nonce length, the length and header of the Cookie EFs we send."""


class NtsResponder:
    """Protects responses to NTS requests with keys recovered from the request's cookie."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.requests = 0  # NTS requests answered with an authenticated response
        self.naks = 0
        self.cookies_issued = 0
        # Session plaintext (AEAD | S2C | C2S, from the cookie) -> AEAD and keyed ciphers.
        self._sessions: dict[bytes, _Session] = {}
        self._pool = _EMPTY  # kernel random bytes, used from _pool_at on (_POOL_BYTES)
        self._pool_at = 0
        _LIVE.add(self)

    def respond(
        self, data: bytes, request: NtpPacket, plain: NtpPacket
    ) -> tuple[str, bytes | None]:
        """(reason, response bytes) for ``request`` (decoded from ``data``)."""
        return self.respond_raw(data, encode_ntp(plain))

    def respond_raw(
        self, data: Bytes, plain: bytes, restamp: Callable[[bytes], bytes] | None = None
    ) -> tuple[str, bytes | None]:
        """(reason, response) for the request datagram ``data``; ``plain`` is the 48-byte
        response we would send without NTS.  ``data`` may be any bytes-like object (a
        worker's receive buffer); it is only read during the call.  ``restamp``: called with
        ``plain`` after all the work but the response's seal, it gives the header to seal,
        with the Transmit read then (``servers/sealtx.py``).

        ``data`` need not have been decoded: its extension-field framing is checked here as
        ``decode_ntp`` would (reason ``malformed_<WireError.reason>``).  The caller has
        checked the header (length >= 48, version, client mode).
        """
        n = len(data)
        if n == HEADER_LEN:
            return "answered", plain
        if n & 3:
            return f"malformed_{BadLength.reason}", None
        if data[0] & 0x38 != 0x20:  # NTPv1..3: a MAC may follow, EFs may not (RFC 7822)
            if n - HEADER_LEN in MAC_LENGTHS:
                return "answered", plain
            return f"malformed_{BadLength.reason}", None
        # One pass over the RFC 7822 chain (decode_ntp's rules: 20/24 bytes left at an EF
        # boundary are a legacy MAC, every EF >= 16 bytes, 4-aligned, inside the packet).
        unpack = _EF.unpack_from
        end = n
        pos = HEADER_LEN
        if n - pos == 4 and data[pos:] == CRYPTO_NAK:
            return "answered", plain
        uid_at = cookie_at = auth_at = 0
        uid_len = cookie_len = auth_len = 0  # whole EFs, kept from the pass
        cookies = 0
        placeholders: list[int] = []  # EF lengths
        dup_uid = misplaced = False
        while pos < end:
            if end - pos in MAC_LENGTHS:
                end = pos  # the MAC is not authenticated by NTS and stays out of the AD
                break
            field_type, length = unpack(data, pos)
            if length < EF_MIN_LEN or length & 3 or length > end - pos:
                return f"malformed_{BadExtension.reason}", None
            if field_type == UNIQUE_ID:
                dup_uid = dup_uid or uid_at != 0
                uid_at = pos
                uid_len = length
            elif field_type == COOKIE:
                cookies += 1
                if not cookie_at:
                    cookie_at = pos
                    cookie_len = length
            elif field_type == COOKIE_PLACEHOLDER:
                placeholders.append(length)
            elif field_type == AUTHENTICATOR:
                misplaced = misplaced or auth_at != 0
                auth_at = pos
                auth_len = length
            pos += length
        if dup_uid:
            return f"nts_{BadNts.reason}", None  # §5.3: exactly one Unique Identifier
        if auth_at:
            if misplaced or auth_at + auth_len != end:
                return f"nts_{BadNts.reason}", None  # §5.6: unauthenticated EFs after it
            nonce_len, ct_len = unpack(data, auth_at + 4)
            nonce_at = auth_at + 8
            ct_at = nonce_at + nonce_len + (-nonce_len & 3)
            if ct_at + ct_len + (-ct_len & 3) > end:
                return f"nts_{BadNts.reason}", None
        elif not uid_at and not cookie_at:
            return "answered", plain  # extension fields, but not NTS ones
        if not uid_at or uid_len - 4 < UNIQUE_ID_MIN_LEN:
            return "nts_bad_unique_id", None
        if not cookie_at or cookies != 1 or not auth_at:
            return "nts_incomplete", None
        try:
            session = self.keys.open_plaintext(data, cookie_at + 4, cookie_at + cookie_len)
            state = self._sessions.get(session) or self._session(session)
        except BadCookie:
            return self._nak(data, uid_at, uid_len, plain)
        c2s, s2c, n_req, aead_nonce_len, cookie_ef, head = state
        # §5.6: a nonce area shorter than N_REQ needs additional padding; we only ever see our
        # own AEADs' natural nonce sizes, so anything shorter is simply non-conforming.
        if nonce_len + (-nonce_len & 3) < n_req:
            return "nts_short_nonce", None
        # Aead.open_with, inlined for the two shapes (aead.py): AES-SIV takes the nonce as the
        # last AD component, AES-GCM-SIV separately and only at its 12 bytes.
        if ct_len < TAG_LEN:
            return self._nak(data, uid_at, uid_len, plain)
        nonce = data[nonce_at : nonce_at + nonce_len]
        try:
            if isinstance(c2s, SIV_TYPES):
                plaintext = c2s.decrypt(data[ct_at : ct_at + ct_len], [data[:auth_at], nonce])
            elif nonce_len == aead_nonce_len:
                plaintext = c2s.decrypt(nonce, data[ct_at : ct_at + ct_len], data[:auth_at])
            else:
                return self._nak(data, uid_at, uid_len, plain)
        except InvalidTag:
            return self._nak(data, uid_at, uid_len, plain)
        wanted = 1 + placeholders.count(cookie_len) if placeholders else 1
        if plaintext:  # placeholders may also come encrypted (§5.7)
            try:
                inner = decode_inner(plaintext)
            except WireError as exc:
                return f"nts_{exc.reason}", None
            for ef in inner:
                wanted += ef.field_type == COOKIE_PLACEHOLDER and len(ef.body) == cookie_len - 4
        response = self._seal(
            data,
            uid_at,
            uid_len,
            plain,
            s2c,
            aead_nonce_len,
            cookie_ef,
            head,
            session,
            wanted,
            restamp,
        )
        if response is None:
            return "nts_too_long", None
        self.requests += 1
        return "answered_nts", response

    def _session(self, session: bytes) -> _Session:
        """Keyed ciphers of a client ``session`` not in the cache (keying AES-SIV costs as much
        as two small seals); ``BadCookie`` if the plaintext is not a session of ours."""
        aead = self.keys.session_aead(session)
        key_len = aead.key_len
        c2s = aead.cipher(session[4 + key_len :])
        s2c = aead.cipher(session[4 : 4 + key_len])
        cookie_ef = 4 + COOKIE_OVERHEAD + len(session)  # 4-aligned: so is the session
        head = _EF.pack(COOKIE, cookie_ef)
        state = (c2s, s2c, _N_REQ[aead.aead_id], aead.nonce_len, cookie_ef, head)
        cache = self._sessions
        if len(cache) >= SESSION_CACHE:
            del cache[next(iter(cache))]  # the oldest session
        cache[session] = state
        return state

    def _seal(
        self,
        request: Bytes,
        uid_at: int,
        uid_len: int,
        plain: bytes,
        s2c: Cipher,
        nonce_len: int,
        cookie_ef: int,
        head: bytes,
        session: bytes,
        wanted: int,
        restamp: Callable[[bytes], bytes] | None = None,
    ) -> bytes | None:
        """The authenticated response, exactly as long as the request, or None if even one
        cookie does not fit (§5.7: never more bytes than received)."""
        limit = len(request)
        prefix = HEADER_LEN + uid_len
        # nonce_len is 16 or 12: 4-aligned, so the nonce needs no padding.
        fixed = prefix + 8 + nonce_len + TAG_LEN  # Authenticator without cookies
        count = min(wanted, MAX_COOKIES, (limit - fixed) // cookie_ef)
        if count < 1:
            return None
        at = self._pool_at
        need = nonce_len + count * COOKIE_NONCE_LEN
        randomness = self._pool
        if at + need > len(randomness):
            randomness = self._pool = _urandom(_POOL_BYTES)
            at = 0
        self._pool_at = at + need
        plaintext = self.keys.seal_efs(head, session, randomness, at + nonce_len, at + need)
        if restamp is not None:  # the Transmit as late as the seal allows
            plain = restamp(plain)
        # The authenticated prefix: our header, then the request's UID EF, echoed.
        ad = plain + request[uid_at : uid_at + uid_len]
        nonce = randomness[at : at + nonce_len]
        # Aead.seal_with, inlined (see respond_raw).
        if isinstance(s2c, SIV_TYPES):
            ciphertext = s2c.encrypt(plaintext, [ad, nonce])
        else:
            ciphertext = s2c.encrypt(nonce, plaintext, ad)
        used = fixed + count * cookie_ef
        self.cookies_issued += count
        # Then zeros up to the request's length: one join.
        return _EMPTY.join(
            (
                ad,
                _AUTH_HEAD.pack(AUTHENTICATOR, limit - prefix, nonce_len, len(ciphertext)),
                nonce,
                ciphertext,
                _ZEROS[: limit - used],
            )
        )

    def _nak(self, data: Bytes, uid_at: int, uid_len: int, plain: bytes) -> tuple[str, bytes]:
        """NTS NAK (§5.7): a KoD NTSN that echoes only the Unique Identifier."""
        self.naks += 1
        nak = b"".join(
            (
                bytes((_LEAP_UNSYNC | (plain[0] & 0x3F), 0)),
                plain[2:12],  # poll, precision, root delay, root dispersion
                _NAK_MIDDLE,
                plain[24:32],  # origin: the client still matches it to its request
                bytes(16),  # receive and transmit: meaningless in a NAK
                data[uid_at : uid_at + uid_len],
            )
        )
        return "nts_nak", nak
