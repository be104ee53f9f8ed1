"""NTS client sessions saved across restarts: the file format, and ``NtsSource`` taking it up.

The file holds keys: it must be 0600, written atomically, read once and removed at once (a
crash after start must never make the client send the same cookies again), and anything odd
in it (another server, another layout, impossible values) is refused with the reason.  A
session is taken up only under the certificate authority it was made under (QA s18
hunt-nts-client #1), and its age carries over, a future one clamped to now (#4); one twice
key-refresh-interval old is not taken up at all (QA s21 hunt-nts #3).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import pytest

from tsyncd.config import SourceConfig
from tsyncd.config_fields import parse_endpoint
from tsyncd.nts.saved import (
    SYSTEM_TRUST,
    SavedSession,
    decode_saved,
    encode_saved,
    saved_path,
    trust_fingerprint,
)
from tsyncd.sources.nts import NtsSource
from tsyncd.sync.association import NtpAssociation

SESSION = SavedSession(
    ke_server="time.example:4460",
    ntp_host="ntp.example",
    ntp_port=1123,
    aead=15,
    c2s=bytes(range(32)),
    s2c=bytes(range(32, 64)),
    cookies=(b"\x01" * 104, b"\x02" * 104),
    # A day ago: well within twice the default key-refresh-interval (older is not resumed).
    ke_s=time.time() - 86400.0,
    trust=SYSTEM_TRUST,  # made by a source without certificate-authority
    group="x25519",
    ke_address="192.0.2.4",
)
DAY = 86400.0


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
        (_altered(**{"ke-time": math.nan}), "ke-time nan"),
        (_altered(trust=7), "trust missing or of the wrong type"),
        (_altered(**{"tls-group": 1}), "tls-group missing or of the wrong type"),
        (_altered(**{"ke-address": "time.example"}), "'time.example' is not an IP address"),
    ],
)
def test_bad_files_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_saved(data)


def test_file_names_are_one_path_component(tmp_path: Path) -> None:
    assert saved_path(tmp_path, "[2001:db8::1]:4460").parent == tmp_path
    assert saved_path(tmp_path, "../../etc/x:4460").name == ".._.._etc_x_4460.nts.json"
    assert saved_path(tmp_path, "a:1") != saved_path(tmp_path, "a:2")


def _source(address: str = "time.example:4460", ca: Path | None = None) -> SourceConfig:
    return SourceConfig(
        name=address, mode="nts", address=parse_endpoint(address, 4460), certificate_authority=ca
    )


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
    # What made the keys: the TLS group and the NTS-KE server address of that handshake.
    assert first.snapshot().tls_group == "x25519" and result.ke_address == "192.0.2.4"
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
    assert "NTP at [::1]:1123, keys " in caplog.text


def test_a_file_without_trust_loads_and_is_not_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files from before the trust field: read without error (no crash, no warning), but not
    taken up, as nothing says what the server's certificate was checked against."""
    body = json.loads(encode_saved(SESSION))
    del body["trust"]
    assert decode_saved(json.dumps(body).encode()).trust is None
    path = saved_path(tmp_path, "time.example:4460")
    path.write_text(json.dumps(body))
    with caplog.at_level(logging.INFO):
        assert NtsSource(_source(), tmp_path).restore() is None
    assert not path.exists()  # its cookies are never used
    assert "does not resume the session saved in" in caplog.text
    assert "written by an older tsyncd); running NTS-KE" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_file_without_tls_group_or_ke_address_loads_and_is_resumed(tmp_path: Path) -> None:
    """Files from before those fields (QA s18 hunt-nts-client #7) are taken up as before, the
    group and address unknown."""
    body = json.loads(encode_saved(SESSION))
    del body["tls-group"], body["ke-address"]
    saved_path(tmp_path, "time.example:4460").write_text(json.dumps(body))
    source = NtsSource(_source(), tmp_path)
    result = source.restore()
    assert result is not None and result.ke_address is None
    assert source.snapshot().tls_group is None and source.snapshot().aead == "AES-SIV-CMAC-256"


def test_a_session_is_resumed_only_under_the_certificate_authority_it_was_made_under(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"the CA the keys were made under\n")
    store = tmp_path / "store"
    store.mkdir()
    path = saved_path(store, "time.example:4460")
    made = SavedSession(**{**_fields(SESSION), "trust": trust_fingerprint(ca)})
    assert made.trust is not None and made.trust.startswith("sha256:")

    def resumes(source_ca: Path | None) -> bool:
        path.write_bytes(encode_saved(made))
        resumed = NtsSource(_source(ca=source_ca), store).restore() is not None
        assert not path.exists()
        return resumed

    assert resumes(ca)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert not resumes(None)  # the system trust store now
        assert "the source now trusts the system trust store" in caplog.text
        other = tmp_path / "other.pem"
        other.write_bytes(b"another CA\n")
        assert not resumes(other)
        ca.write_bytes(b"the CA the keys were made under\nand one more\n")  # same path
        assert not resumes(ca)
        ca.unlink()
        assert not resumes(ca)
    assert f"cannot read certificate-authority = {ca}; running NTS-KE" in caplog.text
    assert caplog.text.count("the server was checked against a CA file with SHA-256 ") == 3
    # The fingerprint saved is the one the keys were made under, and resuming keeps it.
    ca.write_bytes(b"the CA the keys were made under\n")
    path.write_bytes(encode_saved(made))
    source = NtsSource(_source(ca=ca), store)
    assert source.restore() is not None
    source.save()
    assert decode_saved(path.read_bytes()).trust == made.trust


def _online(source: NtsSource) -> NtpAssociation:
    association = NtpAssociation(
        min_poll=4, max_poll=6, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=0
    )
    source.association = association
    return association


def test_a_restored_session_keeps_its_age_and_is_refreshed_when_too_old(tmp_path: Path) -> None:
    path = saved_path(tmp_path, "time.example:4460")
    old = SavedSession(**{**_fields(SESSION), "ke_s": time.time() - 20 * DAY})
    path.write_bytes(encode_saved(old))
    source = NtsSource(_source(), tmp_path, refresh_s=14 * DAY)
    assert source.restore() is not None  # its cookies serve until a new NTS-KE works
    age = source.snapshot().last_ke
    assert age is not None and 20 * DAY <= age < 20 * DAY + 60
    association = _online(source)
    source.kick()
    assert source._kick.is_set()
    association.online = False  # tsyncctl offline: no NTS-KE until online
    assert not source._refresh_due()
    young = SavedSession(**{**_fields(SESSION), "ke_s": time.time() - 13 * DAY})
    path.write_bytes(encode_saved(young))
    source = NtsSource(_source(), tmp_path, refresh_s=14 * DAY)
    assert source.restore() is not None
    _online(source)
    assert not source._refresh_due()


def test_a_future_ke_time_counts_as_now(tmp_path: Path) -> None:
    """A clock that was wrong at the last exit, or stepped back since: the age is 0, never
    negative (chrony clamps it too), and the session is saved with that time."""
    path = saved_path(tmp_path, "time.example:4460")
    path.write_bytes(
        encode_saved(SavedSession(**{**_fields(SESSION), "ke_s": time.time() + 3 * DAY}))
    )
    before = time.time()
    source = NtsSource(_source(), tmp_path)
    assert source.restore() is not None
    age = source.snapshot().last_ke
    assert age is not None and 0 <= age < 60
    source.save()
    assert before <= decode_saved(path.read_bytes()).ke_s <= time.time()


def test_a_session_twice_the_refresh_interval_old_is_not_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QA s21 hunt-nts #3: a 365-day-old session was resumed and selected for the whole NTS-KE
    timeout, though keys that old are no longer used once a refresh fails: not taken up at
    all (the file is gone all the same), and the log says why, as for another CA."""
    path = saved_path(tmp_path, "time.example:4460")
    for age_days in (365.0, 28.0):
        path.write_bytes(
            encode_saved(SavedSession(**{**_fields(SESSION), "ke_s": time.time() - age_days * DAY}))
        )
        source = NtsSource(_source(), tmp_path, refresh_s=14 * DAY)
        with caplog.at_level(logging.INFO):
            assert source.restore() is None
        assert not path.exists() and source.session is None and source.key_age_s() is None
    assert caplog.text.count("does not resume the session saved in") == 2
    assert (
        "its keys are 365.0 days old, twice key-refresh-interval (1209600 s) or more; running "
        "NTS-KE" in caplog.text
    )
