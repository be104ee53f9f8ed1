"""Step 3 of the config check (``config.py``): what the file names on this host.

Steps 1 and 2 read the file alone.  These checks look at what it names: the ``[keys]`` file
and the leap-seconds file (read here, with the config), the groups of ``[control]``, the
directory of the measurement logs, the PEM files of ``[[nts-ke-server]]`` and
``[[tsq-server]]``, and a source's ``certificate-authority``.  Without them
``tsyncd --check`` said "configuration OK" and the daemon then refused to start (or, for a CA
file, an NTS source failed at its first key exchange).

They run wherever the config is read: ``tsyncd --check``, start-up, every reload and
``tsyncctl add`` (a ``certificate-authority``), so they are cheap and change nothing: files
are read, never written; a missing log directory is judged by its nearest existing parent
(the daemon makes it at start), never made.  They see the host as the user who runs them, so
``tsyncd --check`` run by root can pass where the daemon's own user (``User=tsyncd`` and
``ProtectSystem=strict`` in systemd/tsyncd.service) fails, and the reverse; a reload checks
as the daemon itself.

The same functions explain the daemon's own start-up failures (a file gone or changed since
the check), so those name the key and the file too, not an OpenSSL error list or a bare errno.
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from tsyncd.config_fields import ConfigError
from tsyncd.groups import group_expected, group_id, group_unjoined

__all__ = [
    "KEYS_UNREADABLE",
    "check_host",
    "check_server_credentials",
    "check_source_files",
    "credential_errors",
    "load_keys",
    "load_leap_table",
    "log_directory_error",
    "log_files",
    "pem_ca_problem",
]

Report = Callable[[str, object, str], None]  # (key path, value, expected)

# --- [control] groups -------------------------------------------------------------------------


def _check_group(key: str, name: str, report: Report, *, given: bool = False) -> None:
    """``name`` must exist; a group the socket is ``given`` to must also be one of ours unless
    we are root: without CAP_CHOWN (the unit grants none) chown only gives a file to a group
    its owner is in."""
    gid = group_id(name)
    if gid is None:
        report(key, name, group_expected(name))
    elif given and os.geteuid() != 0 and gid not in (os.getegid(), *os.getgroups()):
        report(key, name, group_unjoined(name))


def check_tsq_library(tables: Mapping[str, _Tables], report: Report) -> None:
    """TSQ needs aioquic (imported only when used, so only looked for here): the first TSQ
    server or source names the problem."""
    uses = [(f"{where}.transport", t.transport) for where, _, t in tables.get("tsq-server", ())]
    uses += [
        (f"{where}.mode", "tsq") for where, _, s in tables.get("source", ()) if s.mode == "tsq"
    ]
    if uses and importlib.util.find_spec("aioquic") is None:
        key, value = uses[0]
        report(key, value, f"the Python package aioquic installed ({AIOQUIC_HINT})")


AIOQUIC_HINT: Final = (
    "pip install aioquic; Debian 12 packages none: pip install --break-system-packages aioquic"
    " puts it in /usr/local for the system's python3, or run tsyncd from a virtualenv"
)


# --- [log] directory --------------------------------------------------------------------------

# File systems of the kernel's own objects, where nobody makes directories or log files: as
# root, access() says yes to them all the same (mkdir in /proc gives ENOENT).
_KERNEL_FILE_SYSTEMS: Final = frozenset(
    {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs",
     "configfs", "pstore", "bpf", "efivarfs", "binfmt_misc", "fusectl"}
)  # fmt: skip
_OCTAL_ESCAPE: Final = re.compile(r"\\([0-7]{3})")


def log_files(log: Any) -> list[str]:
    """The files a ``LogConfig`` has tsyncd write in its directory."""
    kinds = ("measurements", "statistics", "tracking")
    return [f"{kind}.log" for kind in kinds if getattr(log, kind)]


def _log_directory_expected(files: Sequence[str]) -> str:
    return f"a directory tsyncd can write {' and '.join(files)} in, or make"


def log_directory_error(
    config_path: Path, directory: Path, files: Sequence[str], exc: OSError
) -> str:
    """The daemon's start-up error when the measurement logs cannot be opened, in the
    config file's words."""
    what = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)
    expected = f"{_log_directory_expected(files)} ({what})"
    return str(ConfigError(config_path, "log.directory", str(directory), expected))


def _kernel_file_system(path: Path) -> str | None:
    """The type of the kernel file system ``path`` is on (``/proc/self/mountinfo``), or None."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        mount = _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), parts[4])
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, rest.split()[0]
    return kind if kind in _KERNEL_FILE_SYSTEMS else None


def _log_directory_problem(directory: Path, files: Sequence[str]) -> str | None:
    """Why tsyncd could not make ``directory`` (with its parents, as it does at start) or
    write ``files`` in it, found by looking only (stat, access); None if nothing is seen."""
    existing = directory
    while True:
        try:
            st = existing.stat()
            break
        except (FileNotFoundError, NotADirectoryError):  # a file on the way: found next
            if existing.parent == existing:
                return f"{existing}: No such file or directory"
            existing = existing.parent
        except OSError as exc:
            return f"{existing}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{existing} is not a directory"
    kernel = _kernel_file_system(existing)
    if kernel is not None:
        return f"{existing} is on the kernel's {kernel} file system"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    if existing != directory:
        return None  # the daemon makes the rest, and the files in it
    for name in files:
        path = directory / name
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        if stat.S_ISDIR(st.st_mode):
            return f"{path} is a directory"
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
    return None


# --- PEM files --------------------------------------------------------------------------------

_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_CERTIFICATE_LABELS: Final = (b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE")
_KEY_LABELS: Final = (
    b"PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"EC PRIVATE KEY",
    b"DSA PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
)
_CHAIN_EXPECTED: Final = "a readable PEM certificate chain"
_KEY_EXPECTED: Final = "a readable PEM private key"
_CA_EXPECTED: Final = "a readable PEM file of CA certificates"


class _Unusable(Exception):
    """A PEM file tsyncd cannot use; the message says why, for the parentheses of an error."""


def _pem_blocks(path: Path, labels: tuple[bytes, ...], what: str) -> list[re.Match[bytes]]:
    """The PEM blocks of ``path`` with one of ``labels``; ``_Unusable`` if there are none."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or /dev/zero would never end
            raise _Unusable("not a regular file")
        data = path.read_bytes()
    except OSError as exc:
        raise _Unusable(exc.strerror or str(exc)) from None
    blocks = [m for m in _PEM_BLOCK.finditer(data) if m[1] in labels]
    if not blocks:
        raise _Unusable(f"no PEM {what} in it")
    return blocks


def _certificates(path: Path) -> list[tuple[bytes, bytes]]:
    """(label, DER) of each PEM certificate in ``path``; ``_Unusable`` if there is none or
    one is not valid base64.  The DER itself is left to OpenSSL, which takes certificates that
    cryptography's stricter parser warns about (a CA's negative serial number)."""
    import base64  # on use: base64 would outlive this module (startup_imports.TRANSIENT)
    import binascii

    found = []
    for n, block in enumerate(_pem_blocks(path, _CERTIFICATE_LABELS, "certificate"), 1):
        try:
            found.append((block[1], base64.b64decode(b"".join(block[2].split()), validate=True)))
        except binascii.Error:
            raise _Unusable(f"its certificate {n} is not valid PEM (bad base64)") from None
    return found


def _public_key_der(der_certificate: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a certificate; ``_Unusable`` if it cannot be parsed."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecations about other people's certificates
            public = x509.load_der_x509_certificate(der_certificate).public_key()
        return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _Unusable(f"its certificate cannot be read: {exc}") from None


def _private_key_public_der(path: Path) -> bytes:
    """The SubjectPublicKeyInfo of the PEM private key in ``path``; ``_Unusable`` if there
    is none, it is encrypted (tsyncd asks for no password) or it cannot be read."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    block = _pem_blocks(path, _KEY_LABELS, "private key")[0]
    encrypted = "it is encrypted, and tsyncd takes no password"
    if block[1] == b"ENCRYPTED PRIVATE KEY":
        raise _Unusable(encrypted)
    try:
        key = load_pem_private_key(block[0], password=None)
    except TypeError:  # a traditional PEM key with Proc-Type: 4,ENCRYPTED
        raise _Unusable(encrypted) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _Unusable("its private key is malformed or of an unknown type") from None
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def check_server_credentials(where: str, chain: Path, key: Path, report: Report) -> None:
    """A TLS server's ``certificate-chain-path`` and ``private-key-path`` (of table
    ``where``): readable PEM, the key that of the chain's first certificate."""
    chain_key, key_key = f"{where}.certificate-chain-path", f"{where}.private-key-path"
    certificate = private = None
    try:
        label, der = _certificates(chain)[0]
        if label != b"TRUSTED CERTIFICATE":  # OpenSSL's own form, with trust settings after it
            certificate = _public_key_der(der)
    except _Unusable as exc:
        report(chain_key, str(chain), f"{_CHAIN_EXPECTED} ({exc})")
    try:
        private = _private_key_public_der(key)
    except _Unusable as exc:
        report(key_key, str(key), f"{_KEY_EXPECTED} ({exc})")
    if certificate is not None and private is not None and certificate != private:
        expected = "the private key of certificate-chain-path's certificate (it is another key)"
        report(key_key, str(key), expected)


def credential_errors(config_path: Path, where: str, chain: Path, key: Path) -> list[str]:
    """``check_server_credentials``'s errors as the config check words them: for the daemon,
    when OpenSSL refuses files that passed the check (or changed since)."""
    found: list[str] = []
    check_server_credentials(
        where, chain, key, lambda k, v, e: found.append(str(ConfigError(config_path, k, v, e)))
    )
    return found


def pem_ca_problem(path: Path) -> str | None:
    """What a ``certificate-authority`` of ``path`` expected instead, or None if it is one."""
    try:
        _certificates(path)
    except _Unusable as exc:
        return f"{_CA_EXPECTED} ({exc})"
    return None


# --- the whole file ---------------------------------------------------------------------------

_Tables = Sequence[tuple[str, Mapping[str, object], Any]]  # config._Parsed

KEYS_UNREADABLE: Final[Mapping[int, Any]] = MappingProxyType({})
"""``load_keys``'s answer when ``[keys] file`` is set but could not be read: that error is
reported, so a source's ``key`` is not checked against the file (it is not "empty")."""


def load_keys(tables: _Tables, report: Report) -> Mapping[int, Any] | None:
    """The keys of ``[keys] file`` (None when unset); a file that cannot be read or parsed is
    an error of ``keys.file``, one per bad line, and gives ``KEYS_UNREADABLE``."""
    if not tables or "file" not in tables[0][1]:
        return None
    path = tables[0][2].file
    if path is None:  # file = 7: reported in step 1
        return KEYS_UNREADABLE
    from tsyncd.symkey import KeyFileError, load_key_file  # hashlib only when keys are used

    try:
        return dict(load_key_file(path))
    except OSError as exc:
        report("keys.file", str(path), f"a readable key file ({exc.strerror or exc})")
    except KeyFileError as exc:
        for problem in exc.problems:
            report("keys.file", str(path), f"a key file in chrony's format ({problem})")
    except UnicodeDecodeError as exc:
        report("keys.file", str(path), f"a key file in chrony's format ({exc})")
    return KEYS_UNREADABLE


def load_leap_table(tables: _Tables, report: Report) -> Any:
    """The table of ``[synchronization] leap-seconds-file`` (None when unset); a file that
    cannot be read or parsed is an error of that key."""
    if not tables or tables[0][2].leap_seconds_file is None:
        return None
    path = tables[0][2].leap_seconds_file
    from tsyncd.sync.leapfile import parse_leap_seconds  # only when configured

    key = "synchronization.leap-seconds-file"
    try:
        return parse_leap_seconds(path.read_text(encoding="ascii"))
    except OSError as exc:
        report(key, str(path), f"a readable leap-seconds.list file ({exc.strerror or exc})")
    except (ValueError, UnicodeDecodeError) as exc:
        report(key, str(path), f"a file in the leap-seconds.list format ({exc})")
    return None


def check_source_files(where: str, source: Any, report: Report) -> None:
    """What a ``SourceConfig`` names on this host: its ``certificate-authority`` (TSQ, NTS)."""
    ca = source.certificate_authority
    if ca is not None and source.mode in ("tsq", "nts"):
        problem = pem_ca_problem(ca)
        if problem is not None:
            report(f"{where}.certificate-authority", str(ca), problem)


def check_host(tables: Mapping[str, _Tables], report: Report) -> None:
    """Step 3 over the tables that parsed (section name -> (key path, raw, dataclass))."""
    for where, _, control in tables.get("control", ()):
        for key, name in (("group", control.group), ("admin-group", control.admin_group)):
            if name is not None:
                _check_group(f"{where}.{key}", name, report, given=key == "group")
    for where, _, log in tables.get("log", ()):
        files = log_files(log)
        if files and log.directory is not None:
            problem = _log_directory_problem(log.directory, files)
            if problem is not None:
                expected = f"{_log_directory_expected(files)} ({problem})"
                report(f"{where}.directory", str(log.directory), expected)
    for section in ("nts-ke-server", "tsq-server"):
        for where, _, server in tables.get(section, ()):
            check_server_credentials(
                where, server.certificate_chain_path, server.private_key_path, report
            )
    for where, raw, keyset in tables.get("keyset", ()):
        if keyset.key_storage_path is not None:
            from tsyncd.nts.cookie import check_key_file  # NTS is configured: loaded anyway

            problem = check_key_file(keyset.key_storage_path, keyset.key_rotation_interval)
            if problem is not None:
                report(f"{where}.key-storage-path", raw["key-storage-path"], _usable(problem))
    for where, _, source in tables.get("source", ()):
        check_source_files(where, source, report)
    check_tsq_library(tables, report)


def _usable(problem: str) -> str:
    """``problem`` (a key file's) as what was expected instead."""
    return f"a usable NTS key file, or none yet ({problem})"
