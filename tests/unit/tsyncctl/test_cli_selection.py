"""tsyncctl selectdata, reselect and accheck: what they print and return, against a real
ControlServer (the daemon side: tests/interop/test_select_options_chronyd.py and
test_server_policy.py)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from loop_thread import serving

from tsyncctl.cli import cli
from tsyncd.control.server import ControlServer

SOURCES: list[dict[str, Any]] = [
    {
        "name": "ntp1:123",
        "select_code": "x",
        "select_interval": [0.0105, 0.0125],
        "select_age": 3.2,
        "options": ["prefer"],
        "leap": "insert",
        "nts": {"cookies": 8},
        "state_reason": "outside the majority interval",
    },
    {"name": "ntp2:123", "select_code": "M", "options": [], "leap": None},
]
RESELECT: dict[str, Any] = {}
ACCHECK: list[dict[str, Any]] = []
ACCHECKED: list[dict[str, Any]] = []  # the params of each accheck call


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))  # AF_UNIX paths max 107 bytes
    server = ControlServer(
        d / "ctl.sock",
        read_methods={
            "sources": lambda _p: SOURCES,
            "accheck": lambda p: ACCHECKED.append(p) or ACCHECK,
        },
        admin_methods={"reselect": lambda _p: RESELECT},
    )
    with serving(server):
        yield d / "ctl.sock"
    shutil.rmtree(d, ignore_errors=True)


def run(sock: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["-s", str(sock), *args])


def test_selectdata_table(sock: Path) -> None:
    result = run(sock, "selectdata")
    assert result.exit_code == 0, result.output
    header, _rule, first, second, *legend = result.stdout.splitlines()
    assert header.split() == ["S", "Name", "Auth", "Opts", "Last", "Low", "High", "Leap", "Note"]
    assert first.split() == [
        "x", "ntp1:123", "Y", "-P--", "3s", "+10.5ms", "+12.5ms", "+",
        "outside", "the", "majority", "interval",
    ]  # fmt: skip
    assert second.split() == ["M", "ntp2:123", "N", "----", "-", "-", "-", "-"]
    assert "x falseticker" in "\n".join(legend)


def test_selectdata_json_keeps_the_fields_scripts_read(sock: Path) -> None:
    result = run(sock, "selectdata", "--json")
    assert result.exit_code == 0, result.output
    assert '"select_interval": [\n      0.0105,\n      0.0125\n    ]' in result.stdout
    assert '"auth": "NTS"' in result.stdout and '"auth": null' in result.stdout


@pytest.mark.parametrize(
    ("answer", "printed"),
    [
        ({"selected": "b:123", "previous": "a:123"}, "b:123 is selected (was a:123)\n"),
        ({"selected": "a:123", "previous": "a:123"}, "a:123 is still selected\n"),
        ({"selected": None, "previous": None}, "no source is selected\n"),
    ],
)
def test_reselect_says_what_it_did(sock: Path, answer: dict[str, Any], printed: str) -> None:
    RESELECT.clear()
    RESELECT.update(answer)
    result = run(sock, "reselect")
    assert (result.exit_code, result.stdout) == (0, printed)


def test_accheck_without_a_server_refuses(sock: Path) -> None:
    result = run(sock, "accheck", "192.0.2.1")
    assert result.exit_code == 1
    assert result.stdout == "no NTP server is configured ([[server]]): nobody is answered\n"


V4_ONLY = {"listen": "127.0.0.1:123", "allowed": False, "reason": "unreachable"}


@pytest.mark.parametrize(
    ("rows", "code", "printed"),
    [
        (
            [V4_ONLY, {"listen": "[::]:123", "allowed": True, "reason": None}],
            0,
            "127.0.0.1:123: ::1 cannot reach it (it takes another address family)\n"
            "[::]:123: ::1 is allowed\n",
        ),
        (
            [V4_ONLY, {"listen": "[::]:123", "allowed": False, "reason": "denied"}],
            1,
            "127.0.0.1:123: ::1 cannot reach it (it takes another address family)\n"
            "[::]:123: ::1 is denied (on the deny list)\n",
        ),
        ([V4_ONLY], 1, "127.0.0.1:123: ::1 cannot reach it (it takes another address family)\n"),
    ],
)
def test_accheck_judges_only_the_sockets_the_address_reaches(
    sock: Path, rows: list[dict[str, Any]], code: int, printed: str
) -> None:
    ACCHECK[:] = rows
    try:
        result = run(sock, "accheck", "::1")
    finally:
        ACCHECK.clear()
    assert (result.exit_code, result.stdout) == (code, printed)


def test_accheck_resolves_a_host_name_as_chronyc_does(
    sock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hunt-new #5: chronyc accheck takes a name (its first address); tsyncd gets the address.
    # localhost from the hosts file: no DNS traffic leaves the test.
    ACCHECK[:] = [{"listen": "[::]:123", "allowed": True, "reason": None}]
    ACCHECKED.clear()
    try:
        result = run(sock, "accheck", "localhost")
    finally:
        ACCHECK.clear()
    assert result.exit_code == 0, result.output
    (params,) = ACCHECKED
    assert params["address"] in ("127.0.0.1", "::1")
    assert result.stdout == f"[::]:123: localhost ({params['address']}) is allowed\n"
    ACCHECKED.clear()

    def no_name(*_args: object, **_kwargs: object) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "No")

    monkeypatch.setattr(socket, "getaddrinfo", no_name)
    result = run(sock, "accheck", "nowhere.example")
    assert (result.exit_code, result.stderr) == (
        1,
        "tsyncctl: accheck: cannot resolve 'nowhere.example': No\n",
    )
    assert ACCHECKED == []
