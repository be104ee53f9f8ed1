"""tsyncctl allow/deny [all] [SUBNET]: chronyc's words to the daemon's params, and what is
printed, against a real ControlServer (the daemon side: tests/interop/
test_server_access_chronyd.py)."""

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
ANSWER = {"servers": [{"listen": "[::]:123", "allow": ["0.0.0.0/0", "::/0"], "deny": []}]}


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))  # AF_UNIX paths max 107 bytes
    CALLS.clear()

    def method(name: str) -> Any:
        return lambda params: CALLS.append((name, params)) or ANSWER

    server = ControlServer(
        d / "ctl.sock",
        read_methods={},
        admin_methods={"allow": method("allow"), "deny": method("deny")},
    )
    with serving(server):
        yield d / "ctl.sock"
    shutil.rmtree(d, ignore_errors=True)


def run(sock: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["-s", str(sock), *args])


@pytest.mark.parametrize(
    ("args", "params"),
    [
        (("allow",), {"subnet": None, "all": False}),
        (("allow", "all"), {"subnet": None, "all": True}),
        (("deny", "10.1.0.0/16"), {"subnet": "10.1.0.0/16", "all": False}),
        (("deny", "all", "2001:db8::/32"), {"subnet": "2001:db8::/32", "all": True}),
    ],
)
def test_chronyc_words_become_params(sock: Path, args: tuple[str, ...], params: Any) -> None:
    result = run(sock, *args)
    assert result.exit_code == 0, result.output
    assert CALLS[:] == [(args[0], params)]
    assert result.stdout == "[::]:123: allow 0.0.0.0/0, ::/0; deny -; refused: any other\n"
    assert json.loads(run(sock, *args, "--json").stdout) == ANSWER


def test_more_than_one_subnet_is_refused(sock: Path) -> None:
    result = run(sock, "allow", "10.0.0.0/8", "10.1.0.0/16")
    assert result.exit_code == 2
    assert "expected [all] [SUBNET], got '10.0.0.0/8 10.1.0.0/16'" in result.output
    assert CALLS == []
