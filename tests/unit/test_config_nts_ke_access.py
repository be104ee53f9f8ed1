"""[[nts-ke-server]] allow and deny: the [[server]] keys' syntax and checks, and the rules a
listener without them runs by (``servers.keaccess.ke_access``: those of the [[server]] its
clients' NTP reaches, as chronyd has one rule set for NTP and NTS-KE; the choice per address is
``tests/unit/servers/test_keaccess.py``'s)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from nts_certs import Pki, make_pki

from tests.config_errors import P, errors
from tsyncd.config import Config, ServerConfig, parse_config
from tsyncd.config_fields import NETWORK
from tsyncd.servers.keaccess import ServerRules, ke_access, negotiated_port
from tsyncd.servers.responder import AccessList

net = ip_network


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config(pki: Pki, servers: list[dict[str, Any]], **ke: object) -> Config:
    table = {"certificate-chain-path": str(pki.chain), "private-key-path": str(pki.key), **ke}
    data = {"server": servers, "nts-ke-server": [table]} if servers else {"nts-ke-server": [table]}
    if not servers:
        data["keyset"] = {"key-storage-path": "/var/lib/tsyncd/nts-keys.json"}
    return parse_config(data, P)


class Running:
    """A started [[server]] socket, as ``ke_access`` reads it: its running rules."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.access = AccessList(cfg.allow, cfg.deny)


def rules(cfg: Config) -> AccessList | ServerRules:
    return ke_access(cfg.nts_ke_servers[0], cfg.servers, [Running(s) for s in cfg.servers])


def verdicts(access: AccessList | ServerRules, *addresses: str) -> list[str]:
    """Each address's verdict, for a client that reached the listener on its own address."""
    if isinstance(access, AccessList):
        return [access.verdict(ip_address(a)) for a in addresses]
    return [access.verdict(ip_address(a), ip_address(a)) for a in addresses]


def test_allow_and_deny_are_parsed_as_the_servers(pki: Pki) -> None:
    cfg = config(pki, [], allow=["10.2", "2001:db8::/32"], deny="10.2.3.4")
    [ke] = cfg.nts_ke_servers
    assert ke.allow == (net("10.2.0.0/16"), net("2001:db8::/32"))
    assert ke.deny == (net("10.2.3.4/32"),)
    # One list written: the listener's own rules, the other list empty, as in [[server]].
    [ke] = config(pki, [], deny=["all"]).nts_ke_servers
    assert (ke.allow, ke.deny) == ((), (net("0.0.0.0/0"), net("::/0")))
    [ke] = config(pki, [], allow=[]).nts_ke_servers
    assert (ke.allow, ke.deny) == ((), ())
    [ke] = config(pki, []).nts_ke_servers
    assert (ke.allow, ke.deny) == (None, None)  # neither: the [[server]]'s rules


def test_bad_entries_are_named_with_file_key_value_and_expectation(pki: Pki) -> None:
    table = {
        "certificate-chain-path": str(pki.chain),
        "private-key-path": str(pki.key),
        "allow": ["10/8", "localhost", "fe80::1%lo"],
        "deny": "::ffff:192.0.2.0/120",
    }
    found = errors({"server": [{}], "nts-ke-server": [table]})
    assert found[0] == (
        f'nts-ke-server[0].allow[1] = "localhost": expected {NETWORK} or "all"; "localhost" is '
        "a host name: write its address (tsyncd would resolve it in the loop that serves time, "
        "at start and at every reload; tsyncctl allow and deny take host names, as chronyc does)"
    )
    assert found[1].startswith(
        'nts-ke-server[0].allow[2] = "fe80::1%lo": expected an address without a zone ID'
    )
    assert found[2].startswith('nts-ke-server[0].deny = "::ffff:192.0.2.0/120": expected ')
    assert found[2].endswith('write "192.0.2.0/24"')
    assert len(found) == 3
    assert errors({"server": [{}], "nts-ke-server": [{**table, "allow": 7, "deny": []}]}) == [
        "nts-ke-server[0].allow = 7: expected array of strings, each an IP address or CIDR "
        'network (e.g. "192.0.2.0/24", "2001:db8::/32"; as in chrony, "192.0.2" is '
        '192.0.2.0/24 and "0/0" every IPv4 address) or "all"'
    ]


def test_own_rules_decide(pki: Pki) -> None:
    cfg = config(pki, [{"deny": "127.0.0.1"}], allow=["127.0.0.0/8"])
    access = rules(cfg)
    assert verdicts(access, "127.0.0.1", "127.0.0.2", "192.0.2.1") == ["", "", "restricted"]


def test_without_keys_the_rules_of_the_server_clients_go_to(pki: Pki) -> None:
    servers = [
        {"listen": "[::]:123", "deny": ["127.0.0.1"]},
        {"listen": "[::]:1123", "allow": ["10/8"]},
    ]
    cfg = config(pki, servers)
    assert negotiated_port(cfg.nts_ke_servers[0], cfg.servers) == 123  # the first [[server]]'s
    assert verdicts(rules(cfg), "127.0.0.1", "127.0.0.2") == ["denied", ""]
    # ntp-port sends the clients to the other server: its rules.
    cfg = config(pki, servers, **{"ntp-port": 1123})
    assert verdicts(rules(cfg), "127.0.0.1", "10.0.0.1") == ["restricted", ""]


@pytest.mark.parametrize(
    ("servers", "ke"),
    [
        # Another host's NTP server: its rules are not ours to know.
        ([{"deny": "all"}], {"ntp-server": "ntp1.example.org"}),
        # No [[server]] (the cookies are for a process sharing the key file).
        ([], {}),
    ],
)
def test_otherwise_every_client(pki: Pki, servers: list[dict[str, Any]], ke: Any) -> None:
    cfg = config(pki, servers, **ke)
    assert rules(cfg) == AccessList()
