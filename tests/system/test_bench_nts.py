"""bench.nts runs end to end (tiny load): both servers answer authenticated NTS, a ratio prints."""

from __future__ import annotations

import json

import pytest

from bench import nts as bench_nts


@pytest.mark.parametrize("generator", ["c", "python"])
def test_bench_nts_smoke(capsys: pytest.CaptureFixture[str], generator: str) -> None:
    argv = ["--seconds", "0.3", "--window", "2", "--clients", "2", "--generator", generator]
    bench_nts.main([*argv, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["generator"] == generator  # scripts/test installs gcc
    for run in result["runs"]:
        assert run["answers_per_s"] > 0 and run["bad"] == 0
        assert run["verified"] >= 2  # the first answer of each process is authenticated
    assert result["ratio_per_cpu_second"] is not None and result["ratio_per_cpu_second"] > 0


def test_bench_nts_micro_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench_nts.main(["--micro", "--count", "100", "--repeat", "1"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert {r[0] for r in rows} == {"respond", "respond_raw", "responder"} and len(rows) == 18
    assert all(float(r[4]) > 0 for r in rows)
