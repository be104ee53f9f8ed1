"""Which associations tsyncctl offline/online/onoffline's selectors pick, and the route test."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tsyncd.config import parse_source
from tsyncd.control.rpc import InvalidParams
from tsyncd.daemon_connectivity import (
    Association,
    Connectivity,
    has_route,
    nothing_to_burst,
    select_associations,
)
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


class Unresolved(Connectivity):
    """The connectivity methods over sources none of which has an association yet (their
    names do not resolve): no sync core sources, no sockets."""

    def __init__(self, *addresses: str) -> None:
        self._init_source_admin()
        self._init_connectivity()
        self.core = SimpleNamespace(sources={})
        self.clock = SimpleNamespace(now_ns=lambda: 0)
        self.sockets = {}
        self.nts_sources = {}
        self._after_update = lambda: None  # type: ignore[method-assign]
        self._wake = asyncio.Event()
        for address in addresses:
            cfg = parse_source({"mode": "server", "address": address})
            self._source_configs[cfg.name] = cfg


@pytest.mark.parametrize("selectors", [[], ["ntp.example.invalid", "ntp2.example.invalid"]])
def test_offline_and_online_of_unresolved_sources_count_each_change_once(
    selectors: list[str],
) -> None:
    """Each says what it changed: not "0 changed (2 already were)" both ways."""
    daemon = Unresolved("ntp.example.invalid", "ntp2.example.invalid")
    both = ["ntp.example.invalid", "ntp2.example.invalid"]
    params = {"sources": selectors}
    assert daemon._rpc_offline(params) == {"changed": both, "selected": both}
    assert daemon._rpc_offline(params) == {"changed": [], "selected": both}
    assert daemon._rpc_activity({})["unknown_address"] == 2
    assert all(daemon._starts_offline(cfg) for cfg in daemon._source_configs.values())
    assert daemon._rpc_online(params) == {"changed": both, "selected": both}
    assert daemon._rpc_online(params) == {"changed": [], "selected": both}
    assert not any(daemon._starts_offline(cfg) for cfg in daemon._source_configs.values())


def test_a_source_stopped_and_started_again_starts_as_its_options_say() -> None:
    """QA s17 hunt-churn F3: after tsyncctl online of an offline = true source, deleting it and
    adding it again with --offline (or a reload restarting it) started it online."""
    daemon = Unresolved("ntp.example.invalid")
    cfg = parse_source({"mode": "server", "address": "ntp.example.invalid", "offline": True})
    daemon._source_configs[cfg.name] = cfg
    assert daemon._starts_offline(cfg)
    daemon._rpc_online({"sources": [cfg.name]})
    assert not daemon._starts_offline(cfg)
    asyncio.run(daemon._stop_source(cfg.name))
    assert daemon._starts_offline(cfg)  # added again: offline, as configured


def test_a_burst_of_nothing_says_why_for_each_source_selected() -> None:
    """The message of tsyncctl burst's error when no source was burst (the daemon's side:
    tests/interop/test_broadcast_loopback.py)."""
    bc = "a broadcast source only listens: it has no requests to send"
    assert nothing_to_burst(["bc", "ntp.example"], {"bc": bc}) == (
        f"burst: no source to burst (skipped bc: {bc}; not polling yet (no address, or NTS-KE"
        " not done): ntp.example)"
    )
    assert nothing_to_burst([], {}) == "burst: no source to burst (no sources)"


def test_refresh_picks_sources_given_by_name_by_name_address_or_host() -> None:
    """QA s18 hunt-nts-client #7: ``tsyncctl refresh localhost:26468`` (an NTS source by its
    NTS-KE name) was refused.  NAMEs pick sources given by name by their name, their address
    as configured (host:port) or the host alone; a source given by IP is none of them."""
    daemon = Unresolved()
    for table in (
        {"mode": "nts", "address": "localhost:26468"},
        {"mode": "nts", "address": "nts.example", "name": "ke"},  # port 4460
        {"mode": "pool", "address": "pool.example"},
        {"mode": "server", "address": "192.0.2.1"},
    ):
        cfg = parse_source(table)
        daemon._source_configs[cfg.name] = cfg
        if table["address"] != "192.0.2.1":  # what the source tasks do for names
            daemon._refresh_event(cfg.name)
    events = daemon._refresh_events
    named = ["localhost:26468", "ke", "pool.example"]
    assert daemon._rpc_refresh({}) == {"sources": named}
    assert all(event.is_set() for event in events.values())
    for event in events.values():
        event.clear()
    for selectors, picked in (
        (["localhost:26468"], ["localhost:26468"]),
        (["localhost"], ["localhost:26468"]),
        (["nts.example:4460", "pool.example"], ["ke", "pool.example"]),
        (["nts.example"], ["ke"]),
        (["ke"], ["ke"]),
    ):
        assert daemon._rpc_refresh({"sources": selectors}) == {"sources": picked}
        assert [name for name, event in events.items() if event.is_set()] == picked
        for event in events.values():
            event.clear()
    with pytest.raises(InvalidParams) as refused:
        daemon._rpc_refresh({"sources": ["192.0.2.1", "ke"]})
    assert str(refused.value) == (
        "refresh: no source given by name matches 192.0.2.1"
        " (sources given by name: localhost:26468, ke, pool.example)"
    )
    assert not any(event.is_set() for event in events.values())
