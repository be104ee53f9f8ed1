"""The daemon's own start-up errors for what the config check looked at (a file changed
between the check and the start): they name the file, the key and what was expected, not an
OpenSSL error list or a bare errno (QA s16, finding 4)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.pki import make_pki
from tsyncd.clock import make_clock
from tsyncd.config import Config, parse_config
from tsyncd.daemon import Daemon


def start_error(config: Config) -> str:
    """What ``Daemon.start`` raises for ``config`` (it must fail), after closing it again."""
    daemon = Daemon(config, make_clock("measure"))

    async def start() -> str:
        try:
            await daemon.start()
        except OSError as exc:
            return str(exc)
        finally:
            await daemon.close()
        raise AssertionError("the daemon started")

    return asyncio.run(start())


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base(tmp_path: Path) -> dict[str, object]:
    return {"clock": {"mode": "measure"}, "control": {"socket": str(tmp_path / "ctl.sock")}}


@pytest.mark.parametrize("damage", ["not a key", "another key"])
def test_nts_ke_server_files_changed_since_the_check(tmp_path: Path, damage: str) -> None:
    pki = make_pki(tmp_path / "pki")
    ke = {
        "listen": f"127.0.0.1:{free_tcp_port()}",
        "ntp-server": "ntp.example.org",
        "certificate-chain-path": str(pki.chain),
        "private-key-path": str(pki.key),
    }
    path = tmp_path / "t.toml"
    config = parse_config({**base(tmp_path), "nts-ke-server": [ke]}, path)
    if damage == "not a key":
        pki.key.write_text("gone\n")
        expected = "a readable PEM private key (no PEM private key in it)"
    else:
        pki.key.write_bytes(make_pki(tmp_path / "other").key.read_bytes())
        expected = "the private key of certificate-chain-path's certificate (it is another key)"
    assert start_error(config) == (
        f'{path}: nts-ke-server[0].private-key-path = "{pki.key}": expected {expected}'
    )


def test_log_directory_changed_since_the_check(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    logs = tmp_path / "a" / "logs"
    config = parse_config(
        {**base(tmp_path), "log": {"directory": str(logs), "tracking": True}}, path
    )
    (tmp_path / "a").write_text("")  # a file where the directory's parent would be made
    assert start_error(config).startswith(
        f'{path}: log.directory = "{logs}": expected a directory tsyncd can write tracking.log '
        "in, or make ("
    )
