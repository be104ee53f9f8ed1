"""The drift file: chrony's format and sign, atomic replacement, never a crash on bad input."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tsyncd.sync.driftfile import DEFAULT_SKEW_PPM, read_drift, write_drift


def assert_drift(got: tuple[float, float] | None, ppm: float, skew_ppm: float) -> None:
    assert got is not None
    assert got[0] == pytest.approx(ppm) and got[1] == pytest.approx(skew_ppm)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "drift"
    write_drift(path, 12.345678, 0.25)
    assert_drift(read_drift(path), 12.345678, 0.25)
    write_drift(path, -3.5, 0.001)
    assert_drift(read_drift(path), -3.5, 0.001)


def test_file_holds_chronys_sign_and_layout(tmp_path: Path) -> None:
    """chrony keeps how fast the free-running clock gains: minus our correction."""
    path = tmp_path / "drift"
    write_drift(path, 12.5, 0.125)
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    assert [float(v) for v in text.split()] == [-12.5, 0.125]
    assert text == f"{-12.5:20.6f} {0.125:20.6f}\n"


def test_reads_a_file_chrony_wrote(tmp_path: Path) -> None:
    path = tmp_path / "drift"
    path.write_text("           -8.123456             0.042000\n")
    assert_drift(read_drift(path), 8.123456, 0.042)


def test_frequency_only_file_gets_a_default_skew(tmp_path: Path) -> None:
    path = tmp_path / "drift"
    path.write_text("4.0\n")
    assert_drift(read_drift(path), -4.0, DEFAULT_SKEW_PPM)


def test_missing_file_reads_as_none_said_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A first start has no drift file yet: said, but not as a warning (nothing is wrong)."""
    with caplog.at_level(logging.INFO, logger="tsyncd.sync.driftfile"):
        assert read_drift(tmp_path / "nope") is None
    assert [(r.levelno, "does not exist" in r.getMessage()) for r in caplog.records] == [
        (logging.INFO, True)
    ]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello world\n",
        b"1.0 2.0 3.0\n",
        b"nan 1.0\n",
        b"inf\n",
        b"600.0 1.0\n",  # no crystal drifts 600 ppm: not a drift file we trust
        b"1.0 -0.5\n",  # negative skew
        b"\xff\xfe1.0 2.0\n",
        b"1.0 " * 2000,
    ],
)
def test_corrupt_file_reads_as_none_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "drift"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="tsyncd.sync.driftfile"):
        assert read_drift(path) is None
    assert "corrupt" in caplog.text


def test_unreadable_path_reads_as_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tsyncd.sync.driftfile"):
        assert read_drift(tmp_path) is None  # a directory
    assert "cannot read" in caplog.text


def test_write_is_atomic_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "drift"
    path.write_text("1.000000 1.000000\n")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        # The new content is complete and on disk before it takes the old file's place.
        assert Path(src).read_text().split() == [f"{-2.0:.6f}", f"{0.5:.6f}"]
        assert synced, "fsync before rename"
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_drift(path, 2.0, 0.5)
    assert len(replaced) == 1
    src, dst = replaced[0]
    assert Path(src).parent == tmp_path and dst == str(path)
    assert synced[-1] == str(tmp_path)  # the directory too, so the rename survives a crash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift"]  # no temporary left


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "drift"
    write_drift(path, 1.0, 0.1)

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_drift(path, 9.0, 0.1)
    assert_drift(read_drift(path), 1.0, 0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift"]


def test_unwritable_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_drift(tmp_path / "missing-dir" / "drift", 1.0, 0.1)


def test_non_finite_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finite"):
        write_drift(tmp_path / "drift", float("nan"), 0.1)
    assert not (tmp_path / "drift").exists()
