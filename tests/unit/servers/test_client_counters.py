"""Per-client counters (``tsyncctl clients``) agree with the server's totals (``serverstats``)
when NTS or a MAC check drops or NAKs a request that looked like a time request."""

from __future__ import annotations

import ipaddress

from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.servers.responder import AccessList, NtpResponder, ServerPolicy
from tsyncd.symkey import SymmetricKey, seal
from tsyncd.wire.ntp import NtpPacket, decode_ntp, encode_ntp

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


def interleaved_counts(r: NtpResponder) -> tuple[int, int]:
    """(interleaved answers in the client log, in the totals serverstats and metrics show)."""
    [row] = r.client_rows(RX)
    return row["interleaved"], r.counters()["interleaved_answered"]


def test_interleaved_nts_and_mac_answers_count_as_interleaved_everywhere() -> None:
    # QA s21 hunt-nts F2: the NTS seal's reason replaced "interleaved", so serverstats and
    # the metrics counted chronyd's NTS xleave answers as basic while clients counted them.
    r = NtpResponder(AccessList((), ()))
    r.extensions = NtsResponder(KEYS)
    s = nts_session()

    def ask(origin: int, transmit: int, mangle: bool = False) -> tuple[str, bytes | None]:
        packet = NtpPacket(origin_ts=origin, receive_ts=transmit - 5, transmit_ts=transmit)
        data = bytearray(s.protect(encode_ntp(packet)) or b"")
        if mangle:
            data[48 + 36 + 10] ^= 1  # inside the cookie: an NTS NAK
        return r.handle_request(bytes(data), CLIENT, RX, RX + 1)

    reason, first = ask(0, 1000)  # interleaving-capable (receive != transmit), basic at first
    assert reason == "answered_nts" and first is not None
    reason, second = ask(decode_ntp(first[:48]).receive_ts, 2000)
    assert reason == "interleaved_nts" and second is not None
    assert interleaved_counts(r) == (1, 1)
    # A NAKed interleaved request is no interleaved answer, in either view.
    assert ask(decode_ntp(second[:48]).receive_ts, 3000, mangle=True)[0] == "nts_nak"
    assert interleaved_counts(r) == (1, 1)
    assert r.counters()["answered"] == 2 and agree(r)["kod_sent"] == 1

    key = SymmetricKey(7, "SHA1", b"k" * 20)
    r = NtpResponder(AccessList((), ()), ServerPolicy(symmetric_keys={7: key}))

    def signed(origin: int, transmit: int) -> tuple[str, bytes | None]:
        packet = NtpPacket(origin_ts=origin, receive_ts=transmit - 5, transmit_ts=transmit)
        return r.handle_request(seal(key, encode_ntp(packet)), CLIENT, RX, RX + 1)

    reason, first = signed(0, 1000)
    assert reason == "answered_mac" and first is not None
    assert signed(decode_ntp(first[:48]).receive_ts, 2000)[0] == "interleaved_mac"
    assert interleaved_counts(r) == (1, 1) and agree(r)["answered"] == 2
