"""``tsyncctl waitsync`` and ``tsyncctl authdata`` (chronyc's commands of the same names):
the wait's tests and loop without waiting, then both commands against a real ControlServer."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from loop_thread import serving
from snapshot_examples import NTS_STATE, SELECTED, UNREACHABLE

from tsyncctl.cli import cli
from tsyncctl.waitsync import NoAnswer, SyncWanted, is_synced, try_line, wait_for_sync
from tsyncd.control.server import ControlServer, Handler

GOOD = {
    "synchronized": True,
    "reference_id": "192.0.2.1",
    "residual_offset": -0.004,
    "skew_ppm": 0.25,
}
LOCAL_ONLY = {**GOOD, "synchronized": False, "reference_id": "LOCL"}


@pytest.mark.parametrize(
    ("tracking", "wanted", "expected"),
    [
        (GOOD, SyncWanted(), True),
        (LOCAL_ONLY, SyncWanted(), False),  # a local clock alone is not synchronized
        ({}, SyncWanted(), False),
        (GOOD, SyncWanted(max_correction=0.004), True),  # the bound is inclusive
        (GOOD, SyncWanted(max_correction=0.0039), False),  # |-0.004| is over it
        (GOOD, SyncWanted(max_skew_ppm=0.25), True),
        (GOOD, SyncWanted(max_skew_ppm=0.2), False),
        ({**GOOD, "residual_offset": None}, SyncWanted(max_correction=1.0), False),
        ({**GOOD, "skew_ppm": float("nan")}, SyncWanted(max_skew_ppm=1.0), False),
        ({**GOOD, "skew_ppm": float("nan")}, SyncWanted(), True),  # not asked: not checked
    ],
)
def test_is_synced(tracking: dict[str, Any], wanted: SyncWanted, expected: bool) -> None:
    assert is_synced(tracking, wanted) is expected


def test_try_line_shows_reference_correction_and_skew() -> None:
    assert try_line(3, GOOD) == "try: 3, refid: 192.0.2.1, correction: 0.004000000, skew: 0.250"
    assert try_line(1, LOCAL_ONLY) == "try: 1, refid: -, correction: 0.004000000, skew: 0.250"
    assert try_line(1, {}) == "try: 1, refid: -, correction: -, skew: -"
    # chronyc's hex refid where the daemon gives the raw one (QA s18 hunt-ops F7).
    raw = {**GOOD, "reference_id_raw": 0xC0000201}
    assert try_line(2, raw) == "try: 2, refid: C0000201, correction: 0.004000000, skew: 0.250"


def test_wait_asks_until_synchronized_sleeping_between_tries() -> None:
    answers: list[Mapping[str, Any] | Exception] = [NoAnswer("no such socket"), LOCAL_ONLY, GOOD]
    slept: list[float] = []
    lines: list[str] = []

    def tracking() -> Mapping[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ok = wait_for_sync(
        tracking, SyncWanted(), max_tries=0, interval_s=2.5, sleep=slept.append, echo=lines.append
    )
    assert ok is True and answers == []
    assert slept == [2.5, 2.5]  # no sleep after the try that passed
    assert lines[0] == "try: 1, no answer: no such socket"
    assert [line.split(",")[0] for line in lines] == ["try: 1", "try: 2", "try: 3"]


def test_wait_gives_up_after_max_tries_and_lets_other_errors_through() -> None:
    lines: list[str] = []
    ok = wait_for_sync(
        lambda: LOCAL_ONLY,
        SyncWanted(),
        max_tries=3,
        interval_s=1.0,
        sleep=lambda _s: None,
        echo=lines.append,
    )
    assert ok is False and len(lines) == 3

    def broken() -> Mapping[str, Any]:
        raise ValueError("not a connection problem")

    with pytest.raises(ValueError):
        wait_for_sync(
            broken, SyncWanted(), max_tries=0, interval_s=1.0, sleep=lambda _s: None, echo=print
        )


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tsw", dir="/tmp"))  # AF_UNIX paths max 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def serve(path: Path, methods: Mapping[str, Handler]) -> Any:
    return serving(ControlServer(path, read_methods=methods, admin_methods={}))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_waitsync_command_exits_0_once_synchronized(short_dir: Path) -> None:
    answers = iter([LOCAL_ONLY, GOOD])
    with serve(short_dir / "w.sock", {"tracking": lambda _p: next(answers)}) as server:
        result = run("-s", str(server.socket_path), "waitsync", "5", "0.01", "1", "0.1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "try: 1, refid: -, correction: 0.004000000, skew: 0.250",
        "try: 2, refid: 192.0.2.1, correction: 0.004000000, skew: 0.250",
    ]


def test_waitsync_command_fails_after_max_tries(short_dir: Path) -> None:
    with serve(short_dir / "w.sock", {"tracking": lambda _p: GOOD}) as server:
        # synchronized, but the correction left is over the bound asked for
        result = run("-s", str(server.socket_path), "waitsync", "2", "0.001", "0", "0.1")
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == "tsyncctl: not synchronized after 2 tries\n"


def test_waitsync_prints_text_only_even_with_the_main_commands_json(short_dir: Path) -> None:
    """waitsync has no JSON output (as chronyc's): a failure adds no JSON to its text lines."""
    with serve(short_dir / "w.sock", {"tracking": lambda _p: GOOD}) as server:
        result = run("-s", str(server.socket_path), "--json", "waitsync", "2", "0.001", "0", "0.1")
    assert result.exit_code == 1
    assert [line.startswith("try: ") for line in result.stdout.splitlines()] == [True, True]
    assert result.stderr == "tsyncctl: not synchronized after 2 tries\n"


def test_waitsync_keeps_asking_while_the_daemon_is_not_up(short_dir: Path) -> None:
    result = run("-s", str(short_dir / "absent.sock"), "waitsync", "2", "0", "0", "0.1")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("no such socket" in line for line in lines)


def test_waitsync_stops_on_an_error_the_daemon_sends(short_dir: Path) -> None:
    with serve(short_dir / "w.sock", {}) as server:  # an older daemon: no such method
        result = run("-s", str(server.socket_path), "waitsync", "0", "0", "0", "0.1")
    assert result.exit_code == 1
    assert result.stderr.startswith("tsyncctl: ") and "tracking" in result.stderr
    assert result.stdout == ""


def test_waitsync_rejects_chronyc_arguments_out_of_range() -> None:
    assert run("waitsync", "-1").exit_code == 2
    assert run("waitsync", "1", "0", "0", "0.01").exit_code == 2  # interval below 0.1 s


NTS_SOURCE = replace(SELECTED, name="nts.example:4460", mode="nts", nts=NTS_STATE)
TSQ_SOURCE = replace(UNREACHABLE, name="tsq.example:4123", mode="tsq")


def test_authdata_lists_every_source_with_its_authentication(short_dir: Path) -> None:
    sources = [SELECTED, NTS_SOURCE, TSQ_SOURCE]
    with serve(short_dir / "a.sock", {"sources": lambda _p: sources}) as server:
        human = run("-s", str(server.socket_path), "authdata")
        as_json = run("-s", str(server.socket_path), "authdata", "--json")
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert lines[0].split() == [
        "Source", "Auth", "Cookies", "AEAD", "Last", "KE", "TLS", "group", "KEs", "NAKs"
    ]  # fmt: skip
    assert lines[2].split() == ["a.example:123", "-", "-", "-", "-", "-", "-", "-"]
    assert lines[3].split() == [
        "nts.example:4460", "NTS", "7", "AES-SIV-CMAC-256", "125s", "X25519MLKEM768", "2", "1"
    ]  # fmt: skip
    assert lines[4].split()[:2] == ["tsq.example:4123", "TLS"]
    rows = json.loads(as_json.stdout)
    assert [(r["name"], r["auth"]) for r in rows] == [
        ("a.example:123", None),
        ("nts.example:4460", "NTS"),
        ("tsq.example:4123", "TLS"),
    ]
    assert rows[1]["nts"]["cookies"] == 7 and rows[1]["mode"] == "nts"
