"""The per-query log budget of the TSQ servers (QA s22: 2,000 lines in 1.9 s from one client)."""

from __future__ import annotations

from tsyncd.servers.querylog import Held, QueryLogBudget


def test_the_first_queries_of_a_window_are_logged_the_rest_counted_once() -> None:
    budget = QueryLogBudget(burst=3, window_s=10.0)
    taken = [budget.take(100.0 + i * 0.1, f"192.0.2.{i % 2}") for i in range(8)]
    assert taken == [True, True, True, False, False, False, False, False]
    assert budget.window_end == 110.0
    assert budget.held(109.9) is None  # the window is still open
    assert budget.held(110.0) == Held(queries=5, clients=2, window_s=10.0)
    assert budget.held(111.0) is None  # said once
    assert budget.take(111.0, "192.0.2.9")  # a new window: logged again
    assert budget.window_end == 121.0


def test_a_quiet_server_logs_every_query() -> None:
    budget = QueryLogBudget(burst=2, window_s=10.0)
    assert all(budget.take(t, "192.0.2.1") for t in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0))
    assert budget.held(100.0) is None
