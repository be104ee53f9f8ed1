"""The [[server]] allow and deny entries as the config takes them (QA s19 hunt-new #4, #5):
chrony's syntax, and what is refused with the reason (the IPv4-mapped entries:
tests/unit/test_config_listen.py)."""

from __future__ import annotations

import json
from ipaddress import ip_network

import pytest

from tests.config_errors import P, errors
from tsyncd.config import parse_config
from tsyncd.config_fields import NETWORK

ZONE = (
    "expected an address without a zone ID (a rule holds an address on every interface, so the "
    "zone would be ignored): write"
)


def test_a_zone_id_is_refused_not_ignored() -> None:
    # The rule would hold fe80::1 on every interface, a wider rule than the one written.
    assert errors(
        {
            "server": [
                {"allow": ["fe80::1%lo", "2001:db8::/32"]},
                {"listen": "[::]:1123", "deny": "fe80::1%eth0/64"},
            ]
        }
    ) == [
        f'server[0].allow[0] = "fe80::1%lo": {ZONE} "fe80::1"',
        f'server[1].deny = "fe80::1%eth0/64": {ZONE} "fe80::1/64"',
    ]


@pytest.mark.parametrize(
    ("entry", "network"),
    [
        # chrony.conf(5) allow: fewer than 4 numbers are the network's leading octets.
        ("10", "10.0.0.0/8"),
        ("10.2", "10.2.0.0/16"),
        ("192.0.2", "192.0.2.0/24"),
        ("0/0", "0.0.0.0/0"),
        ("10/8", "10.0.0.0/8"),
        ("10.2/24", "10.2.0.0/24"),
        ("10.2.3/22", "10.2.0.0/22"),  # host bits ignored, as with the full forms
        ("192.0.2.9", "192.0.2.9/32"),
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_chronys_short_networks(entry: str, network: str) -> None:
    for key in ("allow", "deny"):
        (server,) = parse_config({"server": [{key: [entry]}]}, P).servers
        assert getattr(server, key) == (ip_network(network),)


@pytest.mark.parametrize("entry", ["10.256", "1.2.3.4.5", "10/33", "10.2/", "/8", "10./8", "1٣"])
def test_what_is_not_a_short_network(entry: str) -> None:
    assert errors({"server": [{"deny": entry}]}) == [
        f'server[0].deny = {json.dumps(entry, ensure_ascii=False)}: expected {NETWORK} or "all"'
    ]


def test_a_host_name_is_refused_with_the_reason() -> None:
    # chrony resolves it at start; tsyncd reads the config in its event loop at every reload
    # too, so it would stall the server on DNS: the operator writes the address instead.
    name = (
        "write its address (tsyncd would resolve it in the loop that serves time, at start and "
        "at every reload; tsyncctl allow and deny take host names, as chronyc does)"
    )
    assert errors({"server": [{"allow": ["10/8", "localhost"], "deny": "ntp.example."}]}) == [
        f'server[0].allow[1] = "localhost": expected {NETWORK} or "all"; "localhost" is a host '
        f"name: {name}",
        f'server[0].deny = "ntp.example.": expected {NETWORK} or "all"; "ntp.example." is a host '
        f"name: {name}",
    ]
