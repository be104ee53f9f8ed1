"""Which servers a one-shot TSQ tool uses: each server estimated alone, then only those that
agree (RFC 5905 §11.2.1 intersection) have their samples combined."""

from __future__ import annotations

import pytest

from tsyncd.sync.tsq import SERVER_ERROR_NS, TsqSample, combine, select_servers

MS = 1_000_000
US = 1_000


def sample(offset: int, delay: int = 200 * US) -> TsqSample:
    return TsqSample(offset_ns=offset, delay_ns=delay, t1_ns=0, t4_ns=0, t2=0, t3=0)


def server(offset: int, n: int = 5, delay: int = 200 * US) -> list[TsqSample]:
    """``n`` samples around ``offset``, ±10 µs, alike delays (loopback or one LAN)."""
    return [sample(offset + (i - n // 2) * 10 * US, delay + i * US) for i in range(n)]


def test_one_falseticker_of_three_is_left_out() -> None:
    """The QA repro: two good servers and one 300 ms ahead.  Pooled, the mean was +60..+112
    ms; the two that agree give about 0."""
    a, b, bad = server(0), server(20 * US), server(300 * MS)
    agreed = select_servers([("a", a), ("b", b), ("bad", bad)])
    assert [(e.name, e.used, e.falseticker) for e in agreed.servers] == [
        ("a", True, False),
        ("b", True, False),
        ("bad", False, True),
    ]
    assert agreed.combined == combine(a + b)
    assert agreed.combined is not None and abs(agreed.combined.offset_ns) < 50 * US
    assert agreed.low_ns <= 0 and 20 * US <= agreed.high_ns < MS + 300 * US
    assert [e.name for e in agreed.agreeing] == ["a", "b"]


def test_two_that_disagree_leave_no_majority() -> None:
    agreed = select_servers([("a", server(0)), ("bad", server(300 * MS))])
    assert agreed.combined is None
    assert [(e.used, e.falseticker) for e in agreed.servers] == [(False, False)] * 2
    # each still estimated on its own (weighted to the shorter round trips: within 1 µs)
    assert [round(e.combined.offset_ns, -3) for e in agreed.servers] == [0, 300 * MS]
    assert agreed.agreeing == ()


def test_a_lone_server_is_used() -> None:
    only = server(300 * MS)
    agreed = select_servers([("only", only)])
    assert agreed.servers[0].used and agreed.combined == combine(only)


def test_all_that_agree_are_used() -> None:
    servers = [server(0), server(30 * US), server(-40 * US), server(10 * US)]
    agreed = select_servers([(str(i), s) for i, s in enumerate(servers)])
    assert all(e.used for e in agreed.servers)
    assert agreed.combined == combine([x for s in servers for x in s])


def test_servers_without_samples_are_skipped() -> None:
    """A server that failed neither votes nor counts toward the majority."""
    agreed = select_servers([("down", []), ("a", server(0)), ("b", server(10 * US))])
    assert [e.name for e in agreed.servers] == ["a", "b"]
    assert agreed.combined is not None and len(agreed.agreeing) == 2
    with pytest.raises(ValueError):
        select_servers([("down", [])])


def test_the_interval_is_half_the_longest_kept_round_trip_plus_the_allowance() -> None:
    """Two servers 1.5 ms apart on a 0.2 ms path disagree (each interval ±1.1 ms leaves the
    other's offset out); 0.9 ms apart they agree; with a 40 ms path, 15 ms apart agree."""
    s = server(0)
    kept = combine(s)
    assert kept.error_ns == max(x.delay_ns for x in s) // 2  # all within twice the shortest
    agreed = select_servers([("a", s), ("b", server(1_500 * US))])
    assert agreed.servers[0].distance_ns == kept.error_ns + SERVER_ERROR_NS
    assert agreed.combined is None
    assert select_servers([("a", s), ("b", server(900 * US))]).combined is not None
    far = select_servers([("a", server(0, delay=40 * MS)), ("b", server(15 * MS, delay=40 * MS))])
    assert far.combined is not None


def test_the_same_server_twice_is_two_servers() -> None:
    agreed = select_servers([("x", server(0)), ("x", server(300 * MS)), ("x", server(5 * US))])
    assert [(e.used, e.falseticker) for e in agreed.servers] == [
        (True, False),
        (False, True),
        (True, False),
    ]
