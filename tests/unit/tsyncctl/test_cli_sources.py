"""tsyncctl add / delete: the parameters they send, and what they print, against a real
ControlServer whose handlers record the call (the daemon's side: tests/system/)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from loop_thread import serving

from tsyncctl.cli import cli
from tsyncd.control import server as control_server
from tsyncd.control.rpc import InvalidParams
from tsyncd.control.server import ControlServer

calls: list[tuple[str, dict[str, Any]]] = []


def add_source(params: dict[str, Any]) -> dict[str, Any]:
    calls.append(("add_source", params))
    if params["address"] == "bad":
        raise InvalidParams("add_source: source.min-poll = 99: expected integer -7..24")
    return {"name": params["address"]}


def remove_source(params: dict[str, Any]) -> dict[str, Any]:
    calls.append(("remove_source", params))
    return {"name": params["name"], "associations": ["192.0.2.1:123", "192.0.2.2:123"]}


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))  # AF_UNIX paths max 107 bytes
    calls.clear()
    server = ControlServer(
        d / "ctl.sock",
        read_methods={},
        admin_methods={"add_source": add_source, "remove_source": remove_source},
    )
    with serving(server):
        yield d / "ctl.sock"
    shutil.rmtree(d, ignore_errors=True)


def test_add_sends_only_the_keys_given(sock: Path) -> None:
    result = CliRunner().invoke(cli, ["-s", str(sock), "add", "ntp.example"])
    assert result.exit_code == 0 and result.stdout == "added source ntp.example\n"
    assert calls == [("add_source", {"address": "ntp.example", "mode": "server"})]


def test_add_sends_every_option_under_its_config_key(sock: Path) -> None:
    args = [
        *("add", "pool.example", "--mode", "pool", "--iburst", "--xleave"),
        *("--min-poll", "-2", "--max-poll", "3", "--count", "2", "--dscp", "46", "--json"),
    ]
    result = CliRunner().invoke(cli, ["-s", str(sock), *args])
    assert result.exit_code == 0 and result.stdout == '{\n  "name": "pool.example"\n}\n'
    assert calls[0][1] == {
        "address": "pool.example",
        "mode": "pool",
        "iburst": True,
        "xleave": True,
        "min-poll": -2,
        "max-poll": 3,
        "count": 2,
        "dscp": 46,
    }


def test_add_takes_chronycs_mode_word_before_the_address(sock: Path) -> None:
    """'add server HOST', 'add pool HOST' (chronyc's): 'add HOST --mode ...'."""
    runner = CliRunner()
    for args in (["server", "ntp.example"], ["pool", "pool.example", "--count", "2"]):
        result = runner.invoke(cli, ["-s", str(sock), "add", *args])
        assert result.exit_code == 0, result.output
    same = runner.invoke(cli, ["-s", str(sock), "add", "pool", "p.example", "--mode", "pool"])
    assert same.exit_code == 0, same.output
    assert calls == [
        ("add_source", {"address": "ntp.example", "mode": "server"}),
        ("add_source", {"address": "pool.example", "mode": "pool", "count": 2}),
        ("add_source", {"address": "p.example", "mode": "pool"}),
    ]
    both = runner.invoke(cli, ["-s", str(sock), "add", "pool", "p.example", "--mode", "peer"])
    assert both.exit_code == 2 and "'add pool' and '--mode peer' disagree" in both.stderr
    chrony = runner.invoke(cli, ["-s", str(sock), "add", "server", "ntp.example", "iburst"])
    assert chrony.exit_code == 2
    assert "chronyc's options are given as options here: --iburst" in chrony.stderr
    assert len(calls) == 3


def test_a_relative_ca_file_is_sent_absolute(sock: Path) -> None:
    args = ["add", "nts.example", "--mode", "nts", "--certificate-authority", "ca.pem"]
    result = CliRunner().invoke(cli, ["-s", str(sock), *args])
    assert result.exit_code == 0
    assert calls[0][1]["certificate-authority"] == os.path.join(os.getcwd(), "ca.pem")


def test_a_ca_file_only_tsyncd_may_read_is_sent(
    sock: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tsyncd reads the file, not tsyncctl (an admin-group member may not read it)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # we run as root
    args = ["add", "nts.example", "--mode", "nts", "--certificate-authority", str(ca)]
    result = CliRunner().invoke(cli, ["-s", str(sock), *args])
    assert result.exit_code == 0, result.output
    assert calls[0][1]["certificate-authority"] == str(ca)


def test_the_daemons_refusal_is_one_line_exit_1(sock: Path) -> None:
    result = CliRunner().invoke(cli, ["-s", str(sock), "add", "bad", "--min-poll", "99"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "tsyncctl: add_source: source.min-poll = 99: expected integer -7..24\n"
    )


def test_delete(sock: Path) -> None:
    result = CliRunner().invoke(cli, ["-s", str(sock), "delete", "pool.example"])
    assert result.exit_code == 0
    assert result.stdout == "removed source pool.example (192.0.2.1:123, 192.0.2.2:123)\n"
    assert calls == [("remove_source", {"name": "pool.example"})]


def test_add_a_multicast_broadcast_source(sock: Path) -> None:
    args = [
        *("add", "[ff05::101]:123", "--mode", "broadcast", "--broadcast-server", "2001:db8::1"),
        *("--broadcast-interface", "eth0", "--broadcast-calibrate", "--broadcast-delay", "0.01"),
    ]
    result = CliRunner().invoke(cli, ["-s", str(sock), *args])
    assert result.exit_code == 0, result.output
    assert calls[0][1] == {
        "address": "[ff05::101]:123",
        "mode": "broadcast",
        "broadcast-server": "2001:db8::1",
        "broadcast-interface": "eth0",
        "broadcast-calibrate": True,
        "broadcast-delay": 0.01,
    }


@pytest.mark.parametrize(("admin_group", "who"), [(None, "root"), ("root", "root or group 'root'")])
def test_a_refusal_names_the_command_and_who_may(
    admin_group: str | None, who: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'tsyncctl delete', as typed, not tsyncd's method 'remove_source'; and the admin group
    when the config allows one."""
    monkeypatch.setattr(control_server, "may_call_admin", lambda *args, **kwargs: False)
    calls.clear()
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))
    server = ControlServer(
        d / "ctl.sock",
        read_methods={},
        admin_methods={"add_source": add_source, "remove_source": remove_source},
        admin_group=admin_group,
    )
    with serving(server):
        result = CliRunner().invoke(cli, ["-s", str(d / "ctl.sock"), "delete", "x"])
        added = CliRunner().invoke(cli, ["-s", str(d / "ctl.sock"), "add", "server", "x"])
    shutil.rmtree(d, ignore_errors=True)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"tsyncctl: permission denied: 'tsyncctl delete' needs {who}\n"
    assert added.stderr == f"tsyncctl: permission denied: 'tsyncctl add' needs {who}\n"
    assert calls == []
