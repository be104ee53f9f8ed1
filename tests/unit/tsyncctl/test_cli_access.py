"""tsyncctl allow/deny [all] [SUBNET]: chronyc's words to the daemon's params, and what is
printed, against a real ControlServer (the daemon side: tests/interop/
test_server_access_chronyd.py)."""

from __future__ import annotations

import json
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

CALLS: list[tuple[str, dict[str, Any]]] = []
DEFAULT_ROW = {"listen": "[::]:123", "allow": ["0.0.0.0/0", "::/0"], "deny": []}
ANSWER: dict[str, Any] = {"servers": [DEFAULT_ROW]}


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
    assert result.stdout == "[::]:123: allow 0.0.0.0/0, ::/0; deny -\n"  # no "other" left
    assert json.loads(run(sock, *args, "--json").stdout) == ANSWER


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """getaddrinfo as a resolver with "ntp.example" (two addresses) and nothing else: no DNS
    traffic leaves the test."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[Any]:
        asked.append(host)
        if host != "ntp.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::7", 0, 0, 0)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.7", 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    ("args", "params"),
    [
        # hunt-new #5: chronyc's words; a name is resolved here, to its first address, as
        # chronyc does, and tsyncd gets the address (it never waits on DNS).
        (("allow", "ntp.example"), {"subnet": "2001:db8::7", "all": False}),
        (("deny", "all", "ntp.example"), {"subnet": "2001:db8::7", "all": True}),
        (("allow", "10.2"), {"subnet": "10.2", "all": False}),  # tsyncd parses it
        (("allow", "0/0"), {"subnet": "0/0", "all": False}),
        (("deny", "10.256"), {"subnet": "10.256", "all": False}),  # tsyncd refuses it
    ],
)
def test_a_host_name_is_sent_as_its_address(
    sock: Path, resolver: list[str], args: tuple[str, ...], params: Any
) -> None:
    result = run(sock, *args)
    assert result.exit_code == 0, result.output
    assert CALLS[:] == [(args[0], params)]
    assert resolver == (["ntp.example"] if "ntp.example" in args else [])


def test_a_name_that_does_not_resolve_changes_nothing(sock: Path, resolver: list[str]) -> None:
    result = run(sock, "allow", "nowhere.example")
    assert result.exit_code == 1
    assert result.stderr == (
        "tsyncctl: allow: cannot resolve 'nowhere.example': Name or service not known\n"
    )
    assert CALLS == []


@pytest.mark.parametrize(
    ("allow", "deny", "printed"),
    [
        # hunt-new #6: 0.0.0.0/0 and ::/0 hold every client, so none is left "other".
        (["0.0.0.0/0", "::/0"], [], "allow 0.0.0.0/0, ::/0; deny -"),
        (["10.0.0.0/8"], ["0.0.0.0/0", "::/0"], "allow 10.0.0.0/8; deny 0.0.0.0/0, ::/0"),
        (["::/0"], ["10.0.0.0/8"], "allow ::/0; deny 10.0.0.0/8; refused: any other IPv4"),
        (["0.0.0.0/0"], [], "allow 0.0.0.0/0; deny -; refused: any other IPv6"),
        (["10.0.0.0/8"], [], "allow 10.0.0.0/8; deny -; refused: any other"),
        ([], [], "allow -; deny -; refused: any other"),
    ],
)
def test_the_answer_says_who_is_refused(
    sock: Path, allow: list[str], deny: list[str], printed: str
) -> None:
    row = {"listen": "[::]:123", "allow": allow, "deny": deny}
    ANSWER["servers"] = [row]
    try:
        result = run(sock, "allow")
    finally:
        ANSWER["servers"] = [DEFAULT_ROW]
    assert (result.exit_code, result.stdout) == (0, f"[::]:123: {printed}\n")


def test_more_than_one_subnet_is_refused(sock: Path) -> None:
    result = run(sock, "allow", "10.0.0.0/8", "10.1.0.0/16")
    assert result.exit_code == 2
    assert "expected [all] [SUBNET], got '10.0.0.0/8 10.1.0.0/16'" in result.output
    assert CALLS == []


def test_the_nts_ke_listeners_rules_follow_the_servers(sock: Path) -> None:
    # One rule set for NTP and NTS-KE, as in chrony: the answer shows both kinds of listener.
    # A listener without rules of its own has a row per [[server]] it judges clients by.
    ke = {"listen": "127.0.0.1:4460", "allow": ["127.0.0.0/8"], "deny": ["127.0.0.1/32"]}
    follows = {**DEFAULT_ROW, "listen": "[::]:4460", "rules_of": "[::]:123"}
    ANSWER["nts_ke_servers"] = [{**ke, "rules_of": None}, follows]
    try:
        result = run(sock, "deny", "127.0.0.1")
    finally:
        del ANSWER["nts_ke_servers"]
    assert (result.exit_code, result.stdout) == (
        0,
        "[::]:123: allow 0.0.0.0/0, ::/0; deny -\n"
        "NTS-KE 127.0.0.1:4460: allow 127.0.0.0/8; deny 127.0.0.1/32; refused: any other\n"
        "NTS-KE [::]:4460 (for clients sent to [::]:123): allow 0.0.0.0/0, ::/0; deny -\n",
    )
    help_text = run(sock, "allow", "--help").stdout
    assert "[[nts-ke-server]]" in " ".join(help_text.split())
