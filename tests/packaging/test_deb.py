"""Build the Debian package with packaging/build-deb.sh and inspect what it ships.

The build needs Debian 12's dpkg-dev, debhelper, dh-python, pybuild-plugin-pyproject,
python3-all and python3-setuptools; running the packaged entry points needs the package's
Depends (python3-click, python3-cryptography, python3-openssl, python3-service-identity,
python3-prometheus-client). Anything missing
fails these tests: a package we cannot build is a broken package, not a skipped check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import tsyncd
from tests.nts_certs import make_pki, nts_server_toml, nts_source_toml
from tests.peers import (
    Peers,
    Tsyncd,
    chronyd_nts_client,
    chronyd_nts_server,
    free_tcp_port,
    free_udp_port,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "packaging" / "build-deb.sh"
DIST_PACKAGES = Path("usr/lib/python3/dist-packages")
BUILD_TOOLS = ("git", "dpkg-buildpackage", "dpkg-deb", "dh", "pybuild")
APT_HINT = (
    "apt-get install git build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject "
    "python3-all python3-setuptools"
)


def run(
    *argv: str | Path,
    check: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
        env=env,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb built from this working tree (once per module, about 5 s)."""
    for name in BUILD_TOOLS:
        assert shutil.which(name) is not None, f"{name} not found: {APT_HINT}"
    outdir = tmp_path_factory.mktemp("deb-out")
    result = run("bash", BUILD_SCRIPT, outdir)
    assert result.returncode == 0, f"build-deb.sh failed:\n{result.stderr[-6000:]}"
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == outdir
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def members(deb: Path) -> set[str]:
    """Paths in the data archive, relative ("usr/bin/tsyncd"); directories end in '/'."""
    result = run("dpkg-deb", "-c", deb, check=True)
    paths = set()
    for line in result.stdout.splitlines():
        name = line.split(maxsplit=5)[5].split(" -> ")[0]
        paths.add(name.removeprefix("./"))
    return paths


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deb-root")
    run("dpkg-deb", "-x", deb, root, check=True)
    return root


@pytest.fixture(scope="module")
def control_dir(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deb-control")
    run("dpkg-deb", "-e", deb, root / "DEBIAN", check=True)
    return root / "DEBIAN"


def field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "-f", deb, name, check=True).stdout.strip()


def repo_files(*pathspec: str) -> set[str]:
    """Files build-deb.sh copies: tracked plus untracked-not-ignored, as in the script."""
    result = run("git", "-C", REPO, "ls-files", "-c", "-o", "--exclude-standard", *pathspec)
    assert result.returncode == 0, result.stderr
    return {p for p in result.stdout.splitlines() if (REPO / p).is_file()}


def test_build_script_requires_outdir() -> None:
    result = run("bash", BUILD_SCRIPT)
    assert result.returncode != 0
    assert "usage" in result.stderr


def test_package_identity(deb: Path) -> None:
    assert deb.name == f"tsyncd_{tsyncd.__version__}_all.deb"
    assert field(deb, "Package") == "tsyncd"
    assert field(deb, "Version") == tsyncd.__version__
    assert field(deb, "Architecture") == "all"


def test_dependencies(deb: Path) -> None:
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    for name in (
        "python3-click",
        "python3-cryptography",
        "python3-openssl",  # NTS-KE (tested below on Debian 12's own libraries)
        "python3-service-identity",
        "python3-prometheus-client",
    ):
        # Unversioned: Debian 12 ships older releases than pyproject's minimums.
        assert name in depends, depends
    assert "python3:any (>= 3.11~)" in depends
    # dh_installsysusers' postinst runs systemd-sysusers, so the package must pull it in.
    assert "systemd | systemd-standalone-sysusers | systemd-sysusers" in depends
    assert not any("tomli" in d for d in depends)
    assert field(deb, "Recommends") == "python3-systemd"
    # One time daemon at a time, as chrony and systemd-timesyncd declare it (QA s17 F7).
    for relation in ("Provides", "Conflicts", "Replaces"):
        assert field(deb, relation) == "time-daemon", relation


def test_entry_point_scripts(members: set[str], extracted: Path) -> None:
    for name in ("tsyncd", "tsyncctl"):
        assert f"usr/bin/{name}" in members
        script = extracted / "usr" / "bin" / name
        assert os.access(script, os.X_OK)
        assert script.read_text().startswith("#!/usr/bin/python3\n")


def test_python_packages_are_complete(members: set[str]) -> None:
    shipped = {
        str(Path(m).relative_to(DIST_PACKAGES))
        for m in members
        if m.startswith(f"{DIST_PACKAGES}/") and m.endswith(".py")
    }
    assert {"tsyncd/__init__.py", "tsyncd/sdnotify.py", "tsyncctl/__init__.py"} <= shipped
    # Every module of the source tree is packaged (a subpackage without __init__.py, or a
    # packages.find pattern that misses it, would silently drop modules).
    assert repo_files("tsyncd/*.py", "tsyncctl/*.py") <= shipped
    assert not any(m.startswith(("tests/", f"{DIST_PACKAGES}/tests/")) for m in members)
    assert not any("__pycache__" in m for m in members)
    assert f"{DIST_PACKAGES}/tsyncd-{tsyncd.__version__}.dist-info/METADATA" in members


def test_systemd_files_are_the_repos(members: set[str], extracted: Path) -> None:
    units = [m for m in members if m.endswith("systemd/system/tsyncd.service")]
    assert units in (
        ["lib/systemd/system/tsyncd.service"],
        ["usr/lib/systemd/system/tsyncd.service"],
    )
    installed = {
        units[0]: REPO / "systemd" / "tsyncd.service",
        units[0].replace("tsyncd.service", "tsyncd-wait.service"): REPO
        / "systemd"
        / "tsyncd-wait.service",
        "usr/lib/sysusers.d/tsyncd.conf": REPO / "systemd" / "tsyncd.sysusers",
        "usr/lib/tmpfiles.d/tsyncd.conf": REPO / "systemd" / "tsyncd.tmpfiles",
    }
    for member, source in installed.items():
        assert (extracted / member).read_bytes() == source.read_bytes(), member


def test_config_is_a_conffile(members: set[str], extracted: Path, control_dir: Path) -> None:
    assert "etc/tsyncd/tsyncd.toml" in members
    packaged = (extracted / "etc" / "tsyncd" / "tsyncd.toml").read_bytes()
    assert packaged == (REPO / "etc" / "tsyncd.toml").read_bytes()
    conffiles = (control_dir / "conffiles").read_text().split()
    assert sorted(conffiles) == ["/etc/logrotate.d/tsyncd", "/etc/tsyncd/tsyncd.toml"]
    rotate = (extracted / "etc" / "logrotate.d" / "tsyncd").read_text()
    assert "/var/log/tsyncd/*.log" in rotate and "nocreate" in rotate
    assert "/usr/bin/tsyncctl cyclelogs" in rotate


def test_maintainer_scripts_create_user_then_state_then_start(control_dir: Path) -> None:
    postinst = (control_dir / "postinst").read_text()
    steps = [
        'systemd-sysusers ${DPKG_ROOT:+--root="$DPKG_ROOT"} tsyncd.conf',
        'systemd-tmpfiles ${DPKG_ROOT:+--root="$DPKG_ROOT"} --create tsyncd.conf',
        "deb-systemd-helper enable 'tsyncd.service'",
        "deb-systemd-invoke $_dh_action 'tsyncd.service'",
    ]
    positions = [postinst.find(step) for step in steps]
    assert -1 not in positions, postinst
    assert positions == sorted(positions), postinst
    assert "deb-systemd-invoke stop 'tsyncd.service'" in (control_dir / "prerm").read_text()


def test_wait_unit_is_shipped_but_left_for_the_admin_to_enable(control_dir: Path) -> None:
    postinst = (control_dir / "postinst").read_text()
    # Kept enabled across upgrades if the admin enabled it; never enabled or started by us.
    assert "deb-systemd-helper --quiet was-enabled 'tsyncd-wait.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'tsyncd-wait.service'" not in postinst
    enables = [line for line in postinst.splitlines() if "enable 'tsyncd-wait.service'" in line]
    assert len(enables) == 1, enables  # the one under was-enabled
    assert "deb-systemd-helper purge 'tsyncd-wait.service'" in (control_dir / "postrm").read_text()


def run_packaged(extracted: Path, *argv: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run an extracted entry point with Debian's interpreter (its shebang) and only the
    extracted dist-packages added, so the package and its Debian Depends are what is tested."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(extracted / DIST_PACKAGES),
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path),
    }
    return run(extracted / "usr" / "bin" / argv[0], *argv[1:], env=env, cwd=tmp_path)


def test_packaged_code_is_what_runs(extracted: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(extracted / DIST_PACKAGES), "PATH": "/usr/bin:/bin"}
    result = run(
        "/usr/bin/python3", "-c", "import tsyncd; print(tsyncd.__file__)", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(extracted / DIST_PACKAGES / "tsyncd" / "__init__.py")


def test_tsyncd_entry_point_runs(extracted: Path, tmp_path: Path) -> None:
    help_ = run_packaged(extracted, "tsyncd", "--help", tmp_path=tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("Usage: tsyncd")
    version = run_packaged(extracted, "tsyncd", "--version", tmp_path=tmp_path)
    assert version.returncode == 0, version.stderr
    assert tsyncd.__version__ in version.stdout


def test_tsyncctl_entry_point_runs(extracted: Path, tmp_path: Path) -> None:
    help_ = run_packaged(extracted, "tsyncctl", "--help", tmp_path=tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("Usage: tsyncctl")
    version = run_packaged(extracted, "tsyncctl", "--version", tmp_path=tmp_path)
    assert version.returncode == 0, version.stderr
    assert tsyncd.__version__ in version.stdout


def test_shipped_config_passes_check(extracted: Path, tmp_path: Path) -> None:
    config = extracted / "etc" / "tsyncd" / "tsyncd.toml"
    result = run_packaged(extracted, "tsyncd", "--check", "-c", str(config), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _packaged_tsyncd(extracted: Path, peers: Peers, name: str, toml: str) -> Tsyncd:
    """The extracted package's tsyncd on Debian's interpreter and Debian's libraries only."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(extracted / DIST_PACKAGES),
        "LANG": "C.UTF-8",
        "HOME": str(peers.tmp),
    }
    command = (str(extracted / "usr" / "bin" / "tsyncd"),)
    return peers.tsyncd(name, toml, env=env, command=command)


def test_debian_libraries_lack_what_the_venv_has() -> None:
    """What the two tests below exercise: Debian 12's cryptography has no AES-GCM-SIV and
    cannot seal an empty AES-SIV plaintext (tsyncd/nts/siv_compat.py fills that in)."""
    probe = (
        "import cryptography.hazmat.primitives.ciphers.aead as a\n"
        "from tsyncd.nts.siv_compat import library_seals_empty\n"
        "print(hasattr(a, 'AESGCMSIV'), library_seals_empty())"
    )
    result = run("/usr/bin/python3", "-c", probe, env={"PYTHONPATH": str(REPO)}, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_packaged_tsyncd_is_nts_client_of_chronyd(extracted: Path, peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    _chrony, ntp_port, ke_port = chronyd_nts_server(peers, "chronyd-nts", pki.key, pki.chain)
    client = _packaged_tsyncd(
        extracted, peers, "deb-nts-client", nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-2, -2))
    )

    def authenticated() -> dict[str, Any] | None:
        rows = client.ctl("peers")
        good = [r for r in rows if r["nts"] and r["nts"]["authenticated"] >= 3]
        return good[0] if good else None

    row = wait_for("authenticated NTS samples from chronyd", authenticated, timeout=30)
    assert row["address"] == f"127.0.0.1:{ntp_port}"
    assert row["nts"]["aead"] == "AES-SIV-CMAC-256" and row["nts"]["naks"] == 0


def test_chronyd_is_nts_client_of_packaged_tsyncd(extracted: Path, peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    keys = peers.tmp / "nts-keys.json"
    server = _packaged_tsyncd(
        extracted, peers, "deb-nts-server", nts_server_toml(pki, ntp_port, ke_port, keys, 8)
    )
    chrony = chronyd_nts_client(peers, "chronyd-nts-client", ntp_port, ke_port, pki.ca)

    def selected() -> list[str] | None:
        rows = [r for r in chrony.sources() if r[2] == "127.0.0.1"]
        return rows[0] if rows and rows[0][1] == "*" and int(rows[0][5], 8) >= 0o7 else None

    wait_for("chronyd to select the packaged tsyncd over NTS", selected, timeout=30)
    stats = server.ctl("serverstats")
    assert stats["nts_requests"] >= 3 and stats["nts_naks"] == 0
