"""Pieces of the multi-core server that need no daemon: clock mapping, IP steering, merging."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import os
import signal
import socket
import struct
import time

import pytest

from tsyncd.clock.measure import MeasureClock, VirtualClock
from tsyncd.net.udp import SocketOptions
from tsyncd.servers import pipe as pipe_mod
from tsyncd.servers import worker as worker_mod
from tsyncd.servers import workers as workers_mod
from tsyncd.servers.ntp import NtpServer
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate, ServerPolicy
from tsyncd.servers.stats import distinct_clients, merge_client_rows, sum_counters
from tsyncd.servers.worker import RATE_UNIT, ClockMap
from tsyncd.servers.workers import WorkerPool, _map_moved, attach_ip_hash, clock_map_of
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp

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


def test_distinct_clients_across_logs() -> None:
    """A client on a dual-stack and on an IPv4 socket is one client; unknown keys add up."""
    logs = [
        (["::ffff:192.0.2.1", "2001:db8::1", "::ffff:192.0.2.2"], 0),
        (["192.0.2.1", "192.0.2.3", "fe80::1%eth0"], 0),
        ([], 4),  # a worker that sent no keys: its 4 clients, as they are
    ]
    assert distinct_clients(logs) == 5 + 4


def pool(host: str, port: int, workers: int = 2) -> WorkerPool:
    return WorkerPool(host, port, workers, AccessList((), ()), ServerPolicy(), MeasureClock())


def test_a_pool_refuses_a_port_another_group_holds() -> None:
    """SO_REUSEPORT would let a second group join the first (replacing its steering program):
    whoever comes second gets EADDRINUSE, a pool or an event-loop server sharing the port."""

    async def scenario() -> None:
        first = pool("0:0::0", 0)
        try:
            assert first.listen.startswith("[::]:")  # the canonical text, dual-stack
            port = int(first.listen.rsplit(":", 1)[1])
            for host in ("::", "127.0.0.1"):
                with pytest.raises(OSError) as caught:
                    pool(host, port, 4)
                assert caught.value.errno == errno.EADDRINUSE
            with pytest.raises(OSError) as caught:
                NtpServer.create(
                    "127.0.0.1",
                    port,
                    AccessList((), ()),
                    MeasureClock(),
                    options=SocketOptions(reuse_port=True),  # a port shared with a peer
                )
            assert caught.value.errno == errno.EADDRINUSE
        finally:
            first.close()
        pool("::", port).close()  # free again once the first is closed

    asyncio.run(scenario())


def test_a_dead_workers_clients_are_no_longer_counted() -> None:
    async def scenario() -> None:
        p = pool("127.0.0.1", 0)
        try:
            w0, w1 = p._workers
            w0.counters = {"received": 10, "clients": 3, "clients_evicted": 1}
            w1.counters = {"received": 5, "clients": 2}
            assert p.counters()["clients"] == 5
            p._retire_counters(w0)  # as when it died: its log went with it
            total = p.counters()
            assert total["clients"] == 2
            assert total["received"] == 15 and total["clients_evicted"] == 1  # counters stay
            assert p.client_keys() == ([], 2)  # no keys asked for: the count stands in
        finally:
            p.close()

    asyncio.run(scenario())


def _spoof(source: tuple[str, int], target: tuple[str, int], payload: bytes) -> None:
    """Send a UDP datagram from any ``source`` through a raw socket (we are root; loopback
    only): the kernel fills in the IP checksum, the UDP checksum stays 0 (none)."""
    udp = struct.pack("!HHHH", source[1], target[1], 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(source[0]),
        socket.inet_aton(target[0]),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(ip + udp, target)


BAD_SOURCES = [("127.0.0.1", 0), ("127.255.255.255", 40000), ("255.255.255.255", 40000)]
BAD_SOURCES += [("224.0.0.1", 40000)]


@pytest.mark.parametrize("workers", [0, 2])
def test_requests_from_unanswerable_sources_are_dropped_on_both_paths(workers: int) -> None:
    """Port 0, loopback's directed broadcast, the limited broadcast and a multicast source:
    dropped as ``bad_source`` by the event loop and the workers alike, nothing sent (before:
    counted as answered and sent, the kernel refusing each send)."""
    request = encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=0x1234_5678_9ABC))

    async def scenario() -> None:
        access, policy, clock = AccessList((), ()), ServerPolicy(), MeasureClock()
        server: NtpServer | WorkerPool
        if workers:
            server = WorkerPool(
                "127.0.0.1", 0, workers, access, policy, clock, ResponseTemplate(stratum=10)
            ).start()
        else:
            responder = NtpResponder(access, policy)
            responder.template = ResponseTemplate(stratum=10)
            server = NtpServer.create("127.0.0.1", 0, access, clock, responder=responder)
        try:
            target = ("127.0.0.1", int(server.listen.rsplit(":", 1)[1]))
            for source in BAD_SOURCES:
                _spoof(source, target, request)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                client.sendto(request, target)
                reply = decode_ntp(await asyncio.to_thread(client.recv, 512))
            assert reply.origin_ts == 0x1234_5678_9ABC
            counters: dict[str, object] = {}
            for _ in range(50):  # the spoofed ones were queued first, yet go bounded
                if isinstance(server, WorkerPool):
                    await server.refresh()
                counters = server.counters()
                if counters["received"] == len(BAD_SOURCES) + 1:
                    break
                await asyncio.sleep(0.05)
            assert counters["received"] == len(BAD_SOURCES) + 1
            assert counters["answered"] == counters["sent"] == 1
            assert counters["dropped_by_reason"] == {"bad_source": len(BAD_SOURCES)}
        finally:
            server.close()

    asyncio.run(scenario())


def test_refresh_callers_waiting_side_by_side_are_all_answered() -> None:
    """QA s18 hunt-ops F3: a second refresh (a scrape during tsyncctl serverstats) replaced
    the first caller's event, so the first waited out its whole timeout (1 s per scrape), and
    a push asking for keys could be answered without them."""

    async def scenario() -> None:
        p = pool("127.0.0.1", 0).start()
        try:
            target = ("127.0.0.1", int(p.listen.rsplit(":", 1)[1]))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                client.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=7)), target)
                await asyncio.to_thread(client.recv, 512)
            async with asyncio.timeout(10):  # each may wait 60 s: only an answer ends it early
                await asyncio.gather(
                    p.refresh(60, keys=True), p.refresh(60), p.refresh(60), p.refresh(60)
                )
            assert p.client_keys() == (["127.0.0.1"], 0)
            assert p._waiting == []
        finally:
            p.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("flood", [True, False])
def test_a_stopped_worker_never_blocks_the_main_process_and_is_restarted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flood: bool
) -> None:
    """QA s18 hunt-server-policy F2: a SIGSTOPped worker's clients got no answers, then the
    main process blocked writing to its full pipe (control, the clock, every other worker's
    counters) and the healthy workers blocked writing to the main process.  Writes to workers
    no longer wait, and a worker silent for a while is killed and restarted."""
    monkeypatch.setattr(workers_mod, "_STUCK_S", 2.0)
    monkeypatch.setattr(workers_mod, "_WATCH_S", 0.5)
    monkeypatch.setattr(worker_mod, "_IDLE_WAIT_MS", 200)  # the healthy one's heartbeat
    monkeypatch.setattr(pipe_mod, "MAX_PENDING", 64 * 1024)

    async def scenario() -> None:
        p = pool("127.0.0.1", 0).start()
        try:
            stopped = p._workers[1]
            old_pid = stopped.pid
            os.kill(old_pid, signal.SIGSTOP)
            start = time.monotonic()
            big = ResponseTemplate(stratum=3, reference_id=7)
            for i in range(2000 if flood else 0):  # far more than the pipe holds (200 kB)
                p._send_all(("template", dataclasses.replace(big, stratum=1 + i % 15)))
            assert time.monotonic() - start < 5  # never waited for the stopped worker
            async with asyncio.timeout(20):
                while stopped.pid in (0, old_pid):
                    await asyncio.sleep(0.1)
            assert p.restarts >= 1 and p._workers[0].conn is not None
            why = "not reading its pipe" if flood else "no report for 2 s"
            assert f"is stuck ({why}): killing it" in caplog.text
            target = ("127.0.0.1", int(p.listen.rsplit(":", 1)[1]))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                client.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=9)), target)
                assert decode_ntp(await asyncio.to_thread(client.recv, 512)).origin_ts == 9
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old_pid, signal.SIGCONT)
            p.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("workers", [0, 2])
def test_access_changes_reach_every_worker_and_outlive_a_restart(workers: int) -> None:
    """``set_access`` (tsyncctl allow/deny): a known client is judged again at once, in each
    worker process, and a worker forked again after a crash starts with the running rules,
    not the config's."""
    loopback = ipaddress.ip_network("127.0.0.1/32")

    async def scenario() -> None:
        access, policy, clock = AccessList((), ()), ServerPolicy(), MeasureClock()
        server: NtpServer | WorkerPool
        if workers:
            server = WorkerPool("127.0.0.1", 0, workers, access, policy, clock).start()
        else:
            server = NtpServer.create("127.0.0.1", 0, access, clock)
        target = ("127.0.0.1", int(server.listen.rsplit(":", 1)[1]))

        async def answered(transmit: int) -> bool:
            """Whether a request is answered; a drop is seen in the counters, not waited out."""
            before = server.counters().get("dropped_by_reason", {}).get("denied", 0)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.setblocking(False)
                client.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=transmit)), target)
                for _ in range(200):
                    with contextlib.suppress(BlockingIOError):
                        return decode_ntp(client.recv(512)).origin_ts == transmit
                    if isinstance(server, WorkerPool):
                        await server.refresh()
                    if server.counters().get("dropped_by_reason", {}).get("denied", 0) > before:
                        return False
                    await asyncio.sleep(0.05)
            raise AssertionError("neither answered nor dropped as denied")

        try:
            assert await answered(1)
            server.set_access(server.access.with_rule(loopback, False))
            if isinstance(server, WorkerPool):
                await server.refresh()  # every worker has it once this returns
            assert not await answered(2)
            if isinstance(server, WorkerPool):
                old = server.pids
                for pid in old:
                    os.kill(pid, signal.SIGKILL)
                async with asyncio.timeout(20):
                    while len(set(server.pids) - set(old)) < workers or any(
                        w.conn is None for w in server._workers
                    ):
                        await asyncio.sleep(0.05)
                assert not await answered(3)  # forked again with the running rules
            server.set_access(server.access.with_rule(None, True, replace_inside=True))
            if isinstance(server, WorkerPool):
                await server.refresh()
            assert await answered(4)
        finally:
            server.close()

    asyncio.run(scenario())


def test_refresh_wakes_idle_workers_and_counts_what_came_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scrape or ``tsyncctl serverstats`` waited for an idle worker's receive timeout, twice
    (0.3-0.4 s a scrape with workers): the worker is now woken by a signal, takes the requests
    already queued, and pushes at once.  With a receive timeout of 60 s here, only the wake
    can answer within the test's bound; the malformed requests sent just before the question
    (never answered, so nothing else waits for them) are in the counters it brings."""
    monkeypatch.setattr(worker_mod, "_RCV_TIMEOUT", struct.pack("@ll", 60, 0))

    async def scenario() -> None:
        p = pool("127.0.0.1", 0).start()
        try:
            target = ("127.0.0.1", int(p.listen.rsplit(":", 1)[1]))
            await p.refresh(20)  # both workers up and idle in their receive
            assert all(w.acked == p._push_seq for w in p._workers)
            for _ in range(3):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                    client.sendto(b"\x23" + bytes(20), target)  # shorter than a header
                started = time.monotonic()
                await p.refresh(20)
                assert time.monotonic() - started < 10, "waited for a receive timeout"
                assert all(w.acked == p._push_seq for w in p._workers)
            counters = p.counters()
            assert counters["received"] == 3, counters
            assert counters["dropped_by_reason"] == {"malformed_truncated": 3}, counters
        finally:
            p.close()

    asyncio.run(scenario())


def _wakeups(pid: int) -> int:
    """How many times ``pid`` has gone to sleep and woken (voluntary context switches)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_idle_workers_sleep_and_a_request_meets_the_latest_template() -> None:
    """An idle worker woke every 0.2 s (its receive timeout) and read each template the main
    process sends every second: 5 wake-ups a second per worker where chronyd has none.  Now it
    sleeps up to 2.5 s, templates wait in its pipe, and a request that wakes it is answered
    with the newest of them, not the one it had."""

    async def scenario() -> None:
        p = pool("127.0.0.1", 0).start()
        try:
            target = ("127.0.0.1", int(p.listen.rsplit(":", 1)[1]))
            await p.refresh(20)  # both workers up and idle
            await asyncio.sleep(0.5)  # past the receive timeout: in their idle wait
            before = [_wakeups(pid) for pid in p.pids]
            for stratum in range(2, 9):  # as the daemon does once a second, faster
                p.set_template(ResponseTemplate(stratum=stratum))
                await asyncio.sleep(0.5)
            woke = [_wakeups(pid) - b for pid, b in zip(p.pids, before, strict=True)]
            assert max(woke) <= 4, woke  # 3.5 s: one or two heartbeats (before: 17 or more)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                client.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=11)), target)
                reply = decode_ntp(await asyncio.to_thread(client.recv, 512))
            assert reply.stratum == 8
        finally:
            p.close()

    asyncio.run(scenario())


def test_a_dead_worker_is_seen_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reaper no longer looks twice a second: a worker's exit wakes it (its pidfd)."""
    monkeypatch.setattr(workers_mod, "_WATCH_S", 60.0)

    async def scenario() -> None:
        p = pool("127.0.0.1", 0).start()
        try:
            await asyncio.sleep(0)  # the reaper waits
            old = p.pids
            os.kill(old[0], signal.SIGKILL)
            async with asyncio.timeout(10):  # not the 60 s of the reaper's own pace
                while len(set(p.pids) - set(old)) < 1:
                    await asyncio.sleep(0.02)
            assert p.restarts == 1
        finally:
            p.close()

    asyncio.run(scenario())
