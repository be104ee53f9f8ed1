"""What the NTS-KE client takes from a server's response (``client_outcome``, RFC 8915 §4):
where NTP goes, which cookies it keeps, and what it says when it cannot use the response."""

from __future__ import annotations

import pytest

from tsyncd.nts.ke import client_outcome
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
