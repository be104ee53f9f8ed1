"""Which associations tsyncctl offline/online/onoffline's selectors pick, and the route test."""

from __future__ import annotations

import pytest

from tsyncd.daemon_connectivity import Association, has_route, select_associations
from tsyncd.sources.ntp import NtpSourceSocket

ASSOCIATIONS = [
    Association("ntp1.example.org", "ntp1.example.org", "192.0.2.10"),
    Association("198.51.100.7:123", "pool.example.org", "198.51.100.7"),
    Association("198.51.100.8:123", "pool.example.org", "198.51.100.8"),
    Association("[2001:db8::1]:123", "[2001:db8::1]:123", "2001:db8::1"),
]


@pytest.mark.parametrize(
    ("selectors", "picked"),
    [
        (["ntp1.example.org"], ["ntp1.example.org"]),
        (["pool.example.org"], ["198.51.100.7:123", "198.51.100.8:123"]),  # a pool's members
        (["198.51.100.8:123"], ["198.51.100.8:123"]),  # one member by its own name
        (["198.51.100.7"], ["198.51.100.7:123"]),  # an IP
        (["198.51.100.0/24"], ["198.51.100.7:123", "198.51.100.8:123"]),
        (["198.51.100.0/255.255.255.0"], ["198.51.100.7:123", "198.51.100.8:123"]),
        (["2001:db8::/32"], ["[2001:db8::1]:123"]),
        (["[2001:db8::1]"], ["[2001:db8::1]:123"]),
        (["0.0.0.0/0"], ["ntp1.example.org", "198.51.100.7:123", "198.51.100.8:123"]),
        # Each once, in the associations' order for one selector, then the next's:
        (["198.51.100.8", "pool.example.org"], ["198.51.100.8:123", "198.51.100.7:123"]),
    ],
)
def test_selectors_pick_by_name_source_ip_or_network(
    selectors: list[str], picked: list[str]
) -> None:
    assert select_associations(selectors, ASSOCIATIONS) == (picked, [])


def test_selectors_that_pick_nothing_are_reported() -> None:
    names, unmatched = select_associations(
        ["ntp1.example.org", "ntp9.example.org", "203.0.113.0/24", "example.org"], ASSOCIATIONS
    )
    assert names == ["ntp1.example.org"]
    assert unmatched == ["ntp9.example.org", "203.0.113.0/24", "example.org"]


def test_route_test_sends_nothing_and_tells_loopback_from_unroutable() -> None:
    lo = NtpSourceSocket(name="lo", mode="server", ip="127.0.0.1", port=9)
    assert has_route(lo.ip, lo.peer) is True
    # A link-local address with an interface that does not exist: no route, whatever the host.
    gone = NtpSourceSocket(name="ll", mode="server", ip="fe80::1%tsyncd-none0", port=123)
    assert has_route(gone.ip, gone.peer) is False
