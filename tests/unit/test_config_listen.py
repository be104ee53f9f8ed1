"""What tsyncd listens on, checked with the config (QA s16 hunt-server F5 and F7, and
hunt-nts F9.1): listen addresses that cannot work or overlap on a port, IPv4-mapped allow/deny
entries, ipv6-only where it means nothing, and an NTS-KE server whose cookies nobody opens."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network

import pytest

from tests.config_errors import P, errors
from tests.pki import Pki, make_pki
from tsyncd.config import ConfigErrors, Endpoint, parse_config

LISTEN = "expected IPv4[:port], IPv6 or [IPv6][:port] (port 1..65535, default"
SAME = "expected an address no other server listens on"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def pem(pki: Pki) -> dict[str, str]:
    return {"certificate-chain-path": str(pki.chain), "private-key-path": str(pki.key)}


def loads(data: Mapping[str, object]) -> bool:
    try:
        parse_config(data, P)
    except ConfigErrors:
        return False
    return True


# --- F5/F7: addresses a listener cannot use ---------------------------------------------------


def test_an_ipv4_mapped_listen_address_is_refused_for_its_ipv4_form(pki: Pki) -> None:
    assert errors(
        {
            "server": [{"listen": "[::ffff:127.0.0.1]:1123"}, {"listen": "::ffff:7f00:2"}],
            "tsq-server": [{"transport": "stream", "listen": "[::ffff:127.0.0.1]"} | pem(pki)],
            "nts-ke-server": [{"listen": "[::ffff:192.0.2.1]:4461"} | pem(pki)],
            "metrics": {"listen": "[::ffff:127.0.0.1]:9975"},
        }
    ) == [
        f'server[0].listen = "[::ffff:127.0.0.1]:1123": {LISTEN} 123); "::ffff:127.0.0.1" is an '
        'IPv4-mapped IPv6 address: write it as IPv4, "127.0.0.1:1123"',
        f'server[1].listen = "::ffff:7f00:2": {LISTEN} 123); "::ffff:7f00:2" is an IPv4-mapped '
        'IPv6 address: write it as IPv4, "127.0.0.2"',
        f'tsq-server[0].listen = "[::ffff:127.0.0.1]": {LISTEN} 443); "::ffff:127.0.0.1" is an '
        'IPv4-mapped IPv6 address: write it as IPv4, "127.0.0.1"',
        f'nts-ke-server[0].listen = "[::ffff:192.0.2.1]:4461": {LISTEN} 4460); "::ffff:192.0.2.1" '
        'is an IPv4-mapped IPv6 address: write it as IPv4, "192.0.2.1:4461"',
        f'metrics.listen = "[::ffff:127.0.0.1]:9975": {LISTEN} 9975); "::ffff:127.0.0.1" is an '
        'IPv4-mapped IPv6 address: write it as IPv4, "127.0.0.1:9975"',
    ]
    # Not IPv4-mapped: the IPv4-compatible form and NAT64 are plain IPv6 addresses.
    assert loads({"server": [{"listen": "[::7f00:1]:1123"}, {"listen": "[64:ff9b::1]:1123"}]})


def test_multicast_and_broadcast_listen_addresses_are_refused(pki: Pki) -> None:
    """QA s18 hunt-ops F6: they passed --check and the daemon listened where no client can
    reach it (a TCP client cannot connect to a multicast address at all)."""
    assert errors(
        {
            "server": [{"listen": "224.0.0.1:1123"}, {"listen": "255.255.255.255:1124"}],
            "metrics": {"listen": "[ff02::1]:9975"},
        }
    ) == [
        f'server[0].listen = "224.0.0.1:1123": {LISTEN} 123); "224.0.0.1" is a multicast '
        "address: listen takes an address of this host (or the wildcard)",
        f'server[1].listen = "255.255.255.255:1124": {LISTEN} 123); "255.255.255.255" is a '
        "broadcast address: listen takes an address of this host (or the wildcard)",
        f'metrics.listen = "[ff02::1]:9975": {LISTEN} 9975); "ff02::1" is a multicast address: '
        "listen takes an address of this host (or the wildcard)",
    ]


def test_port_0_is_refused_for_every_listener(pki: Pki) -> None:
    random = "port 0 would bind a random port"
    assert errors(
        {
            "server": [{"listen": "127.0.0.1:0"}],
            "tsq-server": [{"transport": "datagram", "listen": "[::1]:0"} | pem(pki)],
            "nts-ke-server": [{"listen": "0.0.0.0:0", "ntp-server": "ntp.example"} | pem(pki)],
            "metrics": {"listen": "127.0.0.1:0"},
        }
    ) == [
        f'server[0].listen = "127.0.0.1:0": {LISTEN} 123); {random}',
        f'tsq-server[0].listen = "[::1]:0": {LISTEN} 443); {random}',
        f'nts-ke-server[0].listen = "0.0.0.0:0": {LISTEN} 4460); {random}',
        f'metrics.listen = "127.0.0.1:0": {LISTEN} 9975); {random}',
    ]
    assert parse_config({"server": [{"listen": "127.0.0.1:1"}]}, P).servers[0].listen == (
        Endpoint("127.0.0.1", 1)
    )


# --- F5: listeners that overlap on a port -----------------------------------------------------


def test_a_dual_stack_wildcard_and_an_ipv4_address_on_one_port() -> None:
    assert errors({"server": [{"listen": "[::]:1123"}, {"listen": "127.0.0.1:1123"}]}) == [
        f'server[1].listen = "127.0.0.1:1123": {SAME} (server[0].listen = "[::]:1123" is '
        "dual-stack and takes port 1123 on every IPv4 address too, this one too: set ipv6-only "
        "= true in server[0])",
    ]
    # The other way round; the default listen address is [::]:123.
    assert errors({"server": [{"listen": "0.0.0.0"}, {"ipv6-only": False}]}) == [
        f'server[1].listen = "[::]:123": {SAME} (this is dual-stack and takes port 123 on every '
        'IPv4 address too, server[0].listen = "0.0.0.0" too: set ipv6-only = true here)',
    ]
    # [::] written otherwise is the same wildcard.
    assert errors({"server": [{"listen": "127.0.0.2:1123"}, {"listen": "[0:0::0]:1123"}]}) == [
        f'server[1].listen = "[0:0::0]:1123": {SAME} (this is dual-stack and takes port 1123 on '
        'every IPv4 address too, server[0].listen = "127.0.0.2:1123" too: set ipv6-only = true '
        "here)",
    ]
    # IPv6 only, or other ports: no overlap.
    assert loads(
        {
            "server": [
                {"listen": "[::]:1123", "ipv6-only": True},
                {"listen": "127.0.0.1:1123"},
                {"listen": "127.0.0.2:1123"},
                {"listen": "[::1]:1124"},
                {"listen": "127.0.0.1:1124"},
                {"listen": "[::]:1125"},
                {"listen": "127.0.0.1:1126"},
            ]
        }
    )


def test_a_wildcard_and_an_address_of_its_family_on_one_port() -> None:
    assert errors(
        {
            "server": [
                {"listen": "0.0.0.0:1123"},
                {"listen": "127.0.0.1:1123"},
                {"listen": "[::1]:1124"},
                {"listen": "[::]:1124", "ipv6-only": True},
            ]
        }
    ) == [
        f'server[1].listen = "127.0.0.1:1123": {SAME} (server[0].listen = "0.0.0.0:1123" takes '
        "port 1123 on every IPv4 address, this one too)",
        f'server[3].listen = "[::]:1124": {SAME} (this takes port 1124 on every IPv6 address, '
        'server[2].listen = "[::1]:1124" too)',
    ]
    # Each overlap is reported once, against the first listener it meets.
    assert errors(
        {"server": [{"listen": "0.0.0.0"}, {"listen": "127.0.0.1"}, {"listen": "127.0.0.1"}]}
    ) == [
        f'server[1].listen = "127.0.0.1": {SAME} (server[0].listen = "0.0.0.0" takes port 123 '
        "on every IPv4 address, this one too)",
        f'server[2].listen = "127.0.0.1": {SAME} (server[0].listen = "0.0.0.0" takes port 123 '
        "on every IPv4 address, this one too)",
    ]


def test_ntp_and_tsq_servers_share_udp_ports_nts_ke_and_metrics_tcp_ones(pki: Pki) -> None:
    tsq = {"transport": "datagram"} | pem(pki)
    ke = {"ntp-server": "ntp.example"} | pem(pki)
    assert errors(
        {
            "server": [{"listen": "[::]:1443"}, {"listen": "0.0.0.0:1444"}],
            "tsq-server": [
                tsq | {"listen": "127.0.0.1:1443"},
                tsq | {"listen": "[::]:1444"},
                tsq | {"listen": "[::]:1445"},
                tsq | {"listen": "[0::0]:1445"},
            ],
            "nts-ke-server": [ke | {"listen": "0.0.0.0:1446"}],
            "metrics": {"listen": "127.0.0.1:1446"},
        }
    ) == [
        f'tsq-server[0].listen = "127.0.0.1:1443": {SAME} (server[0].listen = "[::]:1443" is '
        "dual-stack and takes port 1443 on every IPv4 address too, this one too: set ipv6-only "
        "= true in server[0])",
        # A TSQ server's [::] is dual-stack, and has no ipv6-only.
        f'tsq-server[1].listen = "[::]:1444": {SAME} (this is dual-stack and takes port 1444 on '
        'every IPv4 address too, server[1].listen = "0.0.0.0:1444" too)',
        f'tsq-server[3].listen = "[0::0]:1445": {SAME} (same as tsq-server[2].listen)',
        f'metrics.listen = "127.0.0.1:1446": {SAME} (nts-ke-server[0].listen = "0.0.0.0:1446" '
        "takes port 1446 on every IPv4 address, this one too)",
    ]
    # UDP and TCP ports are apart; a TCP [::] is dual-stack too (net/tcp.py), so it holds the
    # port on IPv4 addresses as well.
    assert loads(
        {
            "server": [{"listen": "[::]:4460"}],
            "nts-ke-server": [ke | {"listen": "[::]:4460"}, ke | {"listen": "[::1]:9975"}],
            "metrics": {"listen": "127.0.0.1:9975"},
        }
    )
    assert errors(
        {
            "nts-ke-server": [ke | {"listen": "[::]:9975"}],
            "metrics": {"listen": "127.0.0.1:9975"},
        }
    ) == [
        f'metrics.listen = "127.0.0.1:9975": {SAME} (nts-ke-server[0].listen = "[::]:9975" is '
        "dual-stack and takes port 9975 on every IPv4 address too, this one too)",
    ]


def test_a_wrong_listen_is_compared_with_nothing() -> None:
    assert errors({"server": [{"listen": "0.0.0.0"}, {"listen": "[::ffff:0.0.0.0]"}]}) == [
        f'server[1].listen = "[::ffff:0.0.0.0]": {LISTEN} 123); "::ffff:0.0.0.0" is an '
        'IPv4-mapped IPv6 address: write it as IPv4, "0.0.0.0"',
    ]


# --- F7: ipv6-only, allow and deny ------------------------------------------------------------


def test_ipv6_only_only_on_an_ipv6_listen_address() -> None:
    assert errors(
        {
            "server": [
                {"listen": "127.0.0.1:1123", "ipv6-only": True},
                {"listen": "0.0.0.0:1124", "ipv6-only": False},
                {"listen": "[::]:1125", "ipv6-only": True},
                {"ipv6-only": False},
                {"listen": "[::1]:1126", "ipv6-only": True},
                {"listen": "localhost:1127", "ipv6-only": True},  # listen's own error only
            ]
        }
    ) == [
        f'server[5].listen = "localhost:1127": {LISTEN} 123); "localhost" is not an IP address '
        "(listen takes an IP address, not a name)",
        "server[0].ipv6-only = true: expected no ipv6-only unless listen is an IPv6 address (it "
        "sets IPV6_V6ONLY)",
        "server[1].ipv6-only = false: expected no ipv6-only unless listen is an IPv6 address (it "
        "sets IPV6_V6ONLY)",
    ]


def test_ipv4_mapped_allow_and_deny_entries_are_refused_for_their_ipv4_form() -> None:
    ipv4 = (
        "expected an IPv4 network for IPv4 clients (they are matched as IPv4, so an IPv4-mapped "
        "entry never matches): write"
    )
    assert errors(
        {
            "server": [
                {"allow": ["::ffff:127.0.0.0/104", "2001:db8::/32", "::ffff:0:0/96"]},
                {"listen": "[::]:1123", "deny": "::ffff:127.0.0.7"},
                {
                    "listen": "[::]:1124",
                    "deny": ["192.0.2.9", "::ffff:192.0.2.9/128", "::ffff:10.1.2.3/112"],
                },
            ]
        }
    ) == [
        f'server[0].allow[0] = "::ffff:127.0.0.0/104": {ipv4} "127.0.0.0/8"',
        f'server[0].allow[2] = "::ffff:0:0/96": {ipv4} "0.0.0.0/0"',
        f'server[1].deny = "::ffff:127.0.0.7": {ipv4} "127.0.0.7"',
        f'server[2].deny[1] = "::ffff:192.0.2.9/128": {ipv4} "192.0.2.9"',
        f'server[2].deny[2] = "::ffff:10.1.2.3/112": {ipv4} "10.1.0.0/16"',
    ]
    # A network reaching past ::ffff:0:0/96 holds IPv6 clients too: it stays.
    server = parse_config({"server": [{"allow": ["127.0.0.0/8", "::fffe:0:0/95"]}]}, P).servers[0]
    assert server.allow == (IPv4Network("127.0.0.0/8"), IPv6Network("::fffe:0:0/95"))


# --- hunt-nts F9.1: an NTS-KE server whose cookies nobody can open ----------------------------


def test_an_nts_ke_server_needs_an_ntp_server_for_its_cookies(pki: Pki) -> None:
    ke = {"listen": "127.0.0.1:4460"} | pem(pki)
    nobody = (
        "expected a [[server]] in this process, an ntp-server, or a shared [keyset] "
        "key-storage-path (no process could open the cookies it hands out)"
    )
    assert errors({"nts-ke-server": [ke, ke | {"listen": "[::1]:4460"}]}) == [
        f"nts-ke-server[0].ntp-server is missing: {nobody}",
        f"nts-ke-server[1].ntp-server is missing: {nobody}",
    ]
    # A random in-memory key opens nothing elsewhere; ntp-port alone names no other process.
    assert errors(
        {"nts-ke-server": [ke | {"ntp-port": 1123}], "keyset": {"key-rotation-interval": 3600}}
    ) == [f"nts-ke-server[0].ntp-server is missing: {nobody}"]
    # Any one of the three will do.
    assert loads({"nts-ke-server": [ke], "server": [{"listen": "127.0.0.1:1123"}]})
    assert loads({"nts-ke-server": [ke | {"ntp-server": "ntp1.example.org"}]})
    assert loads({"nts-ke-server": [ke], "keyset": {"key-storage-path": "/k.json"}})
    # A wrong [[server]] or [keyset] is its own error: nothing follows from it.
    assert errors({"nts-ke-server": [ke], "server": {"listen": "127.0.0.1:1123"}}) == [
        'server = { listen = "127.0.0.1:1123" }: expected array of tables (write [[server]], '
        "once per server)"
    ]
    assert errors({"nts-ke-server": [ke], "keyset": "/k.json"}) == [
        'keyset = "/k.json": expected table (write [keyset])'
    ]
    assert errors({"nts-ke-server": [ke | {"ntp-server": "a b"}]}) == [
        'nts-ke-server[0].ntp-server = "a b": expected host name, IPv4 or IPv6 address (no '
        'port); "a b" is not a valid host name'
    ]
    # RFC 8915 §4.1.7: no zone ID; an IPv4-mapped address is written as IPv4 (QA s18 F7).
    host = "expected host name, IPv4 or IPv6 address (no port)"
    zoned, mapped = ke | {"ntp-server": "fe80::1%eth0"}, ke | {"ntp-server": "::ffff:10.0.0.1"}
    mapped = mapped | {"listen": "127.0.0.1:4461"}
    assert errors({"nts-ke-server": [zoned, mapped]}) == [
        f'nts-ke-server[0].ntp-server = "fe80::1%eth0": {host}; "fe80::1%eth0" has a zone ID, '
        "which RFC 8915 leaves out",
        f'nts-ke-server[1].ntp-server = "::ffff:10.0.0.1": {host}; "::ffff:10.0.0.1" is '
        'IPv4-mapped: write "10.0.0.1"',
    ]
    assert loads({"nts-ke-server": [ke | {"ntp-server": "2001:db8::1"}]})


def test_an_nts_ke_server_sends_clients_where_a_server_listens(pki: Pki) -> None:
    """QA s18 hunt-nts-server F4 and hunt-ops F2: without ntp-server, clients send NTP to the
    address they reached NTS-KE on, at ntp-port (default: the first [[server]]'s port)."""
    ke = {"listen": "127.0.0.6:4460"} | pem(pki)
    where = "clients send NTP to the address they reached NTS-KE on (or set ntp-server)"
    # NTS-KE on another address than the only [[server]]; a typo in ntp-port.
    assert errors({"nts-ke-server": [ke], "server": [{"listen": "127.0.0.5:1123"}]}) == [
        'nts-ke-server[0].listen = "127.0.0.6:4460": expected a [[server]] listening on port '
        f"1123 at 127.0.0.6: {where}"
    ]
    typo = {"nts-ke-server": [ke | {"ntp-port": 1124}], "server": [{"listen": "0.0.0.0:1123"}]}
    assert errors(typo) == [
        "nts-ke-server[0].ntp-port = 1124: expected a [[server]] listening on port 1124 at "
        f"127.0.0.6: {where}"
    ]
    # NTS-KE on the dual-stack [::] beside a server on IPv6 only, or on one IPv4 address.
    for server in ({"listen": "[::]:1123", "ipv6-only": True}, {"listen": "0.0.0.0:1123"}):
        assert errors({"nts-ke-server": [ke | {"listen": "[::]:4460"}], "server": [server]}) == [
            'nts-ke-server[0].listen = "[::]:4460": expected a [[server]] listening on port '
            f'1123 at every address nts-ke-server[0].listen = "[::]:4460" takes: {where}'
        ]
    # Served: the same address, a wildcard of its family, the dual-stack [::], two wildcards
    # together, the port named, or clients sent elsewhere.
    for servers in (
        [{"listen": "127.0.0.6:1123"}],
        [{"listen": "0.0.0.0:1123"}],
        [{"listen": "[::]:1123"}],
        [{"listen": "127.0.0.5:1123"}, {"listen": "127.0.0.6:1124"}],
    ):
        port = int(str(servers[-1]["listen"]).rsplit(":", 1)[1])
        assert loads({"nts-ke-server": [ke | {"ntp-port": port}], "server": servers})
    both = [{"listen": "0.0.0.0:1123"}, {"listen": "[::]:1123", "ipv6-only": True}]
    assert loads({"nts-ke-server": [ke | {"listen": "[::]:4460"}], "server": both})
    assert loads(
        {
            "nts-ke-server": [ke | {"ntp-server": "ntp1.example.org", "ntp-port": 9}],
            "server": [{"listen": "127.0.0.5:1123"}],
        }
    )


# --- one run ----------------------------------------------------------------------------------


def test_every_listen_mistake_in_one_run(pki: Pki) -> None:
    lines = errors(
        {
            "server": [
                {"listen": "[::ffff:127.0.0.1]:1123", "rate-limit": 1},
                {"listen": "[::]:1124"},
                {"listen": "127.0.0.1:1124", "ipv6-only": True, "deny": ["::ffff:10.0.0.1"]},
                {"listen": "127.0.0.1:0"},
            ],
            "nts-ke-server": [{"listen": "0.0.0.0:4460"} | pem(pki)],
        }
    )
    assert [line.split(" = ", 1)[0] for line in lines] == [
        "server[0].listen",
        "server[0].rate-limit",
        "server[2].deny[0]",
        "server[3].listen",
        "server[2].listen",
        "server[2].ipv6-only",
    ]
