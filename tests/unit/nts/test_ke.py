"""What the NTS-KE client takes from a server's response (``client_outcome``, RFC 8915 §4):
where NTP goes, which cookies it keeps, and what it says when it cannot use the response."""

from __future__ import annotations

import pytest

from tsyncd.nts.ke import KeFailed, client_outcome
from tsyncd.wire.ntske import KeResponse, decode_records, decode_response, encode_response

OFFER = (30, 15)
COOKIES = (bytes(100),) * 8


def _response(**changes: object) -> KeResponse:
    fields: dict[str, object] = {"next_protocol": 0, "aead": 15, "cookies": COOKIES}
    fields.update(changes)
    return KeResponse(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("port", "expected"), [(None, 123), (0, 123), (1, 1), (4123, 4123)])
def test_port_negotiation(port: int | None, expected: int) -> None:
    # A Port Negotiation record of 0 is read as none (chrony): port 0 cannot be sent to.
    wire = encode_response(_response(port=port))
    assert client_outcome(decode_response(decode_records(wire)), OFFER).port == expected


@pytest.mark.parametrize(
    ("cookies", "message"),
    [
        ((bytes(16000),), r"no usable cookies \(1 cookie of 16000 bytes; we take 4 to 256"),
        ((b"x",) * 8, r"no usable cookies \(8 cookies of 1 byte;"),
        ((bytes(260), bytes(2), bytes(102)), r"\(3 cookies of 2 to 260 bytes;"),
    ],
)
def test_cookies_chrony_would_not_take_are_refused(
    cookies: tuple[bytes, ...], message: str
) -> None:
    with pytest.raises(KeFailed, match=message):
        client_outcome(_response(cookies=cookies), OFFER)


def test_unusable_cookies_are_left_out() -> None:
    # chrony's KE client skips them and keeps the others; the limits themselves are fine.
    cookies = (bytes(257), bytes(256), bytes(6), bytes(4), bytes(100))
    kept = client_outcome(_response(cookies=cookies), OFFER).cookies
    assert kept == (bytes(256), bytes(4), bytes(100))
