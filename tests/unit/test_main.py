"""The daemon's command line (argparse, for memory): the options and outputs tools rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
from tsqcerts import make_pki

from tsyncd import __version__
from tsyncd.__main__ import main


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    code = info.value.code
    assert isinstance(code, int)
    return code


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: tsyncd")
    for option in ("--config", "--check", "--measure-only", "--version"):
        assert option in out
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tsyncd, version {__version__}"


def test_check_reports_a_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "tsyncd.toml"
    conf.write_text('[clock]\nmode = "measure"\n[[server]]\nlisten = "127.0.0.1:1123"\n')
    main(["--check", "-c", str(conf)])
    assert capsys.readouterr().out == f"{conf}: configuration OK (0 source(s), 1 server(s))\n"


def test_check_names_the_other_servers_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QA s22: four [[tsq-server]] tables were reported as "1 server(s)"."""
    pki = make_pki(tmp_path / "pki")
    conf = tmp_path / "tsyncd.toml"
    tsq = "".join(
        f'[[tsq-server]]\ntransport = "{kind}"\nlisten = "127.0.0.1:{port}"\n'
        f'certificate-chain-path = "{pki.chain}"\nprivate-key-path = "{pki.key}"\n'
        for kind, port in (("stream", 1443), ("datagram", 1444))
    )
    conf.write_text(f'[clock]\nmode = "measure"\n[[server]]\nlisten = "127.0.0.1:1123"\n{tsq}')
    main(["--check", "-c", str(conf)])
    out = capsys.readouterr().out
    assert out == f"{conf}: configuration OK (0 source(s), 1 server(s), 2 TSQ server(s))\n"


def test_bad_config_exits_1_and_bad_usage_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "tsyncd.toml"
    conf.write_text("[clock]\nmode = 7\n")
    assert _exit_code(["--check", "--config", str(conf)]) == 1
    assert "invalid configuration" in capsys.readouterr().err
    assert _exit_code(["-c", str(tmp_path)]) == 2  # a directory is not a config file
    assert "is a directory" in capsys.readouterr().err
    assert _exit_code(["--no-such-option"]) == 2
    assert capsys.readouterr().err.startswith("Usage: tsyncd")
