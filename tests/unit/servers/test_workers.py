"""Pieces of the multi-core server that need no daemon: clock mapping, IP steering, merging."""

from __future__ import annotations

import socket

from tsyncd.clock.measure import VirtualClock
from tsyncd.servers.stats import merge_client_rows, sum_counters
from tsyncd.servers.worker import RATE_UNIT, ClockMap
from tsyncd.servers.workers import _map_moved, attach_ip_hash, clock_map_of

S = 1_000_000_000


def test_clock_map_follows_a_virtual_clock() -> None:
    host = [1_800_000_000 * S]
    clock = VirtualClock(lambda: host[0])
    clock.step(5_000)
    clock.set_frequency(12.5)  # ppm
    m = clock_map_of(clock)
    for u in (host[0], host[0] + 3 * S, host[0] + 1000 * S):
        assert abs(m(u) - clock.from_kernel_ns(u)) <= 1
    assert m.rate_ppt == 12_500_000
    assert not _map_moved(m, clock_map_of(clock))
    clock.step(10)
    assert _map_moved(m, clock_map_of(clock))


def test_clock_map_identity() -> None:
    m = ClockMap(100, 100, 0)
    assert m(10**18) == 10**18
    assert ClockMap(0, 7, RATE_UNIT // 1000)(S) == S + 7 + S // 1000


def test_reuseport_group_is_steered_by_client_ip() -> None:
    socks: list[socket.socket] = []
    port = 0
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("::", port))
            port = s.getsockname()[1]
            s.setblocking(False)
            socks.append(s)
        attach_ip_hash(socks[0], 2)
        seen: dict[str, set[int]] = {}
        for source, family, target in [
            ("127.0.0.2", socket.AF_INET, "127.0.0.1"),
            ("127.0.0.3", socket.AF_INET, "127.0.0.1"),
            ("::1", socket.AF_INET6, "::1"),
        ]:
            for _ in range(8):  # a new source port each time, as chronyd does
                with socket.socket(family, socket.SOCK_DGRAM) as c:
                    c.bind((source, 0))
                    c.sendto(b"x" * 48, (target, port))
            got = set()
            for i, s in enumerate(socks):
                while True:
                    try:
                        s.recv(64)
                    except BlockingIOError:
                        break
                    got.add(i)
            seen[source] = got
        assert all(len(v) == 1 for v in seen.values()), seen  # one worker per client IP
        assert seen["127.0.0.2"] != seen["127.0.0.3"]  # and different IPs spread out
    finally:
        for s in socks:
            s.close()


def test_merge_client_rows_and_sum_counters() -> None:
    row = {
        "address": "192.0.2.1",
        "received": 3,
        "answered": 2,
        "interleaved": 1,
        "dropped": 1,
        "kod_sent": 0,
        "last_rx": 5.0,
        "interval": 4.0,
    }
    other = {**row, "address": "192.0.2.2", "received": 1, "interval": None}
    merged = merge_client_rows([row, other, {**row, "last_rx": 1.0}])
    assert [r["address"] for r in merged] == ["192.0.2.1", "192.0.2.2"]
    assert merged[0]["received"] == 6 and merged[0]["last_rx"] == 1.0
    assert merged[0]["interval"] == 2.0  # two clients each every 4 s: one request every 2 s
    total = sum_counters(
        [
            {"received": 2, "dropped_by_reason": {"denied": 1}, "workers": 1},
            {"received": 3, "dropped_by_reason": {"denied": 2, "rate_limited": 1}},
            {},
        ]
    )
    assert total["received"] == 5 and total["workers"] == 1
    assert total["dropped_by_reason"] == {"denied": 3, "rate_limited": 1}
