"""The NTS server's key file across rotations (``NtsServerSide.tick``): a distributed file is
never overwritten by a member's rotation (QA s18 hunt-nts-server F1), members that ratchet the
same file write the same bytes, and the key fingerprint tells members apart."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import pytest

from tsyncd.config import KeysetConfig
from tsyncd.nts.cookie import keyset_file_bytes
from tsyncd.servers.nts import NtsServerSide

INTERVAL = 60
T0 = 1_800_000_000.0  # an epoch boundary (a multiple of 60)


def member(path: Path, now_s: float = T0 + 1) -> NtsServerSide:
    return NtsServerSide(KeysetConfig(key_storage_path=path, key_rotation_interval=INTERVAL), now_s)


def test_members_of_one_file_rotate_alike_and_show_the_same_key_id(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    a, b = member(path), member(path)
    assert a.keys.key_id == b.keys.key_id and len(a.keys.key_id) == 8
    a.tick(T0 + INTERVAL + 1)
    written = path.read_bytes()
    b.tick(T0 + INTERVAL + 2)  # the same bytes on disk: b's rotation changes nothing
    assert path.read_bytes() == written
    assert a.keys.key_id == b.keys.key_id == a.counters()["nts_key_id"]
    assert a.keys.current_epoch == b.keys.current_epoch


def test_a_rotation_loads_a_distributed_file_instead_of_overwriting_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator writes a new key; before this member's ``rekey``, its rotation comes.
    It used to write its old chain over the new file, and a later ``rekey`` everywhere then
    loaded the old key: the fleet split and clients got NAKs in a loop."""
    path = tmp_path / "keys.json"
    server = member(path)
    old_id = server.keys.key_id
    new = {
        "epoch": int(T0 // INTERVAL),
        "rotation-interval": INTERVAL,
        "key": secrets.token_hex(32),
    }
    path.write_text(json.dumps(new) + "\n")
    operator = member(path)  # what a member that rekeyed already holds
    with caplog.at_level(logging.WARNING):
        server.tick(T0 + INTERVAL + 1)
    assert json.loads(path.read_text())["key"] == new["key"]  # not overwritten
    operator.tick(T0 + INTERVAL + 1)
    assert server.keys.key_id == operator.keys.key_id != old_id
    assert "changed since it was read" in caplog.text
    # From then on the member writes its rotations again.
    server.tick(T0 + 4 * INTERVAL + 1)
    assert json.loads(path.read_text())["epoch"] > new["epoch"]
    assert path.read_bytes() == keyset_file_bytes(server.keys)


def test_a_broken_file_is_neither_loaded_nor_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    server = member(path)
    path.write_text("{half a file")
    epoch = server.keys.current_epoch
    server.tick(T0 + INTERVAL + 1)
    assert path.read_text() == "{half a file"
    assert server.keys.current_epoch == epoch + 1  # rotated in memory all the same


def test_the_rotation_log_names_the_key_that_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QA s21 hunt-nts #5: when a changed file was taken up at a rotation, an INFO "rotated"
    line first named the ratcheted key, replaced a millisecond later by the file's: a reader
    saw two current keys.  Only the key that serves is named."""
    path = tmp_path / "keys.json"
    server = member(path)
    with caplog.at_level(logging.INFO):
        server.tick(T0 + INTERVAL + 1)
    assert (
        f"NTS cookie key rotated (epoch {server.keys.current_epoch}, key {server.keys.key_id})"
        in (caplog.text)
    )
    new = {"epoch": int(T0 // INTERVAL) + 1, "rotation-interval": INTERVAL, "key": "ab" * 32}
    path.write_text(json.dumps(new) + "\n")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        server.tick(T0 + 2 * INTERVAL + 1)
    assert "rotated" not in caplog.text
    assert (
        f"its keys are in use now (epoch {server.keys.current_epoch}, key {server.keys.key_id})"
        in (caplog.text)
    )
    assert len(caplog.records) == 1  # one line, naming one key
