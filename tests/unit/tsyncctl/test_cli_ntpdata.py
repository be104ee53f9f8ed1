"""tsyncctl ntpdata: every field of the ``sources`` result, one block per source, against a
real ControlServer answering with snapshots as the daemon makes them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from loop_thread import serving
from snapshot_examples import NTS_STATE, SELECTED

from tsyncctl.cli import cli
from tsyncd.control.server import ControlServer
from tsyncd.snapshots import SourceSnapshot

PLAIN = dataclasses.replace(
    SELECTED,
    interleaved=True,
    interleaved_replies=12,
    options=("prefer",),
    local_address="192.0.2.100",
    version=4,
    precision=-23,
    reference_time=1_800_000_000.25,
    response_time=0.0000123,
    tx_timestamping="kernel",
    rx_timestamping="daemon",
    packets_received_total=21,
)
NTS = dataclasses.replace(
    PLAIN,
    name="nts.example:4460",
    address="192.0.2.2:123",
    mode="nts",
    state="candidate",
    interleaved=False,
    interleaved_replies=0,
    nts=NTS_STATE,
)
BROADCAST = dataclasses.replace(
    PLAIN,
    name="[ff05::101]:123",
    address="[fd00::1]:123",
    mode="broadcast",
    broadcast_delay=5e-6,
    online=False,
    options=(),
    response_time=None,
    tx_timestamping=None,
)


def sources(_params: dict[str, Any]) -> list[SourceSnapshot]:
    return [PLAIN, NTS, BROADCAST]


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))  # AF_UNIX paths max 107 bytes
    server = ControlServer(d / "ctl.sock", read_methods={"sources": sources}, admin_methods={})
    with serving(server):
        yield d / "ctl.sock"
    shutil.rmtree(d, ignore_errors=True)


def _block(text: str, name: str) -> dict[str, str]:
    for block in text.split("\n\n"):
        pairs = (line.split(" : ", 1) for line in block.splitlines())
        fields = {key.strip(): value for key, value in pairs}
        if fields["Name"] == name:
            return fields
    raise AssertionError(f"no block for {name}")


def test_ntpdata_shows_every_source_with_its_details(sock: Path) -> None:
    result = CliRunner().invoke(cli, ["-s", str(sock), "ntpdata"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Name ") == 3
    plain = _block(result.stdout, "a.example:123")
    assert plain["Address"] == "192.0.2.1:123" and plain["Stratum"] == "1"
    assert plain["Offset"] == "+1.234500 ms" and plain["Delay"] == "3.100000 ms"
    assert plain["Poll interval"] == "6 (64 s)" and plain["Reach"] == "377"
    assert plain["Interleaved"] == "yes" and plain["Total dropped RX"] == "1"
    assert plain["duplicate"] == "1"  # by reason, indented under the total
    assert plain["Interleaved RX"] == "12"
    assert "NTS AEAD" not in plain and "Broadcast delay" not in plain
    assert "Interleaved RX" not in _block(result.stdout, "nts.example:4460")  # none counted
    nts = _block(result.stdout, "nts.example:4460")
    assert nts["NTS AEAD"] == "AES-SIV-CMAC-256" and nts["NTS cookies"] == "7"
    assert nts["NTS TLS group"] == "X25519MLKEM768" and nts["NTS last KE"] == "125s"
    broadcast = _block(result.stdout, "[ff05::101]:123")
    assert broadcast["Broadcast delay"] == "5.000 µs"  # to the ns, as every time here
    assert broadcast["Online"] == "no" and plain["Online"] == "yes"
    assert plain["Options"] == "prefer" and broadcast["Options"] == "-"


def test_ntpdata_shows_chronyc_ntpdatas_fields(sock: Path) -> None:
    """Local address, Version, Precision, Reference time, Response time, TX/RX timestamping
    and Total RX, as chronyc ntpdata has them; "-" where a kind has none (a broadcast answers
    no request: no response time, no TX stamp of ours)."""
    result = CliRunner().invoke(cli, ["-s", str(sock), "ntpdata"])
    assert result.exit_code == 0, result.output
    plain = _block(result.stdout, "a.example:123")
    assert plain["Local address"] == "192.0.2.100" and plain["Version"] == "4"
    assert plain["Precision"] == "-23 (0.000000119 seconds)"
    assert plain["Reference time"] == "2027-01-15 08:00:00 UTC"
    assert plain["Response time"] == "12.300 µs"
    assert plain["TX timestamping"] == "kernel" and plain["RX timestamping"] == "daemon"
    assert plain["Total TX"] == "20" and plain["Total RX"] == "21"
    assert plain["Total valid RX"] == "19"
    broadcast = _block(result.stdout, "[ff05::101]:123")
    assert broadcast["Response time"] == "-" and broadcast["TX timestamping"] == "-"
    assert broadcast["RX timestamping"] == "daemon"
    as_json = CliRunner().invoke(cli, ["-s", str(sock), "ntpdata", "a.example:123", "--json"])
    row = json.loads(as_json.stdout)[0]
    assert {k: row[k] for k in ("local_address", "version", "precision")} == {
        "local_address": "192.0.2.100",
        "version": 4,
        "precision": -23,
    }
    assert row["reference_time"] == 1_800_000_000.25 and row["response_time"] == 0.0000123
    assert (row["tx_timestamping"], row["rx_timestamping"]) == ("kernel", "daemon")
    assert row["packets_received_total"] == 21 and row["packets_received"] == 19


def test_ntpdata_by_name_or_address_and_unknown_names(sock: Path) -> None:
    runner = CliRunner()
    one = runner.invoke(cli, ["-s", str(sock), "ntpdata", "192.0.2.2:123", "--json"])
    assert one.exit_code == 0
    assert [r["name"] for r in json.loads(one.stdout)] == ["nts.example:4460"]
    missing = runner.invoke(cli, ["-s", str(sock), "ntpdata", "nope:123"])
    assert missing.exit_code == 1
    assert missing.stderr == "tsyncctl: no source matches nope:123 (see tsyncctl sources)\n"
    # One unknown among known names is an error too, naming only it (not a shorter answer).
    typo = runner.invoke(cli, ["-s", str(sock), "ntpdata", "192.0.2.2:123", "nope:123"])
    assert typo.exit_code == 1 and typo.stdout == ""
    assert typo.stderr == "tsyncctl: no source matches nope:123 (see tsyncctl sources)\n"


def test_ntpdata_takes_what_offline_takes() -> None:
    """An IP address or network, or the source that made it (a pool's name for its members),
    as offline and online take them, besides names and addresses."""
    member = dataclasses.replace(
        PLAIN, name="198.51.100.7:123", address="198.51.100.7:123", source="pool.example"
    )
    d = Path(tempfile.mkdtemp(prefix="tsc", dir="/tmp"))
    rows = [PLAIN, NTS, BROADCAST, member]
    server = ControlServer(
        d / "c.sock", read_methods={"sources": lambda _p: rows}, admin_methods={}
    )

    def picked(*selectors: str) -> list[str]:
        result = CliRunner().invoke(cli, ["-s", str(d / "c.sock"), "ntpdata", *selectors, "--json"])
        assert result.exit_code == 0, result.output
        return [r["name"] for r in json.loads(result.stdout)]

    with serving(server):
        assert picked("192.0.2.2") == ["nts.example:4460"]
        assert picked("192.0.2.0/24") == ["a.example:123", "nts.example:4460"]
        assert picked("fd00::1") == picked("[fd00::1]") == ["[ff05::101]:123"]
        assert picked("pool.example") == ["198.51.100.7:123"]
        assert picked("[fd00::1]:123", "a.example:123") == ["a.example:123", "[ff05::101]:123"]
        result = CliRunner().invoke(cli, ["-s", str(d / "c.sock"), "ntpdata", "203.0.113.0/24"])
        assert result.exit_code == 1
        assert result.stderr == (
            "tsyncctl: no source matches 203.0.113.0/24 (see tsyncctl sources)\n"
        )
    shutil.rmtree(d, ignore_errors=True)


def test_peers_table_notes_a_broadcast_sources_delay(sock: Path) -> None:
    result = CliRunner().invoke(cli, ["-s", str(sock), "peers"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[2:5]}
    assert rows["[ff05::101]:123"].endswith("offline; interleaved; delay 5.0µs")
    assert "delay" not in rows["a.example:123"]
