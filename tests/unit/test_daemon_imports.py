"""What the daemon loads to serve NTP: modules only some configurations need stay out.

Every module the main process imports is heap (and libraries) that each forked server worker
inherits and that the main process carries for its whole life (bench/README.md, "Server
memory").  This pins the imports that were removed so they do not creep back.
"""

from __future__ import annotations

import os
import subprocess
import sys

# Loaded only where used: multiprocessing (the worker pipe is our own, servers/pipe.py),
# tempfile (with shutil, bz2, lzma: the drift file imports it when it writes), click and what
# it brings (the daemon's command line is argparse; tsyncctl keeps click), fractions with
# decimal (the first combine of sources imports it), the TSQ codec (only TSQ servers use it).
_NOT_AT_START = (
    "fractions",
    "decimal",
    "tsyncd.wire.tsq",
    "systemd",  # systemd-python only under systemd ($NOTIFY_SOCKET set)
    "multiprocessing",
    "tempfile",
    "shutil",
    "bz2",
    "lzma",
    "click",
    "uuid",
    "platform",
    # The standard library's TLS (asyncio is imported without it: tsyncd/startup_imports.py) and
    # what maps libcrypto: hashlib (the IPv6 refid hash imports it when first used) and
    # secrets with hmac (the DNS query id comes from os.urandom).
    "ssl",
    "_ssl",
    "_hashlib",
    "hashlib",
    "hmac",
    "secrets",
)


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},  # not under systemd
    ).stdout
    return set(out.split())


def test_the_daemon_and_its_server_workers_import_none_of_the_optional_modules() -> None:
    loaded = _loaded_after(
        "import tsyncd.__main__, tsyncd.daemon, tsyncd.servers.worker, tsyncd.daemon_cli\n"
        "tsyncd.daemon_cli._parser().parse_args(['-c', 'tsyncd.toml'])\n"  # argparse: no shutil
        "tsyncd.sdnotify.Notifier()"
    )
    assert "tsyncd.daemon" in loaded  # the probe itself worked
    assert sorted(loaded & set(_NOT_AT_START)) == []


def test_tls_is_still_there_for_whoever_imports_it_later() -> None:
    """Only asyncio goes without: aioquic's ``import ssl`` after start-up loads the module."""
    loaded = _loaded_after(
        "import tsyncd.__main__, asyncio.base_events as b\n"
        "assert b.ssl is None, 'asyncio imported with TLS'\n"
        "import ssl\n"
        "ssl.create_default_context()"
    )
    assert {"ssl", "asyncio"} <= loaded
