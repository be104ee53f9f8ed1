"""Per-client counters (``tsyncctl clients``) agree with the server's totals (``serverstats``)
when NTS or a MAC check drops or NAKs a request that looked like a time request."""

from __future__ import annotations

import ipaddress

from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.servers.responder import AccessList, NtpResponder, ServerPolicy
from tsyncd.symkey import SymmetricKey, seal
from tsyncd.wire.ntp import NtpPacket, encode_ntp

S = 1_000_000_000
RX = 1_800_000_000 * S
CLIENT = ipaddress.ip_address("192.0.2.7")
KEYS = KeySet(1, bytes(32), 86400)
PLAIN = encode_ntp(NtpPacket(transmit_ts=0x1122334455667788))


def nts_session() -> NtsSession:
    contents = CookieContents(aead_id=15, c2s=b"c" * 32, s2c=b"s" * 32)
    return NtsSession(15, contents.c2s, contents.s2c, [KEYS.seal(contents) for _ in range(8)])


def nts_request(s: NtsSession) -> bytes:
    data = s.protect(encode_ntp(NtpPacket(transmit_ts=99)))
    assert data is not None
    return data


def agree(r: NtpResponder) -> dict[str, int]:
    """The one client's counters, checked against the responder's totals."""
    [row] = r.client_rows(RX)
    totals = r.counters()
    for key in ("received", "answered", "dropped", "kod_sent"):
        assert row[key] == totals[key], (key, row, totals)
    assert row["answered"] + row["dropped"] + row["kod_sent"] == row["received"]
    return {k: row[k] for k in ("received", "answered", "dropped", "kod_sent")}


def test_nts_naks_and_drops_are_not_counted_as_answered() -> None:
    r = NtpResponder(AccessList((), ()))
    r.extensions = NtsResponder(KEYS)
    s = nts_session()
    requests = [nts_request(s) for _ in range(3)]
    assert r.handle_request(requests[0], CLIENT, RX, RX + 1)[0] == "answered_nts"
    assert r.handle_request(PLAIN, CLIENT, RX, RX + 1)[0] == "answered"
    nak = bytearray(requests[1])
    nak[48 + 36 + 10] ^= 1  # inside the cookie: an NTS NAK (a KoD)
    assert r.handle_request(bytes(nak), CLIENT, RX, RX + 1)[0] == "nts_nak"
    no_auth = requests[2][: 48 + 36 + 4 + 104]  # UID and cookie, no Authenticator: dropped
    assert r.handle_request(no_auth, CLIENT, RX, RX + 1) == ("nts_incomplete", None)
    assert agree(r) == {"received": 4, "answered": 2, "dropped": 1, "kod_sent": 1}


def test_requests_with_a_mac_we_cannot_check_are_drops() -> None:
    key = SymmetricKey(7, "SHA1", b"k" * 20)
    r = NtpResponder(AccessList((), ()), ServerPolicy(symmetric_keys={7: key}))
    assert r.handle_request(seal(key, PLAIN), CLIENT, RX, RX + 1)[0] == "answered_mac"
    forged = bytearray(seal(key, PLAIN))
    forged[-1] ^= 1
    assert r.handle_request(bytes(forged), CLIENT, RX, RX + 1) == ("bad_mac", None)
    other = SymmetricKey(8, "SHA1", b"o" * 20)
    assert r.handle_request(seal(other, PLAIN), CLIENT, RX, RX + 1) == ("unknown_key", None)
    assert agree(r) == {"received": 3, "answered": 1, "dropped": 2, "kod_sent": 0}
