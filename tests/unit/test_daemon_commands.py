"""The daemon's allow, deny and accheck methods over its running servers (stand-ins here;
the real servers and a real client: tests/interop/test_server_access_chronyd.py)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tsyncd.config import NtsKeServerConfig, ServerConfig
from tsyncd.config_fields import Endpoint
from tsyncd.control.rpc import InvalidParams
from tsyncd.daemon_commands import ChronycCommands
from tsyncd.servers.keaccess import ServerRules, ke_access
from tsyncd.servers.responder import AccessList

net = ipaddress.ip_network
PEM = Path("/nonexistent.pem")  # never read here


class Server:
    """What the commands use of an NtpServer or WorkerPool."""

    def __init__(self, access: AccessList) -> None:
        self.access = access

    def set_access(self, access: AccessList) -> None:
        self.access = access


class KeServer:
    """What the commands use of an NtsKeServer."""

    def __init__(self, listen: str, access: AccessList | ServerRules) -> None:
        self.listen, self.access = listen, access


class Commands(ChronycCommands):
    def __init__(
        self, configs: list[ServerConfig], started: bool = True, ke: list[KeServer] | None = None
    ) -> None:
        self.config = SimpleNamespace(servers=configs)  # type: ignore[assignment]
        self.servers = [Server(AccessList(c.allow, c.deny)) for c in configs] if started else []  # type: ignore[misc]
        self.nts = SimpleNamespace(ke_servers=ke) if ke is not None else None  # type: ignore[assignment]
        self.refreshed = 0

    async def refresh_snapshots(self, client_keys: bool = True) -> None:
        assert not client_keys
        self.refreshed += 1


CONFIGS = [
    ServerConfig(listen=Endpoint("::", 123), deny=(net("10.0.0.0/8"),)),
    ServerConfig(listen=Endpoint("127.0.0.1", 1123), allow=(net("127.0.0.0/8"),)),
]


def call(commands: Commands, method: str, params: dict[str, Any]) -> Any:
    return asyncio.run(getattr(commands, f"_rpc_{method}")(params))


def verdicts(commands: Commands, address: str) -> list[str | None]:
    return [row["reason"] for row in commands._rpc_accheck({"address": address})]


def test_a_rule_reaches_every_server_and_accheck_sees_it() -> None:
    commands = Commands(CONFIGS)
    assert verdicts(commands, "10.1.2.3") == ["denied", "restricted"]
    assert verdicts(commands, "::1") == [None, "unreachable"]
    result = call(commands, "allow", {"subnet": "10.1.2.3", "all": False})
    assert result == {
        "servers": [
            {
                "listen": "[::]:123",
                "allow": ["0.0.0.0/0", "10.1.2.3/32", "::/0"],
                "deny": ["10.0.0.0/8"],
            },
            {"listen": "127.0.0.1:1123", "allow": ["10.1.2.3/32", "127.0.0.0/8"], "deny": []},
        ],
        "nts_ke_servers": [],
    }
    assert commands.refreshed == 1  # answered once every worker has it
    assert verdicts(commands, "10.1.2.3") == [None, None]
    assert verdicts(commands, "::ffff:127.0.0.9") == [None, None]
    call(commands, "deny", {"subnet": None, "all": True})
    assert verdicts(commands, "127.0.0.9") == ["denied", "denied"]
    assert [s.access.rules for s in commands.servers] == [
        {net("0.0.0.0/0"): False, net("::/0"): False}
    ] * 2


def test_before_the_servers_start_accheck_reads_the_config() -> None:
    assert verdicts(Commands(CONFIGS, started=False), "10.1.2.3") == ["denied", "restricted"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        # hunt-new #5: names are resolved by tsyncctl, never in tsyncd's event loop.
        ({"subnet": "ntp.example"}, "allow: subnet 'ntp.example': expected IP address or CIDR"),
        ({"subnet": "ntp.example"}, '"ntp.example" is a host name, which tsyncd does not resolve'),
        ({"subnet": 10}, "allow: subnet 10: expected IP address or CIDR network"),
        ({"subnet": "::ffff:10.0.0.0/104"}, 'never matches): write "10.0.0.0/8"'),
        ({"all": "yes"}, "allow: all 'yes': expected true or false"),
        # hunt-new #4: the zone would be ignored, giving a rule wider than was written.
        ({"subnet": "fe80::1%lo"}, 'zone would be ignored): write "fe80::1"'),
        ({"subnet": "fe80::1%eth0/64"}, 'zone would be ignored): write "fe80::1/64"'),
    ],
)
def test_bad_params_change_nothing(params: dict[str, Any], error: str) -> None:
    commands = Commands(CONFIGS)
    before = [s.access for s in commands.servers]
    with pytest.raises(InvalidParams) as caught:
        call(commands, "allow", params)
    assert error in caught.value.message
    assert [s.access for s in commands.servers] == before and commands.refreshed == 0


def test_chronys_short_networks_are_taken() -> None:
    # hunt-new #5: chronyc's "allow 10.2" is 10.2.0.0/16, "0/0" every IPv4 address.
    commands = Commands(CONFIGS[1:])
    call(commands, "deny", {"subnet": "127.1"})
    call(commands, "allow", {"subnet": "127.1.2/24"})
    call(commands, "allow", {"subnet": "0/0"})
    assert commands.servers[0].access.rules == {
        net("0.0.0.0/0"): True,
        net("127.0.0.0/8"): True,
        net("127.1.0.0/16"): False,
        net("127.1.2.0/24"): True,
    }
    assert verdicts(commands, "127.1.3.4") == ["denied"]


def test_accheck_refuses_an_address_with_a_zone() -> None:
    # hunt-new #4: the rules hold fe80::1 on every interface, so "%lo" would be ignored.
    with pytest.raises(InvalidParams) as caught:
        verdicts(Commands(CONFIGS), "fe80::1%lo")
    assert caught.value.message == (
        "accheck: address 'fe80::1%lo': expected an address without a zone ID (a rule holds an "
        'address on every interface, so the zone would be ignored): write "fe80::1"'
    )


def test_no_server_no_change() -> None:
    with pytest.raises(InvalidParams) as caught:
        call(Commands([]), "deny", {})
    assert caught.value.message == (
        "deny: no NTP server ([[server]]) nor NTS-KE server ([[nts-ke-server]]) is running"
    )


def test_a_rule_reaches_the_nts_ke_listeners_too() -> None:
    # chronyd has one rule set for NTP and NTS-KE: chronyc allow/deny changes both.  A listener
    # with its own lists gets the rule on them; one without reads the running rules of the
    # [[server]] each client's NTP reaches (keaccess), so it has the servers' change and
    # answers with a row per server it follows.
    configs = [
        ServerConfig(listen=Endpoint("0.0.0.0", 123), deny=(net("10.0.0.0/8"),)),
        ServerConfig(listen=Endpoint("::", 123), ipv6_only=True),
    ]
    own = KeServer("127.0.0.1:4460", AccessList([net("127.0.0.0/8")]))
    commands = Commands(configs, ke=[own])
    ke_cfg = NtsKeServerConfig(
        listen=Endpoint("::", 4460), certificate_chain_path=PEM, private_key_path=PEM
    )
    rules = ke_access(ke_cfg, configs, commands.servers)
    assert isinstance(rules, ServerRules)
    inherited = KeServer("[::]:4460", rules)
    commands.nts.ke_servers.append(inherited)  # type: ignore[union-attr]
    result = call(commands, "deny", {"subnet": "127.0.0.1"})
    assert result["nts_ke_servers"] == [
        {
            "listen": "127.0.0.1:4460",
            "allow": ["127.0.0.0/8"],
            "deny": ["127.0.0.1/32"],
            "rules_of": None,
        },
        {
            "listen": "[::]:4460",
            "allow": ["0.0.0.0/0", "::/0"],
            "deny": ["10.0.0.0/8", "127.0.0.1/32"],
            "rules_of": "0.0.0.0:123",
        },
        {
            "listen": "[::]:4460",
            "allow": ["0.0.0.0/0", "::/0"],
            "deny": ["127.0.0.1/32"],
            "rules_of": "[::]:123",
        },
    ]
    localhost = ipaddress.ip_address("127.0.0.1")
    assert own.access.verdict(localhost) == "denied"
    assert rules.verdict(localhost, localhost) == "denied"
    call(commands, "allow", {"subnet": None, "all": True})
    assert own.access == AccessList()
    assert rules.verdict(localhost, localhost) == ""


def test_nts_ke_listeners_alone_take_a_rule() -> None:
    # An NTS-KE host handing out cookies for a fleet (ntp-server) has no [[server]].
    ke = KeServer("[::]:4460", AccessList())
    result = call(Commands([], ke=[ke]), "deny", {"subnet": "192.0.2.0/24"})
    assert result == {
        "servers": [],
        "nts_ke_servers": [
            {
                "listen": "[::]:4460",
                "allow": ["0.0.0.0/0", "::/0"],
                "deny": ["192.0.2.0/24"],
                "rules_of": None,
            }
        ],
    }
