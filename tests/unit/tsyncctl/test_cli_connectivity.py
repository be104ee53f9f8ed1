"""tsyncctl offline/online/onoffline/activity/refresh: what they send and print, against a real
ControlServer (the daemon side: tests/system/test_connectivity.py,
tests/interop/test_names_dnsmasq.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from loop_thread import serving

from tsyncctl.cli import cli
from tsyncd.control.server import ControlServer

CALLS: list[tuple[str, dict[str, Any]]] = []


def connectivity(method: str) -> Any:
    def handler(params: dict[str, Any]) -> dict[str, Any]:
        CALLS.append((method, params))
        selected = ["a:123", "b:123"]
        if method == "onoffline":
            return {"online": ["a:123"], "offline": ["b:123"]}
        if method == "refresh":
            return {"sources": selected}
        if method == "burst" and params.get("sources") == ["a:123", "bc"]:
            return {"sources": 1, "skipped": {"bc": "a broadcast source only listens"}}
        if method == "burst":
            return {"sources": len(params.get("sources", selected))}
        if method == "reload":
            return {"config": "/etc/tsyncd.toml"}
        return {"changed": selected[1:], "selected": selected}

    return handler


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))  # AF_UNIX paths max 107 bytes
    counts = {"online": 3, "offline": 1, "burst_online": 0, "burst_offline": 0}
    server = ControlServer(
        d / "ctl.sock",
        read_methods={"activity": lambda _p: {**counts, "unknown_address": 2}},
        admin_methods={
            m: connectivity(m)
            for m in ("offline", "online", "onoffline", "refresh", "burst", "reload")
        },
    )
    CALLS.clear()
    with serving(server):
        yield d / "ctl.sock"
    shutil.rmtree(d, ignore_errors=True)


def test_activity_prints_chronyc_lines(sock: Path) -> None:
    result = CliRunner().invoke(cli, ["-s", str(sock), "activity"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "3 sources online",
        "1 sources offline",
        "0 sources doing burst (return to online)",
        "0 sources doing burst (return to offline)",
        "2 sources with unknown address",
    ]


def test_offline_online_send_their_selectors(sock: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["-s", str(sock), "offline", "a:123", "192.0.2.0/24"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 source(s) set offline (1 already were)\n"
    result = runner.invoke(cli, ["-s", str(sock), "online", "--json"])
    assert json.loads(result.stdout) == {"changed": ["b:123"], "selected": ["a:123", "b:123"]}
    result = runner.invoke(cli, ["-s", str(sock), "onoffline"])
    assert result.stdout == "online: a:123\noffline: b:123\n"
    assert CALLS == [
        ("offline", {"sources": ["a:123", "192.0.2.0/24"]}),
        ("online", {"sources": []}),
        ("onoffline", {"sources": []}),
    ]


def test_refresh_names_the_sources_it_resolves_again(sock: Path) -> None:
    result = CliRunner().invoke(cli, ["-s", str(sock), "refresh"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "resolving again: a:123, b:123\n"
    assert CALLS == [("refresh", {})]


def test_refresh_sends_the_names_given(sock: Path) -> None:
    """``refresh NAME...``: only the sources those pick (an NTS source by its NTS-KE name)."""
    result = CliRunner().invoke(cli, ["-s", str(sock), "refresh", "localhost:26468", "pool.test"])
    assert result.exit_code == 0, result.output
    assert CALLS == [("refresh", {"sources": ["localhost:26468", "pool.test"]})]


def test_burst_and_reload_take_chronycs_words(sock: Path) -> None:
    """'burst [SOURCE]...' (none: every source, sent as before) and 'reload sources'."""
    runner = CliRunner()
    result = runner.invoke(cli, ["-s", str(sock), "burst", "192.0.2.1"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "burst started for 1 source(s)\n"
    assert runner.invoke(cli, ["-s", str(sock), "burst"]).stdout == (
        "burst started for 2 source(s)\n"
    )
    # A source that sends nothing (broadcast) is named, with why.
    assert runner.invoke(cli, ["-s", str(sock), "burst", "a:123", "bc"]).stdout == (
        "burst started for 1 source(s)\nskipped bc: a broadcast source only listens\n"
    )
    result = runner.invoke(cli, ["-s", str(sock), "reload", "sources"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "reloaded /etc/tsyncd.toml\n"
    assert runner.invoke(cli, ["-s", str(sock), "reload", "servers"]).exit_code == 2
    assert CALLS == [
        ("burst", {"sources": ["192.0.2.1"]}),
        ("burst", {}),
        ("burst", {"sources": ["a:123", "bc"]}),
        ("reload", {}),
    ]
