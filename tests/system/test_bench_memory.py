"""bench.memory runs end to end (short phases): every phase measured for both servers."""

from __future__ import annotations

import json

import pytest

from bench import memory as bench_memory


def test_bench_memory_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--settle", "0.2", "--load", "0.3", "--clients", "1", "--addresses", "300", "--json"]
    assert bench_memory.main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    for server in ("tsyncd", "chronyd"):
        assert set(result[server]) == {"idle", "loaded", "clients"}
        assert f"{server}: 300 of 300 addresses answered" in captured.err
        for phase in result[server].values():
            assert phase["sum"]["pss_mb"] > 0
    assert len(result["tsyncd"]["idle"]["processes"]) >= 2  # main process and its workers
    assert len(result["chronyd"]["clients"]["processes"]) == 1
