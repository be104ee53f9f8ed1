"""Multicast and calibration keys of broadcast sources and [[broadcast]] servers."""

from __future__ import annotations

from tests.config_errors import P, errors
from tsyncd.config import Endpoint, parse_config
from tsyncd.config_broadcast import is_multicast


def test_multicast_groups_are_recognized() -> None:
    assert is_multicast("ff05::101") and is_multicast("224.0.1.1") and is_multicast("ff02::101")
    assert not is_multicast("192.0.2.255") and not is_multicast("2001:db8::1")
    assert not is_multicast("ntp.example")


def test_multicast_source_with_its_server_calibration_and_interface() -> None:
    config = parse_config(
        {
            "source": [
                {
                    "mode": "broadcast",
                    "address": "[ff05::101]:1123",
                    "broadcast-server": "2001:db8::1",
                    "broadcast-interface": "eth0",
                    "broadcast-calibrate": True,
                },
                {"mode": "broadcast", "address": "192.0.2.1", "broadcast-server": "192.0.2.1:4123"},
                {"mode": "broadcast", "address": "192.0.2.2"},
            ],
            "broadcast": [
                {"address": "[ff05::101]", "interface": "eth0", "ttl": 4},
                {"address": "224.0.1.1:1123"},
            ],
        },
        P,
    )
    group, ipv4, plain = config.sources
    # No port on broadcast-server: the server sends from (and answers on) the broadcasts' port.
    assert group.broadcast_server == Endpoint("2001:db8::1", 1123)
    assert group.broadcast_interface == "eth0" and group.broadcast_calibrate
    assert ipv4.broadcast_server == Endpoint("192.0.2.1", 4123) and not ipv4.broadcast_calibrate
    assert plain.broadcast_server is None and plain.broadcast_interface is None
    assert config.broadcasts[0].interface == "eth0" and config.broadcasts[0].ttl == 4
    assert config.broadcasts[1].ttl == 1 and config.broadcasts[1].interface is None


def test_wrong_multicast_and_calibration_settings_are_named() -> None:
    assert errors(
        {
            "source": [
                {"mode": "broadcast", "address": "[ff05::101]:123"},
                {"mode": "broadcast", "address": "224.0.1.1", "broadcast-server": "224.0.1.2"},
                {"mode": "broadcast", "address": "[ff02::101]", "broadcast-server": "192.0.2.1"},
                {"mode": "broadcast", "address": "192.0.2.1", "broadcast-server": "192.0.2.9"},
                {"mode": "broadcast", "address": "192.0.2.2", "broadcast-interface": "eth0"},
                {"mode": "broadcast", "address": "2001:db8::1"},
                {"mode": "server", "address": "a.example", "broadcast-calibrate": True},
            ],
            "broadcast": [
                {"address": "[2001:db8::ff]"},
                {"address": "192.0.2.255", "ttl": 2, "interface": "eth0"},
            ],
        }
    ) == [
        "source[0].broadcast-server is missing: expected the IP[:port] of the server whose "
        "multicasts to use (address is a group)",
        'source[1].broadcast-server = "224.0.1.2": expected a unicast IPv4[:port], as the group is '
        "IPv4",
        'source[2].broadcast-server = "192.0.2.1": expected a unicast IPv6[:port], as the group '
        "is IPv6",
        'source[3].broadcast-server = "192.0.2.9": expected the address\'s IP (192.0.2.1) with '
        "the server's port, or no broadcast-server (it names another sender only when address "
        "is a multicast group)",
        'source[4].broadcast-interface = "eth0": expected no broadcast-interface unless address '
        "is a multicast group",
        'source[5].address = "2001:db8::1": expected the broadcast server\'s IPv4 address, or a '
        "multicast group (IPv6 ff0X::101, IPv4 224.0.1.1)",
        "source[6].broadcast-calibrate = true: expected no broadcast-calibrate unless mode = "
        '"broadcast"',
        'broadcast[0].address = "[2001:db8::ff]": expected an IPv4 broadcast address or a '
        "multicast group (IPv6 ff0X::101, IPv4 224.0.1.1)",
        'broadcast[1].interface = "eth0": expected no interface unless address is a multicast '
        "group",
        "broadcast[1].ttl = 2: expected no ttl unless address is a multicast group",
    ]
