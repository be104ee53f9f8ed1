"""Tests for tsyncd.config.parse_source: a [[source]] given at run time (tsyncctl add) gets the
config file's checks and messages, plus a check against the addresses already in use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pki import make_pki
from tsyncd.config import (
    MISSING,
    ConfigError,
    ConfigErrors,
    Endpoint,
    SourceConfig,
    parse_config,
    parse_source,
)

ORIGIN = Path("add_source")


def errors_of(table: object, in_use: dict[Endpoint, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_source(table, in_use)
    return list(info.value.errors)


@pytest.mark.parametrize(
    "table",
    [
        {"mode": "server", "address": "127.0.0.1:1234", "iburst": True, "min-poll": -2},
        {"mode": "pool", "address": "pool.example", "count": 2, "max-poll": 4},
        {"mode": "nts", "address": "nts.example", "certificate-authority": "ca.pem"},
        {"mode": "tsq", "address": "[::1]", "transport": "stream"},
        {"mode": "peer", "address": "192.0.2.1", "local-port": 1123, "xleave": True},
    ],
)
def test_same_source_as_the_config_file_gives(
    table: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pki(tmp_path)  # the ca.pem a certificate-authority names must be one
    monkeypatch.chdir(tmp_path)
    from_file = parse_config({"source": [table]}, Path("x.toml")).sources[0]
    assert parse_source(table) == from_file


def test_defaults_and_derived_values() -> None:
    assert parse_source({"mode": "server", "address": "ntp.example"}) == SourceConfig(
        mode="server", address=Endpoint("ntp.example", 123), name="ntp.example"
    )
    high = parse_source({"mode": "server", "address": "a.example", "min-poll": 12})
    assert (high.min_poll, high.max_poll) == (12, 12)  # max-poll follows, as in the file
    nts = parse_source({"mode": "nts", "address": "nts.example"})
    assert nts.address == Endpoint("nts.example", 4460)  # the NTS-KE port


def test_field_errors_are_the_config_files_all_at_once() -> None:
    table = {"address": "127.0.0.1:99999", "min-poll": 99, "iburst": "yes", "colour": 1}
    errors = errors_of(table)
    from_file = errors_of_file(table)
    assert [(e.key.replace("source[0]", "source"), e.value, e.expected) for e in from_file] == [
        (e.key, e.value, e.expected) for e in errors
    ]
    assert {e.file for e in errors} == {ORIGIN}
    assert [e.key for e in errors] == [
        "source.address",
        "source.min-poll",
        "source.iburst",
        "source.colour",
        "source.mode",
    ]
    assert errors[-1].value is MISSING
    assert str(errors[1]) == (
        "add_source: source.min-poll = 99: expected integer -7..24 (log2 seconds)"
    )


def errors_of_file(table: dict[str, object]) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config({"source": [table]}, Path("x.toml"))
    return list(info.value.errors)


def test_cross_field_checks() -> None:
    errors = errors_of(
        {"mode": "server", "address": "a.example", "min-poll": 8, "max-poll": 6, "count": 2}
    )
    assert [str(e) for e in errors] == [
        "add_source: source.max-poll = 6: expected integer 8..24 (log2 seconds, at least min-poll)",
        'add_source: source.count = 2: expected no count unless mode = "pool"',
    ]


@pytest.mark.parametrize(
    ("address", "taken"),
    [
        ("NTP.example.", Endpoint("ntp.example", 123)),  # names: case and trailing dot
        ("ntp.example:123", Endpoint("ntp.example", 123)),  # the default port written out
        ("[::0:1]:123", Endpoint("::1", 123)),  # IPv6 literals: canonical form
    ],
)
def test_an_address_in_use_is_refused(address: str, taken: Endpoint) -> None:
    errors = errors_of({"mode": "server", "address": address}, {taken: "source x"})
    assert [str(e) for e in errors] == [
        f'add_source: source.address = "{address}": expected an address no other source uses '
        "(same as source x)"
    ]


def test_another_port_or_host_is_free() -> None:
    in_use = {Endpoint("ntp.example", 123): "source ntp.example"}
    assert parse_source({"mode": "server", "address": "ntp.example:124"}, in_use).name == (
        "ntp.example:124"
    )
    assert parse_source({"mode": "server", "address": "ntp2.example"}, in_use)


def test_not_a_table() -> None:
    errors = errors_of(["mode", "server"])
    assert [str(e) for e in errors] == [
        'add_source: source = ["mode", "server"]: expected table (the keys of a [[source]])'
    ]
