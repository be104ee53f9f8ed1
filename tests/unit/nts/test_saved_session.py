"""NTS client sessions saved across restarts: the file format, and ``NtsSource`` taking it up.

The file holds keys: it must be 0600, written atomically, read once and removed at once (a
crash after start must never make the client send the same cookies again), and anything odd
in it (another server, another layout, impossible values) is refused with the reason.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tsyncd.config import SourceConfig
from tsyncd.config_fields import parse_endpoint
from tsyncd.nts.saved import SavedSession, decode_saved, encode_saved, saved_path
from tsyncd.sources.nts import NtsSource

SESSION = SavedSession(
    ke_server="time.example:4460",
    ntp_host="ntp.example",
    ntp_port=1123,
    aead=15,
    c2s=bytes(range(32)),
    s2c=bytes(range(32, 64)),
    cookies=(b"\x01" * 104, b"\x02" * 104),
    ke_s=1_800_000_000.5,
)


def test_round_trip() -> None:
    assert decode_saved(encode_saved(SESSION)) == SESSION


def _altered(**changes: object) -> bytes:
    body = json.loads(encode_saved(SESSION))
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "version 1"),
        (_altered(version=2), "version 1"),
        (_altered(aead=1), "unknown AEAD 1"),
        (_altered(aead=True), "aead missing"),
        (_altered(c2s="00" * 16), "keys of 16/32 bytes"),
        (_altered(s2c="zz" * 32), "s2c is not hex"),
        (_altered(cookies=["01"] * 9), "at most 8"),
        (_altered(cookies=[""]), "impossible length"),
        (_altered(cookies="01"), "must be a list"),
        (_altered(**{"ntp-port": 0}), "NTP port 0"),
        (_altered(**{"ntp-port": "123"}), "ntp-port missing"),
        (_altered(**{"ke-time": None}), "ke-time missing"),
    ],
)
def test_bad_files_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_saved(data)


def test_file_names_are_one_path_component(tmp_path: Path) -> None:
    assert saved_path(tmp_path, "[2001:db8::1]:4460").parent == tmp_path
    assert saved_path(tmp_path, "../../etc/x:4460").name == ".._.._etc_x_4460.nts.json"
    assert saved_path(tmp_path, "a:1") != saved_path(tmp_path, "a:2")


def _source(address: str = "time.example:4460") -> SourceConfig:
    return SourceConfig(name=address, mode="nts", address=parse_endpoint(address, 4460))


def test_save_then_restore_consumes_the_file(tmp_path: Path) -> None:
    store = tmp_path / "nts"
    path = saved_path(store, "time.example:4460")
    path.parent.mkdir()
    path.write_bytes(encode_saved(SESSION))
    first = NtsSource(_source(), store)
    result = first.restore()
    assert result is not None and first.session is not None
    assert not path.exists()  # taken: a crash from now on cannot resend these cookies
    assert (result.ntp_host, result.ntp_port, result.outcome.aead) == ("ntp.example", 1123, 15)
    assert list(first.session.cookies) == list(SESSION.cookies)
    assert first.session.c2s == SESSION.c2s and first.session.s2c == SESSION.s2c
    assert first.snapshot().key_exchanges == 0 and first.snapshot().cookies == 2
    assert first.session.protect(bytes(48)) is not None  # spends the first cookie
    first.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert decode_saved(path.read_bytes()) == SavedSession(
        **{**_fields(SESSION), "cookies": SESSION.cookies[1:]}
    )
    assert NtsSource(_source(), store).restore() is not None
    assert NtsSource(_source(), store).restore() is None  # nothing left to take


def _fields(s: SavedSession) -> dict[str, object]:
    return {name: getattr(s, name) for name in SavedSession.__slots__}


def test_nothing_is_saved_or_restored_without_storage(tmp_path: Path) -> None:
    source = NtsSource(_source())
    assert source.restore() is None
    source.save()  # no session, no storage: nothing to do, nothing raised


def test_a_file_for_another_server_or_a_corrupt_one_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = saved_path(tmp_path, "time.example:4460")
    other = SavedSession(**{**_fields(SESSION), "ke_server": "elsewhere.example:4460"})
    path.write_bytes(encode_saved(other))
    assert NtsSource(_source(), tmp_path).restore() is None
    assert not path.exists()
    path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        assert NtsSource(_source(), tmp_path).restore() is None
    assert "ignoring the saved NTS session" in caplog.text and not path.exists()


def test_an_ipv6_ntp_server_is_logged_in_brackets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = SavedSession(**{**_fields(SESSION), "ntp_host": "::1"})
    saved_path(tmp_path, "time.example:4460").write_bytes(encode_saved(session))
    with caplog.at_level(logging.INFO):
        assert NtsSource(_source(), tmp_path).restore() is not None
    assert "NTP at [::1]:1123), no NTS-KE" in caplog.text
