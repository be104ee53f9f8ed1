"""Source names: shown in tables, typed as tsyncctl selectors, so printable and unambiguous
(QA s16, finding 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config_errors import errors
from tsyncd.config import (
    ConfigErrors,
    Endpoint,
    SourceConfig,
    parse_config,
    parse_source,
)
from tsyncd.config_names import selector_clash

PRINTABLE = "non-empty string of printable characters, not only spaces"


def server(address: str, name: str | None = None) -> dict[str, object]:
    return {"mode": "server", "address": address} | ({"name": name} if name else {})


@pytest.mark.parametrize("name", [" ", "\t", "x\ny", "tab\there", 'we"ird\\name\nx', "a\u2028b"])
def test_a_name_is_printable_and_not_only_spaces(name: str) -> None:
    (error,) = errors({"source": [server("192.0.2.1", name)]})
    assert error.startswith("source[0].name = ") and error.endswith(f": expected {PRINTABLE}")
    with pytest.raises(ConfigErrors) as info:  # tsyncctl add --name
        parse_source(server("192.0.2.1", name))
    assert [e.key for e in info.value.errors] == ["source.name"]


def test_printable_names_pass() -> None:
    names = ["a b", "Zürich 1", "ntp-1.example", 'we"ird\\name']
    config = parse_config(
        {"source": [server(f"192.0.2.{i}", n) for i, n in enumerate(names)]}, Path("t")
    )
    assert [s.name for s in config.sources] == names


def test_a_name_must_not_be_another_sources_address() -> None:
    assert errors(
        {
            "source": [
                server("127.0.0.2:23123"),
                server("127.0.0.4", "127.0.0.2"),  # an IP selector: picks source[0]
                server("srv.test:23123", "a"),
                server("127.0.0.5", "srv.test:23123"),  # source[2]'s address as written
                server("127.0.0.6", "127.0.0.2:23123"),  # source[0]'s (default) name
                server("10.0.0.1", "10.0.0.0/8"),
                server("10.0.0.2", "b"),
            ]
        }
    ) == [
        # A duplicate name, reported as such only.
        'source[4].name = "127.0.0.2:23123": expected a name no other source has (same as '
        "source[0]; give each its own name = ...)",
        'source[1].name = "127.0.0.2": expected a name that is no other source\'s address (as a'
        ' tsyncctl selector it picks source[0], address = "127.0.0.2:23123" too)',
        'source[3].name = "srv.test:23123": expected a name that is no other source\'s address'
        ' (as a tsyncctl selector it picks source[2], address = "srv.test:23123" too)',
        'source[5].name = "10.0.0.0/8": expected a name that is no other source\'s address (as a'
        ' tsyncctl selector it picks source[6], address = "10.0.0.2" too)',
    ]


def test_a_name_that_is_its_own_address_is_no_clash() -> None:
    # Two servers on one IP: "tsyncctl offline 127.0.0.2" picks both by IP, as it should.
    config = parse_config(
        {"source": [server("127.0.0.2"), server("127.0.0.2:124"), server("[::1]", "::1")]},
        Path("t"),
    )
    assert [s.name for s in config.sources] == ["127.0.0.2", "127.0.0.2:124", "::1"]


def test_tsyncctl_add_checks_names_against_the_running_sources_both_ways() -> None:
    running = parse_config(
        {"source": [server("127.0.0.2:23123", "a"), server("127.0.0.4", "127.0.0.9")]}, Path("t")
    ).sources
    in_use: dict[Endpoint | SourceConfig, str] = {
        running[0]: "source a",
        running[1]: "source 127.0.0.9",
        Endpoint("127.0.0.3", 123): "127.0.0.3:123, a member of pool.test",
    }
    for name, who in [
        ("127.0.0.2:23123", "source a"),
        ("127.0.0.2", "source a"),
        ("127.0.0.3:123", "127.0.0.3:123, a member of pool.test"),
        ("127.0.0.3", "127.0.0.3:123, a member of pool.test"),
    ]:
        with pytest.raises(ConfigErrors) as info:
            parse_source(server("127.0.0.7:23126", name), in_use)
        assert [str(e) for e in info.value.errors] == [
            f'add_source: source.name = "{name}": expected a name that is no other source\'s'
            f" address (as a tsyncctl selector it picks {who} too)"
        ]
    # The other way round: a running source's name picks the new source's address.
    with pytest.raises(ConfigErrors) as info:
        parse_source(server("127.0.0.9", "nine"), in_use)
    assert [str(e) for e in info.value.errors] == [
        'add_source: source.address = "127.0.0.9": expected an address no other source\'s'
        ' name picks (source 127.0.0.9 is named "127.0.0.9")'
    ]
    assert parse_source(server("127.0.0.7", "seven"), in_use).name == "seven"


def test_selector_clash_is_the_shared_rule() -> None:
    named = SourceConfig(mode="server", address=Endpoint("127.0.0.4", 123), name="127.0.0.2")
    other = SourceConfig(mode="server", address=Endpoint("127.0.0.2", 123), name="x")
    assert selector_clash(named, other) and not selector_clash(other, named)
    assert selector_clash(named, Endpoint("127.0.0.2", 4460))
    assert not selector_clash(named, Endpoint("127.0.0.3", 123))
    by_name = SourceConfig(mode="server", address=Endpoint("srv.test", 123), name="srv.test")
    assert not selector_clash(by_name, other)  # its own address: no clash
