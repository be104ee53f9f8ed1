"""Build the Debian package with packaging/build-deb.sh and inspect what it ships.

The build needs Debian 12's dpkg-dev, debhelper, dh-python, pybuild-plugin-pyproject,
python3-all and python3-setuptools; running the packaged entry points needs the package's
Depends (python3-click, python3-cryptography, python3-prometheus-client). Anything missing
fails these tests: a package we cannot build is a broken package, not a skipped check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import tsyncd

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
    for name in ("python3-click", "python3-cryptography", "python3-prometheus-client"):
        # Unversioned: Debian 12 ships older releases than pyproject's minimums.
        assert name in depends, depends
    assert "python3:any (>= 3.11~)" in depends
    # dh_installsysusers' postinst runs systemd-sysusers, so the package must pull it in.
    assert "systemd | systemd-standalone-sysusers | systemd-sysusers" in depends
    assert not any("tomli" in d for d in depends)
    assert field(deb, "Recommends") == "python3-systemd"


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
    assert conffiles == ["/etc/tsyncd/tsyncd.toml"]


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
