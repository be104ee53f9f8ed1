"""bench.server runs end to end (tiny load): both servers answer and a ratio is printed."""

from __future__ import annotations

import json

import pytest

from bench import server as bench_server


def test_bench_server_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        bench_server.main(
            ["--seconds", "0.3", "--window", "2", "--clients", "1", "--rounds", "1", "--json"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    runs = {r["server"]: r for r in result["runs"]}
    assert runs["tsyncd"]["answers_per_s"] > 0 and runs["chronyd"]["answers_per_s"] > 0
    assert result["ratio_peak"] is not None and result["ratio_peak"] > 0
    assert result["memory"]["tsyncd"]["processes"] >= 2  # main process and its workers
    assert result["memory"]["chronyd"]["processes"] == 1
