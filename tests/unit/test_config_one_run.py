"""One run reports every mistake (README): a wrong key does not hide its table's other checks,
and it brings no follow-on errors of its own (QA s16, finding 5)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.config_errors import errors as errors_of
from tsyncd.config import ConfigErrors, parse_source


def test_a_wrong_key_leaves_the_tables_cross_key_checks_running() -> None:
    server = {"mode": "server", "address": "192.0.2.2"}
    assert errors_of({"source": [{**server, "count": 2, "dscp": 64}]}) == [
        "source[0].dscp = 64: expected integer 0..63 (DSCP code point)",
        'source[0].count = 2: expected no count unless mode = "pool"',
    ]
    assert errors_of({"source": [{**server, "noselect": True, "prefer": True, "iburst": 1}]}) == [
        "source[0].iburst = 1: expected true or false",
        "source[0].prefer = true: expected not with noselect = true (never selected)",
    ]
    assert errors_of(
        {
            "source": [
                {"mode": "server", "address": "192.0.2.1", "name": "a"},
                {**server, "name": "a", "dscp": 99},
            ]
        }
    ) == [
        "source[1].dscp = 99: expected integer 0..63 (DSCP code point)",
        'source[1].name = "a": expected a name no other source has (same as source[0]; give '
        "each its own name = ...)",
    ]
    assert errors_of({"log": {"measurements": True, "level": 5}}) == [
        'log.level = 5: expected one of: "debug", "info", "warning", "error"',
        "log.measurements = true: expected log.directory set (where measurements.log goes)",
    ]


def test_tsyncctl_add_reports_every_mistake_too() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_source({"mode": "server", "address": "192.0.2.2", "count": 2, "dscp": 64})
    assert [str(e) for e in info.value.errors] == [
        "add_source: source.dscp = 64: expected integer 0..63 (DSCP code point)",
        'add_source: source.count = 2: expected no count unless mode = "pool"',
    ]


@pytest.mark.parametrize(
    ("data", "only"),
    [
        # The key's own error only: not "no count unless pool" on top.
        (
            {"source": [{"mode": "server", "address": "a", "count": 99}]},
            "source[0].count = 99: expected integer 1..16 (addresses to use from the pool)",
        ),
        # A wrong min-poll is not compared with max-poll.
        (
            {"source": [{"mode": "server", "address": "a", "min-poll": 99, "max-poll": 3}]},
            "source[0].min-poll = 99: expected integer -7..24 (log2 seconds)",
        ),
        # A directory that is wrong is still set.
        (
            {"log": {"directory": 7, "tracking": True}},
            "log.directory = 7: expected non-empty string",
        ),
        # A wrong listen is not the default address, which another server uses.
        (
            {"server": [{}, {"listen": "ntp.example"}]},
            'server[1].listen = "ntp.example": expected IPv4[:port], IPv6 or [IPv6][:port] '
            '(port 1..65535, default 123); "ntp.example" is not an IP address (listen takes '
            "an IP address, not a name)",
        ),
        # A wrong broadcast-server is not a missing one.
        (
            {"source": [{"mode": "broadcast", "address": "[ff05::101]", "broadcast-server": "s"}]},
            'source[0].broadcast-server = "s": expected IPv4[:port], IPv6 or [IPv6][:port] '
            '(port 0..65535, default 0); "s" is not an IP address (broadcast-server takes an '
            "IP address, not a name)",
        ),
        # No table to check without its mode.
        (
            {"source": [{"mode": "fast", "address": "a", "count": 2}]},
            'source[0].mode = "fast": expected one of: "server", "pool", "peer", "broadcast", '
            '"nts", "tsq"',
        ),
        # A wrong key file setting is not "no [keys] file".
        (
            {"keys": {"file": 7}, "source": [{"mode": "server", "address": "a", "key": 1}]},
            "keys.file = 7: expected non-empty string",
        ),
    ],
)
def test_a_wrong_key_brings_no_follow_on_errors(data: Mapping[str, object], only: str) -> None:
    assert errors_of(data) == [only]


def test_every_bad_line_of_the_key_file_and_no_key_errors_against_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("1 SHA1 HEX:zz\n2 SHA1 HEX:0102\n\n0 MD5 HEX:00\n2 MD5 HEX:01\n")
    source = {"mode": "server", "address": "a", "key": 2}
    expected = f'keys.file = "{keys}": expected a key file in chrony\'s format'
    assert errors_of({"keys": {"file": str(keys)}, "source": [source]}) == [
        f"{expected} (line 1: HEX: value is not hexadecimal)",
        f"{expected} (line 4: key ID '0' is not an integer 1..4294967295)",
        f"{expected} (line 5: key 2 is defined twice)",
    ]
    missing = tmp_path / "absent.keys"
    assert errors_of({"keys": {"file": str(missing)}, "source": [source]}) == [
        f'keys.file = "{missing}": expected a readable key file (No such file or directory)',
    ]
    keys.write_text("# no keys yet\n")
    assert errors_of({"keys": {"file": str(keys)}, "source": [source]}) == [
        "source[0].key = 2: expected a key ID of the [keys] file (it has none)",
    ]
