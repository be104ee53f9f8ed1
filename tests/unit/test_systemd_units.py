"""Checks of systemd/tsyncd.{service,sysusers,tmpfiles}: settings we rely on, and systemd's
own verdict (systemd-analyze, systemd-sysusers and systemd-tmpfiles from Debian's `systemd`
package; a missing tool fails the test)."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
SERVICE = SYSTEMD_DIR / "tsyncd.service"
SYSUSERS = SYSTEMD_DIR / "tsyncd.sysusers"
TMPFILES = SYSTEMD_DIR / "tsyncd.tmpfiles"

MISSING_TOOL = "{} not found: apt-get install systemd"


def load_unit(path: Path = SERVICE) -> configparser.ConfigParser:
    # Unit files allow repeated keys and use $VARS and % specifiers: no strictness, no
    # interpolation, and keys keep their case.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return parser


def words(value: str) -> set[str]:
    return set(value.split())


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, MISSING_TOOL.format(name)
    return path


def test_service_type_and_lifecycle() -> None:
    service = load_unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/bin/tsyncd -c /etc/tsyncd/tsyncd.toml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["WatchdogSec"] == "30"
    assert service["Restart"] == "on-failure"


def test_service_runs_unprivileged_with_exactly_two_capabilities() -> None:
    service = load_unit()["Service"]
    wanted = {"CAP_SYS_TIME", "CAP_NET_BIND_SERVICE"}
    assert service["User"] == "tsyncd"
    assert words(service["AmbientCapabilities"]) == wanted
    assert words(service["CapabilityBoundingSet"]) == wanted
    assert service["NoNewPrivileges"] == "yes"
    # Either would silently stop the daemon from setting the host clock.
    assert "ProtectClock" not in service
    assert "PrivateUsers" not in service


def test_service_sandbox() -> None:
    service = load_unit()["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "no",
        "DevicePolicy": "closed",
        "ProtectKernelModules": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "StateDirectory": "tsyncd",
        "RuntimeDirectory": "tsyncd",
        "RuntimeDirectoryMode": "0755",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert words(service["RestrictAddressFamilies"]) == {
        "AF_INET",
        "AF_INET6",
        "AF_UNIX",
        "AF_NETLINK",
    }
    # The allow-list must include the clock-setting calls, which @system-service lacks.
    assert {"@system-service", "@clock"} <= words(service["SystemCallFilter"])


def test_unit_ordering_and_install() -> None:
    unit = load_unit()
    conflicts = words(unit["Unit"]["Conflicts"])
    assert {
        "systemd-timesyncd.service",
        "chronyd.service",
        "chrony.service",
        "ntp.service",
        "ntpsec.service",
    } <= conflicts
    assert "network.target" in words(unit["Unit"]["After"])
    assert words(unit["Unit"]["Wants"]) == {"time-sync.target"}
    assert words(unit["Unit"]["Before"]) == {"time-sync.target"}
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "Alias" not in unit["Install"]


def test_user_and_state_directory_agree_across_files() -> None:
    sysusers = [
        shlex.split(line)
        for line in SYSUSERS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tmpfiles = [
        line.split()
        for line in TMPFILES.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sysusers == [["u", "tsyncd", "-", "tsyncd time daemon", "/var/lib/tsyncd"]]
    assert tmpfiles == [["d", "/var/lib/tsyncd", "0755", "tsyncd", "tsyncd", "-"]]
    service = load_unit()["Service"]
    assert f"/var/lib/{service['StateDirectory']}" == sysusers[0][4] == tmpfiles[0][1]
    assert service["User"] == sysusers[0][1] == tmpfiles[0][3]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    # The unit as shipped names /usr/bin/tsyncd, absent unless the package is installed; a
    # copy pointing at a binary that exists must verify with no complaint at all.
    copy = tmp_path / "tsyncd.service"
    text = SERVICE.read_text()
    assert "ExecStart=/usr/bin/tsyncd " in text
    copy.write_text(text.replace("ExecStart=/usr/bin/tsyncd ", "ExecStart=/bin/true "))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    shipped = subprocess.run(
        [analyze, "verify", "--man=no", str(SERVICE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    complaints = [line for line in shipped.stderr.splitlines() if line.strip()]
    if Path("/usr/bin/tsyncd").exists():
        assert (shipped.returncode, complaints) == (0, [])
    else:
        assert complaints, "verify should report the missing /usr/bin/tsyncd"
        assert all("/usr/bin/tsyncd" in line for line in complaints), complaints


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    """Guard the sandbox as a whole: systemd rates exposure 0 (locked) .. 10 (unsafe)."""
    analyze = tool("systemd-analyze")
    copy = tmp_path / "tsyncd.service"
    copy.write_text(SERVICE.read_text().replace("/usr/bin/tsyncd ", "/bin/true "))
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    match = re.search(r"Overall exposure level for tsyncd\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """An empty OS tree for systemd-sysusers/-tmpfiles --root, so the host is untouched."""
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc").mkdir(exist_ok=True)
        (tmp_path / "etc" / name).touch()
    (tmp_path / "var" / "lib").mkdir(parents=True)
    return tmp_path


def test_sysusers_and_tmpfiles_apply_to_an_image(
    image_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sysusers = tool("systemd-sysusers")
    tmpfiles = tool("systemd-tmpfiles")
    conf = tmp_path_factory.mktemp("conf")
    # Both tools take the config's basename as its identity, as installed by the package.
    shutil.copy(SYSUSERS, conf / "tsyncd.conf")
    subprocess.run(
        [sysusers, f"--root={image_root}", str(conf / "tsyncd.conf")],
        capture_output=True,
        timeout=30,
        check=True,
    )
    passwd = (image_root / "etc" / "passwd").read_text().splitlines()
    entries = [line.split(":") for line in passwd if line.startswith("tsyncd:")]
    assert len(entries) == 1
    _, _, uid, gid, gecos, home, shell = entries[0]
    assert (gecos, home) == ("tsyncd time daemon", "/var/lib/tsyncd")
    assert shell.endswith("nologin")
    group = (image_root / "etc" / "group").read_text()
    assert f"tsyncd:x:{gid}:" in group

    shutil.copy(TMPFILES, conf / "tsyncd.conf")
    subprocess.run(
        [tmpfiles, f"--root={image_root}", "--create", str(conf / "tsyncd.conf")],
        capture_output=True,
        timeout=30,
        check=True,
    )
    state = (image_root / "var" / "lib" / "tsyncd").stat()
    assert (state.st_uid, state.st_gid) == (int(uid), int(gid))
    assert state.st_mode & 0o7777 == 0o755
