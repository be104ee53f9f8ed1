"""bench.server runs end to end (tiny load): both servers answer and a ratio is printed."""

from __future__ import annotations

import json

import pytest

from bench import server as bench_server


@pytest.mark.parametrize("generator", ["c", "python"])
def test_bench_server_smoke(capsys: pytest.CaptureFixture[str], generator: str) -> None:
    argv = ["--seconds", "0.3", "--window", "2", "--clients", "1", "--rounds", "1", "--json"]
    assert bench_server.main([*argv, "--generator", generator]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["generator"] == generator  # the C one is built with the system's cc
    runs = {r["server"]: r for r in result["runs"]}
    assert runs["tsyncd"]["answers_per_s"] > 0 and runs["chronyd"]["answers_per_s"] > 0
    assert runs["tsyncd"]["bad"] == 0 and runs["chronyd"]["bad"] == 0
    assert runs["tsyncd"]["p50_us"] is not None and runs["chronyd"]["p99_us"] is not None
    assert result["ratio_peak"] is not None and result["ratio_peak"] > 0
    assert result["memory"]["tsyncd"]["processes"] >= 2  # main process and its workers
    assert result["memory"]["chronyd"]["processes"] == 1
