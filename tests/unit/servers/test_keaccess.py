"""Which [[server]]'s rules an [[nts-ke-server]] without allow/deny judges a client by: the one
that gets the client's NTP, by the local address its NTS-KE connection reached (QA s21
hunt-nts F1: the first [[server]] on the port used to decide for every client)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

from tsyncd.config import Endpoint, NtsKeServerConfig, ServerConfig
from tsyncd.servers.keaccess import ServerRules, ke_access
from tsyncd.servers.responder import AccessList

net = ip_network
PEM = Path("/nonexistent.pem")  # never read here


class Running:
    """A started [[server]] socket: its running rules, which tsyncctl allow/deny replace."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.access = AccessList(cfg.allow, cfg.deny)


def server(listen: str, port: int = 123, **kw: object) -> ServerConfig:
    return ServerConfig(listen=Endpoint(listen, port), **kw)  # type: ignore[arg-type]


def chooser(
    servers: list[ServerConfig], ke: str = "::", **kw: object
) -> tuple[ServerRules, list[Running]]:
    cfg = NtsKeServerConfig(
        listen=Endpoint(ke, 4460),
        certificate_chain_path=PEM,
        private_key_path=PEM,
        **kw,  # type: ignore[arg-type]
    )
    running = [Running(s) for s in servers]
    rules = ke_access(cfg, servers, running)
    assert isinstance(rules, ServerRules)
    return rules, running


def verdict(rules: ServerRules, client: str, local: str) -> str:
    return rules.verdict(ip_address(client), ip_address(local))


def test_ipv4_and_ipv6_servers_on_one_port_each_judge_their_family() -> None:
    # The report's s4: per-family servers, NTS-KE on the dual-stack [::].
    rules, _ = chooser(
        [
            server("0.0.0.0", allow=(net("127.0.0.0/8"),)),
            server("::", ipv6_only=True, allow=(net("::1/128"),)),
        ]
    )
    assert verdict(rules, "::1", "::1") == ""  # was "restricted": the IPv4 server's rules
    assert verdict(rules, "127.0.0.1", "127.0.0.1") == ""
    assert verdict(rules, "2001:db8::7", "2001:db8::1") == "restricted"
    assert verdict(rules, "192.0.2.7", "192.0.2.1") == "restricted"
    assert [listen for listen, _ in rules.followed()] == ["0.0.0.0:123", "[::]:123"]


def test_the_server_on_the_address_reached_decides_not_the_first_on_the_port() -> None:
    # The report's s3 and s1: two addresses, one port.
    rules, _ = chooser(
        [server("127.0.0.1", allow=(net("127.0.0.9/32"),)), server("127.0.0.4")], ke="127.0.0.4"
    )
    assert verdict(rules, "127.0.0.1", "127.0.0.4") == ""  # 127.0.0.1:123 would deny it
    assert [listen for listen, _ in rules.followed()] == ["127.0.0.4:123"]
    rules, _ = chooser(
        [server("127.0.0.1"), server("127.0.0.2", deny=(net("127.0.0.0/8"),))], ke="127.0.0.2"
    )
    assert verdict(rules, "127.0.0.1", "127.0.0.2") == "denied"  # no cookies for a denied client


def test_a_specific_address_beside_a_wildcard_decides_for_that_address() -> None:
    # As the kernel delivers: the exact address first, whatever the config order.  (The config
    # check keeps both off one family's port; the choice does not depend on that.)
    specific = server("192.0.2.1", deny=(net("192.0.2.9/32"),))
    for servers in ([server("0.0.0.0"), specific], [specific, server("0.0.0.0")]):
        rules, _ = chooser(servers, ke="0.0.0.0")
        assert verdict(rules, "192.0.2.9", "192.0.2.1") == "denied"
        assert verdict(rules, "192.0.2.9", "192.0.2.2") == ""  # the wildcard's


def test_a_dual_stack_wildcard_judges_ipv4_clients_as_ipv4() -> None:
    rules, _ = chooser([server("::", deny=(net("127.0.0.1/32"),))])
    # An IPv4 client of a dual-stack socket (both addresses IPv4-mapped on the socket, given
    # as IPv4 by ntske._peer_ip: test_ntske_server checks that end) is judged as IPv4.
    assert verdict(rules, "127.0.0.1", "127.0.0.1") == "denied"
    assert verdict(rules, "127.0.0.2", "127.0.0.1") == ""
    assert verdict(rules, "::1", "::1") == ""


def test_an_ipv6_only_wildcard_does_not_serve_ipv4_so_ipv4_clients_are_refused() -> None:
    # Nothing would answer their NTP (the config check refuses this file; the choice is safe).
    rules, _ = chooser([server("::", ipv6_only=True)])
    assert verdict(rules, "127.0.0.1", "127.0.0.1") == "restricted"
    assert verdict(rules, "::1", "::1") == ""
    assert rules.verdict(ip_address("::1"), None) == "restricted"  # local address unknown


def test_the_running_rules_are_read_at_each_connection() -> None:
    rules, running = chooser(
        [server("0.0.0.0"), server("::", ipv6_only=True, allow=(net("::1/128"),))]
    )
    assert verdict(rules, "::1", "::1") == ""
    # tsyncctl deny ::1 (daemon_commands): the [[server]]s' rules change; the IPv4 one's
    # change reaches its clients only.
    for r in running:
        r.access = r.access.with_rule(net("::1/128"), False)
    running[0].access = running[0].access.with_rule(net("127.0.0.1/32"), False)
    assert verdict(rules, "::1", "::1") == "denied"
    assert verdict(rules, "127.0.0.1", "127.0.0.1") == "denied"
    assert verdict(rules, "127.0.0.2", "127.0.0.2") == ""
    assert rules.followed()[0][1].verdict(ip_address("127.0.0.1")) == "denied"


def test_own_rules_or_no_server_to_follow() -> None:
    servers = [server("0.0.0.0", deny=(net("127.0.0.1/32"),))]
    running = [Running(s) for s in servers]
    cfg = NtsKeServerConfig(
        listen=Endpoint("::", 4460), certificate_chain_path=PEM, private_key_path=PEM
    )
    own = NtsKeServerConfig(
        listen=Endpoint("::", 4460),
        certificate_chain_path=PEM,
        private_key_path=PEM,
        allow=(),
        deny=(net("::1/128"),),
    )
    assert ke_access(own, servers, running) == AccessList((), (net("::1/128"),))
    elsewhere = NtsKeServerConfig(
        listen=Endpoint("::", 4460),
        certificate_chain_path=PEM,
        private_key_path=PEM,
        ntp_server="ntp1.example.org",
    )
    assert ke_access(elsewhere, servers, running) == AccessList()
    other_port = NtsKeServerConfig(
        listen=Endpoint("::", 4460),
        certificate_chain_path=PEM,
        private_key_path=PEM,
        ntp_port=1123,
    )
    assert ke_access(other_port, servers, running) == AccessList()  # another process's NTP
    assert isinstance(ke_access(cfg, servers, running), ServerRules)
