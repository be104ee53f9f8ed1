"""The server's access list: chrony's rules (the most specific matching network decides),
run-time changes as chronyc's allow/deny [all] [SUBNET], and the verdicts the client log
caches kept current."""

from __future__ import annotations

import ipaddress
import pickle

import pytest

from tsyncd.servers.responder import ALL_NETWORKS, AccessList, NtpResponder
from tsyncd.wire.ntp import Mode, NtpPacket, encode_ntp

S = 1_000_000_000
RX = 1_800_000_000 * S
net = ipaddress.ip_network
ip = ipaddress.ip_address
REQUEST = encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=0x1122334455667788))


def verdicts(acl: AccessList, *addresses: str) -> list[str]:
    return [acl.verdict(ip(a)) or "allowed" for a in addresses]


def test_the_most_specific_network_decides_ipv4() -> None:
    """chrony's example: allow 10/8, deny 10.1/16, allow 10.1.2/24, and a fourth level."""
    acl = AccessList(
        allow=(net("10.0.0.0/8"), net("10.1.2.0/24")),
        deny=(net("10.1.0.0/16"), net("10.1.2.128/25")),
    )
    assert verdicts(acl, "10.9.9.9", "10.1.9.9", "10.1.2.3", "10.1.2.200", "11.0.0.1", "::1") == [
        "allowed",  # 10/8
        "denied",  # 10.1/16 inside it
        "allowed",  # 10.1.2/24 inside that
        "denied",  # 10.1.2.128/25 inside that
        "restricted",  # no rule holds it, and allow is not empty
        "restricted",
    ]


def test_the_most_specific_network_decides_ipv6() -> None:
    acl = AccessList(
        allow=(net("2001:db8::/32"), net("2001:db8:1:2::/64"), net("2001:db8:1:2::7/128")),
        deny=(net("2001:db8:1::/48"), net("2001:db8:1:2::/96")),
    )
    assert verdicts(
        acl, "2001:db8:5::1", "2001:db8:1:5::1", "2001:db8:1:2:1::1", "2001:db8:1:2::1"
    ) == ["allowed", "denied", "allowed", "denied"]
    assert verdicts(acl, "2001:db8:1:2::7", "2001:db9::1", "192.0.2.1") == [
        "allowed",  # a host inside a denied /96
        "restricted",
        "restricted",
    ]


def test_ties_and_the_default() -> None:
    # The same network in both lists: denied (deny wins the tie), a host as a /32 too.
    acl = AccessList(allow=(net("192.0.2.0/24"), net("192.0.2.9/32")), deny=(net("192.0.2.0/24"),))
    assert verdicts(acl, "192.0.2.1", "192.0.2.9") == ["denied", "allowed"]
    acl = AccessList(allow=(net("192.0.2.9/32"),), deny=(net("192.0.2.9/32"),))
    assert verdicts(acl, "192.0.2.9") == ["denied"]
    # Empty allow: every client, less what deny holds, and a more specific allow in a deny.
    acl = AccessList(deny=(net("10.0.0.0/8"),))
    assert verdicts(acl, "192.0.2.1", "::1", "10.1.1.1") == ["allowed", "allowed", "denied"]
    acl = AccessList(allow=(), deny=(net("0.0.0.0/0"),))
    assert verdicts(acl, "192.0.2.1", "2001:db8::1") == ["denied", "allowed"]
    assert AccessList().rules == dict.fromkeys(ALL_NETWORKS, True)
    # Rules of one IP version never judge the other: ::a01:203 is IPv4-compatible, not mapped.
    acl = AccessList(allow=(net("10.0.0.0/8"),))
    assert verdicts(acl, "::a01:203", "::") == ["restricted", "restricted"]


def test_ipv4_mapped_clients_are_judged_as_ipv4() -> None:
    """A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: IPv4 rules judge them."""
    r = NtpResponder(
        AccessList(allow=(net("10.0.0.0/8"), net("10.1.2.0/24")), deny=(net("10.1.0.0/16"),))
    )
    assert r.respond(REQUEST, "::ffff:10.1.2.3", RX, RX + 1, 123)[0] == "answered"
    assert r.respond(REQUEST, "::ffff:10.1.3.1", RX, RX + 1, 123)[:2] == ("denied", None)
    assert r.respond(REQUEST, "::ffff:11.0.0.1", RX, RX + 1, 123)[:2] == ("restricted", None)


def test_chronyc_allow_and_deny_at_run_time() -> None:
    acl = AccessList(allow=(net("10.0.0.0/8"),))
    acl = acl.with_rule(net("10.1.0.0/16"), False)
    assert verdicts(acl, "10.2.0.1", "10.1.0.1", "11.0.0.1") == ["allowed", "denied", "restricted"]
    # `allow` alone: every address, yet the more specific deny still decides for its own.
    every = acl.with_rule(None, True)
    assert verdicts(every, "11.0.0.1", "2001:db8::1", "10.1.0.1") == ["allowed"] * 2 + ["denied"]
    # `allow all 10/8`: the rules inside it go.
    assert acl.with_rule(net("10.0.0.0/8"), True, replace_inside=True).rules == {
        net("10.0.0.0/8"): True
    }
    # `deny all`: nothing but the two every-address rules, denying.
    nobody = every.with_rule(None, False, replace_inside=True)
    assert nobody.rules == dict.fromkeys(ALL_NETWORKS, False)
    assert verdicts(nobody, "10.2.0.1", "::1") == ["denied", "denied"]
    # `deny 10.1.2.3`: a host inside an allowed network; replacing inside one IPv4 network
    # keeps every IPv6 rule.
    acl = every.with_rule(net("10.1.2.3/32"), False)
    assert verdicts(acl, "10.1.2.3", "10.1.2.4", "10.2.0.1") == ["denied", "denied", "allowed"]
    acl = acl.with_rule(net("0.0.0.0/0"), True, replace_inside=True)
    assert acl.rules == {net("0.0.0.0/0"): True, net("::/0"): True}
    # The list is immutable: a change is a new list.
    assert verdicts(every, "10.1.0.1") == ["denied"]


def test_pickled_whole_for_the_workers() -> None:
    acl = AccessList(allow=(net("10.0.0.0/8"),), deny=(net("10.1.0.0/16"),))
    copy = pickle.loads(pickle.dumps(acl, pickle.HIGHEST_PROTOCOL))
    assert copy == acl and copy is not acl
    assert verdicts(copy, "10.2.0.1", "10.1.0.1", "::1") == ["allowed", "denied", "restricted"]
    assert copy != acl.with_rule(None, True)


@pytest.mark.parametrize("address", ["192.0.2.7", "::ffff:192.0.2.7"])
def test_a_rule_change_reaches_clients_already_in_the_log(address: str) -> None:
    """The client log caches each client's verdict when it first comes: a change must judge
    the known clients again, both ways, and a bad source stays one."""
    r = NtpResponder(AccessList())
    assert r.respond(REQUEST, address, RX, RX + 1, 123)[0] == "answered"
    assert r.respond(REQUEST, "224.0.0.1", RX, RX + 1, 123)[0] == "bad_source"
    r.set_access(r.access.with_rule(net("192.0.2.0/24"), False))
    assert r.respond(REQUEST, address, RX + S, RX + S + 1, 123)[:2] == ("denied", None)
    r.set_access(r.access.with_rule(net("192.0.2.7/32"), True))
    assert r.respond(REQUEST, address, RX + 2 * S, RX + 2 * S + 1, 123)[0] == "answered"
    r.set_access(AccessList().with_rule(None, True, replace_inside=True))
    assert r.respond(REQUEST, "224.0.0.1", RX, RX + 1, 123)[0] == "bad_source"
    assert r.clients.records[address].answered == 2
