"""tsyncctl keygen: key lines that the key file parser (and chronyd: the same format) reads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tsyncctl.cli import cli
from tsyncd.symkey import parse_key_file


@pytest.mark.parametrize(
    ("args", "key_id", "kind", "size"),
    [
        ([], 1, "SHA1", 20),  # chronyc's defaults: ID 1, SHA1, 160 bits
        (["5", "sha256", "256"], 5, "SHA256", 32),
        (["9", "AES128"], 9, "AES128", 16),
        (["10", "AES256", "256"], 10, "AES256", 32),
    ],
)
def test_keygen_prints_a_key_file_line(args: list[str], key_id: int, kind: str, size: int) -> None:
    result = CliRunner().invoke(cli, ["keygen", *args])
    assert result.exit_code == 0, result.output
    keys = parse_key_file(result.stdout)
    assert list(keys) == [key_id] and keys[key_id].kind == kind
    assert len(keys[key_id].secret) == size
    again = CliRunner().invoke(cli, ["keygen", *args]).stdout
    assert again != result.stdout  # random each time


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1", "MD4"], "keygen: key type 'MD4' is not one of MD5, SHA1, SHA256"),
        (["1", "AES128", "256"], "keygen: an AES128 key is 128 bits"),
        (["1", "SHA1", "12"], "keygen: 12 bits: expected 80..4096, a multiple of 8"),
    ],
)
def test_keygen_refuses_what_no_key_file_takes(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["keygen", *args])
    assert result.exit_code == 1 and message in result.stderr
