"""Reloading a TLS listener's renewed files (servers/credentials.py), shared by NTS-KE and TSQ."""

from __future__ import annotations

from pathlib import Path

from tsyncd.servers.credentials import ServedCredentials, reload_changed


def _refused(where: str, chain: Path, key: Path, exc: Exception) -> str:
    return f"{where}: {chain.name}, {key.name}: {exc}"


def test_only_changed_files_are_loaded_and_a_refusal_is_tried_again(tmp_path: Path) -> None:
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_text("chain 1")
    key.write_text("key 1")
    loaded: list[str] = []
    refuse: list[Exception] = []

    def use() -> None:
        if refuse:
            raise refuse.pop()
        loaded.append(chain.read_text())

    served = [ServedCredentials.watch("tsq-server[0]", chain, key, use)]
    assert reload_changed(served, _refused, (ValueError,)) == ([], [])  # unchanged
    chain.write_text("chain 2")
    refuse.append(ValueError("no certificate"))
    assert reload_changed(served, _refused, (ValueError,)) == (
        [],
        ["tsq-server[0]: chain.pem, key.pem: no certificate"],
    )
    # The refused files were not taken as loaded: the next reload tries them again.
    assert reload_changed(served, _refused, (ValueError,)) == (["tsq-server[0]"], [])
    assert loaded == ["chain 2"]
    assert reload_changed(served, _refused, (ValueError,)) == ([], [])
    key.unlink()
    (where,) = reload_changed(served, _refused, (ValueError,))[1]
    assert where.startswith("tsq-server[0]: chain.pem, key.pem: [Errno 2]")
