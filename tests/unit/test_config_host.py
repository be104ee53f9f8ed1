"""tsyncd.config_host: ``--check`` (and every reload, and ``tsyncctl add``) catches what the
daemon would refuse at start: unknown groups, a log directory it cannot make or write, PEM
files it cannot use (QA s16, finding 4)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.config_errors import P, errors
from tests.pki import Pki, make_pki
from tsyncd.config import ConfigErrors, parse_config, parse_source
from tsyncd.config_host import credential_errors, log_directory_error

NO_FILE = "(No such file or directory)"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def pem_files(chain: Path, key: Path) -> dict[str, object]:
    return {
        "listen": "127.0.0.1:4460",
        "certificate-chain-path": str(chain),
        "private-key-path": str(key),
    }


def nts_ke(chain: Path, key: Path) -> dict[str, object]:
    # Its cookies go to another host's NTP server (there is no [[server]] here).
    return pem_files(chain, key) | {"ntp-server": "ntp.example.org"}


# --- [control] groups -------------------------------------------------------------------------


def test_control_groups_must_exist() -> None:
    assert errors({"control": {"group": "no-such-group-xyz", "admin-group": "nor-this-one"}}) == [
        'control.group = "no-such-group-xyz": expected the name or GID of an existing group '
        "(create it: groupadd no-such-group-xyz)",
        'control.admin-group = "nor-this-one": expected the name or GID of an existing group '
        "(create it: groupadd nor-this-one)",
    ]
    existing = grp.getgrgid(os.getgid()).gr_name
    config = parse_config({"control": {"group": existing, "admin-group": "4242"}}, Path("t"))
    assert config.control.admin_group == "4242"  # a GID is taken as it is, as chown does
    # etc/tsyncd.toml says "name or GID": a TOML number is a GID too (QA s18 hunt-ops F5).
    config = parse_config({"control": {"group": existing, "admin-group": 4242}}, Path("t"))
    assert config.control.admin_group == "4242"


def test_the_control_group_must_be_one_the_daemons_user_is_in() -> None:
    """Without CAP_CHOWN (the shipped unit grants none) the socket can only be given to a
    group of its owner's; root may give it to any."""
    data = {"control": {"group": "root", "admin-group": "root"}}
    assert parse_config(data, Path("t")).control.group == "root"  # as root, or in group root
    assert _as_nobody(lambda: errors(data)) == [
        'control.group = "root": expected a group nobody, who runs tsyncd, is in (it gives the '
        "control socket to that group: usermod -aG root nobody)",
    ]  # admin-group only names who may change things: nothing is given to it


def test_tsq_needs_aioquic_named_at_check(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    tsq = {"tsq-server": [{"transport": "stream"} | pem_files(pki.chain, pki.key)]}
    source = {"source": [{"mode": "tsq", "address": "192.0.2.1"}]}
    parse_config(tsq, Path("t"))
    monkeypatch.setitem(sys.modules, "aioquic", None)  # find_spec: not installed
    [server_error] = errors(tsq)
    assert server_error.startswith(
        'tsq-server[0].transport = "stream": expected the Python package aioquic installed '
        "(pip install aioquic; Debian 12 packages none:"
    )
    assert errors(source)[0].startswith('source[0].mode = "tsq": expected the Python package')
    assert parse_config({"source": [{"mode": "server", "address": "192.0.2.1"}]}, Path("t"))


# --- [log] directory --------------------------------------------------------------------------


def test_log_directory_the_daemon_cannot_make(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert errors({"log": {"directory": "/proc/forbidden", "tracking": True}}) == [
        'log.directory = "/proc/forbidden": expected a directory tsyncd can write tracking.log '
        "in, or make (/proc is on the kernel's proc file system)",
    ]
    assert errors(
        {"log": {"directory": str(a_file / "logs"), "measurements": True, "statistics": True}}
    ) == [
        f'log.directory = "{a_file}/logs": expected a directory tsyncd can write '
        f"measurements.log and statistics.log in, or make ({a_file} is not a directory)",
    ]
    (tmp_path / "logs" / "tracking.log").mkdir(parents=True)
    assert errors({"log": {"directory": str(tmp_path / "logs"), "tracking": True}}) == [
        f'log.directory = "{tmp_path}/logs": expected a directory tsyncd can write tracking.log '
        f"in, or make ({tmp_path}/logs/tracking.log is a directory)",
    ]


def test_log_directory_is_judged_without_making_it(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b"
    config = parse_config({"log": {"directory": str(missing), "tracking": True}}, Path("t"))
    assert config.log.directory == missing and not (tmp_path / "a").exists()
    # Only the logs that are on need the directory.
    assert parse_config({"log": {"directory": "/proc/forbidden"}}, Path("t")).log.tracking is False


def _as_nobody(check: Callable[[], list[str]]) -> list[str]:
    """``check()``, run as user nobody when we are root (root may write anywhere, so the
    check would see nothing to refuse): in a forked child that drops to nobody first."""
    if os.geteuid() != 0:
        return check()
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(nobody.pw_gid, nobody.pw_gid, nobody.pw_gid)
            os.setresuid(nobody.pw_uid, nobody.pw_uid, nobody.pw_uid)
            os.write(write_end, json.dumps(check()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the check failed as nobody"
    result: list[str] = json.loads(data)
    return result


def test_log_directory_not_writable() -> None:
    # Under /tmp, so that nobody may look into it when the test drops to nobody.
    parent = Path(tempfile.mkdtemp(prefix="tsyncd-logdir-", dir="/tmp"))
    parent.chmod(0o555)
    try:
        found = _as_nobody(
            lambda: errors({"log": {"directory": str(parent / "logs"), "tracking": True}})
        )
        assert found == [
            f'log.directory = "{parent}/logs": expected a directory tsyncd can write '
            f"tracking.log in, or make ({parent} is not writable)",
        ]
    finally:
        parent.chmod(0o700)
        parent.rmdir()


def test_the_daemons_own_log_directory_error_names_the_key() -> None:
    exc = OSError(2, "No such file or directory", "/proc/forbidden")
    assert log_directory_error(Path("/t.toml"), Path("/proc/forbidden"), ["tracking.log"], exc) == (
        '/t.toml: log.directory = "/proc/forbidden": expected a directory tsyncd can write '
        "tracking.log in, or make (No such file or directory: /proc/forbidden)"
    )


# --- PEM files --------------------------------------------------------------------------------


def test_nts_ke_server_files_that_are_missing_or_not_pem(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("not a certificate\n")
    assert errors({"nts-ke-server": [nts_ke(Path("/x.crt"), Path("/x"))]}) == [
        f'nts-ke-server[0].certificate-chain-path = "/x.crt": expected a readable PEM '
        f"certificate chain {NO_FILE}",
        f'nts-ke-server[0].private-key-path = "/x": expected a readable PEM private key {NO_FILE}',
    ]
    assert errors({"nts-ke-server": [nts_ke(tmp_path / "text", tmp_path)]}) == [
        f'nts-ke-server[0].certificate-chain-path = "{tmp_path}/text": expected a readable PEM '
        "certificate chain (no PEM certificate in it)",
        f'nts-ke-server[0].private-key-path = "{tmp_path}": expected a readable PEM private key '
        "(not a regular file)",
    ]
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n")
    assert errors(
        {"tsq-server": [{"transport": "datagram"} | pem_files(broken, tmp_path / "k")]}
    ) == [
        f'tsq-server[0].certificate-chain-path = "{broken}": expected a readable PEM '
        "certificate chain (its certificate 1 is not valid PEM (bad base64))",
        f'tsq-server[0].private-key-path = "{tmp_path}/k": expected a readable PEM private key '
        f"{NO_FILE}",
    ]


def test_a_key_that_is_not_the_certificates(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    assert errors({"nts-ke-server": [nts_ke(pki.chain, other.key)]}) == [
        f'nts-ke-server[0].private-key-path = "{other.key}": expected the private key of '
        "certificate-chain-path's certificate (it is another key)",
    ]
    # The CA certificate first is the wrong order for a chain: its key is not this one.
    assert errors({"nts-ke-server": [nts_ke(pki.ca, pki.key)]})[0].startswith(
        f'nts-ke-server[0].private-key-path = "{pki.key}": expected the private key of '
    )


def test_an_encrypted_key_is_refused_as_tsyncd_asks_no_password(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert errors({"nts-ke-server": [nts_ke(pki.chain, locked)]}) == [
        f'nts-ke-server[0].private-key-path = "{locked}": expected a readable PEM private key '
        "(it is encrypted, and tsyncd takes no password)",
    ]


def test_good_files_pass_also_with_the_key_beside_the_certificate(pki: Pki, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(pki.chain.read_bytes() + pki.key.read_bytes())
    config = parse_config(
        {
            "nts-ke-server": [nts_ke(pki.chain, pki.key), nts_ke(both, both) | {"listen": "::1"}],
            "tsq-server": [{"transport": "stream"} | pem_files(pki.chain, pki.key)],
            "source": [{"mode": "nts", "address": "a", "certificate-authority": str(pki.ca)}],
        },
        Path("t"),
    )
    assert config.nts_ke_servers[1].private_key_path == both


def test_certificate_authority_of_a_source_and_of_tsyncctl_add(pki: Pki) -> None:
    assert errors(
        {
            "source": [
                {"mode": "nts", "address": "a", "certificate-authority": "/nonexistent.pem"},
                {"mode": "tsq", "address": "b", "certificate-authority": str(pki.key)},
            ]
        }
    ) == [
        'source[0].certificate-authority = "/nonexistent.pem": expected a readable PEM file of '
        f"CA certificates {NO_FILE}",
        f'source[1].certificate-authority = "{pki.key}": expected a readable PEM file of CA '
        "certificates (no PEM certificate in it)",
    ]
    with pytest.raises(ConfigErrors) as info:
        parse_source({"mode": "nts", "address": "a", "certificate-authority": "/nonexistent.pem"})
    assert [str(e) for e in info.value.errors] == [
        'add_source: source.certificate-authority = "/nonexistent.pem": expected a readable PEM '
        f"file of CA certificates {NO_FILE}",
    ]
    # Not an NTS or TSQ source: only the step-2 error, the file is not looked at.
    assert errors(
        {"source": [{"mode": "server", "address": "a", "certificate-authority": "/x.pem"}]}
    ) == [
        'source[0].certificate-authority = "/x.pem": expected no certificate-authority unless '
        'mode = "tsq" or "nts"',
    ]


def test_credential_errors_are_the_checks_words_for_the_daemon(pki: Pki) -> None:
    assert credential_errors(Path("/t.toml"), "nts-ke-server[1]", pki.chain, Path("/x")) == [
        f'/t.toml: nts-ke-server[1].private-key-path = "/x": expected a readable PEM private '
        f"key {NO_FILE}",
    ]
    assert credential_errors(Path("/t.toml"), "nts-ke-server[0]", pki.chain, pki.key) == []


def test_an_nts_key_file_the_daemon_would_refuse_is_refused_by_the_check(tmp_path: Path) -> None:
    """QA s17 hunt-life #8, s18 hunt-nts-server F7: --check passed an empty, truncated or
    non-JSON key file, a directory, or one made for another interval; the start then failed."""
    path = tmp_path / "keys.json"

    def check(interval: int = 60) -> list[str]:
        data = {"keyset": {"key-storage-path": str(path), "key-rotation-interval": interval}}
        try:
            parse_config(data, P)
        except ConfigErrors as caught:
            return [str(e).removeprefix(f"{P}: ") for e in caught.errors]
        return []

    assert check() == []  # none yet: the first start creates it
    good = {"epoch": 1, "rotation-interval": 60, "key": "ab" * 32}
    path.write_text(json.dumps(good))
    assert check() == []
    prefix = f'keyset.key-storage-path = "{path}": expected a usable NTS key file, or none yet'
    [wrong_interval] = check(3600)
    assert wrong_interval.startswith(prefix)
    assert "key-rotation-interval = 60 again, or remove the file" in wrong_interval
    for content in ("", '{"epoch": 1, "rotat', "[]"):
        path.write_text(content)
        [problem] = check()
        assert problem.startswith(prefix) and f"NTS key file {path}: " in problem
    path.unlink()
    path.mkdir()
    [directory] = check()
    assert directory.startswith(prefix) and "cannot read it" in directory
