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


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze ARGS`` (a missing tool fails the test)."""
    return subprocess.run(
        [tool("systemd-analyze"), *args], capture_output=True, text=True, timeout=30, check=False
    )


def runnable_copy(unit: Path, binary: str, directory: Path) -> Path:
    """A copy of ``unit`` in ``directory`` whose ExecStart runs /bin/true instead of ``binary``
    (absent unless the package is installed)."""
    copy = directory / unit.name
    text = unit.read_text()
    assert f"ExecStart={binary} " in text
    copy.write_text(text.replace(f"ExecStart={binary} ", "ExecStart=/bin/true "))
    return copy


def exposure(unit: Path) -> float:
    """systemd's rating of a unit's sandbox: 0 (locked) .. 10 (unsafe)."""
    result = analyze("security", "--offline=true", "--no-pager", str(unit))
    match = re.search(
        rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", result.stdout
    )
    assert match is not None, result.stdout + result.stderr
    return float(match.group(1))


def test_service_type_and_lifecycle() -> None:
    service = load_unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/bin/tsyncd -c /etc/tsyncd/tsyncd.toml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["WatchdogSec"] == "30"
    assert service["Restart"] == "on-failure"
    # Exit status 1 (an invalid configuration, tsyncd.daemon_cli) is not restarted in a loop.
    assert service["RestartPreventExitStatus"] == "1"


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
        "SystemCallArchitectures": "native",
        "StateDirectory": "tsyncd",
        "LogsDirectory": "tsyncd",  # the documented [log] directory, under ProtectSystem=strict
        "RuntimeDirectory": "tsyncd",
        "RuntimeDirectoryMode": "0755",
    }
    assert {key: service.get(key) for key in expected} == expected
    # pyOpenSSL's callbacks (NTS-KE) are cffi closures in W+X memory, which this would refuse.
    assert "MemoryDenyWriteExecute" not in service
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
    # A copy pointing at a binary that exists must verify with no complaint at all.
    result = analyze("verify", "--man=no", str(runnable_copy(SERVICE, "/usr/bin/tsyncd", tmp_path)))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    shipped = analyze("verify", "--man=no", str(SERVICE))
    complaints = [line for line in shipped.stderr.splitlines() if line.strip()]
    if Path("/usr/bin/tsyncd").exists():
        assert (shipped.returncode, complaints) == (0, [])
    else:
        assert complaints, "verify should report the missing /usr/bin/tsyncd"
        assert all("/usr/bin/tsyncd" in line for line in complaints), complaints


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    """Guard the sandbox as a whole."""
    copy = runnable_copy(SERVICE, "/usr/bin/tsyncd", tmp_path)
    assert exposure(copy) <= 3.0


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


WAIT_SERVICE = SYSTEMD_DIR / "tsyncd-wait.service"


def test_wait_service_holds_time_sync_target_until_synchronized() -> None:
    unit = load_unit(WAIT_SERVICE)
    assert words(unit["Unit"]["After"]) == words(unit["Unit"]["Requires"]) == {"tsyncd.service"}
    assert words(unit["Unit"]["Before"]) == words(unit["Unit"]["Wants"]) == {"time-sync.target"}
    service = unit["Service"]
    assert (service["Type"], service["RemainAfterExit"]) == ("oneshot", "yes")
    assert service["TimeoutStartSec"] == "180"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_wait_service_command_is_one_tsyncctl_accepts() -> None:
    from tsyncctl.monitor import waitsync

    argv = shlex.split(load_unit(WAIT_SERVICE)["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/bin/tsyncctl", "waitsync"]
    params = waitsync.make_context("waitsync", argv[2:]).params
    assert params == {"max_tries": 0, "max_correction": 0.1, "max_skew": 0.0, "interval": 1.0}


def test_wait_service_verifies_and_is_locked_down(tmp_path: Path) -> None:
    wait = runnable_copy(WAIT_SERVICE, "/usr/bin/tsyncctl", tmp_path)
    daemon = runnable_copy(SERVICE, "/usr/bin/tsyncd", tmp_path)  # what its Requires= names
    result = analyze("verify", "--man=no", str(wait), str(daemon))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert exposure(wait) <= 1.5  # it only reads tsyncd's control socket
