"""What the daemon loads to serve NTP: modules only some configurations need stay out.

Every module the main process imports is heap (and libraries) that each forked server worker
inherits and that the main process carries for its whole life (bench/README.md, "Server
memory").  This pins the imports that were removed so they do not creep back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Loaded only where used: multiprocessing (the worker pipe is our own, servers/pipe.py),
# tempfile (with shutil, bz2, lzma: the drift file imports it when it writes), click and what
# it brings (the daemon's command line is argparse; tsyncctl keeps click), fractions with
# decimal (the first combine of sources imports it), the TSQ codec (only TSQ servers use it).
_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "demo-server.toml"
_NOT_AT_START = (
    # Start-up only, forgotten once the config file is read (startup_imports.TRANSIENT):
    "argparse",
    "gettext",
    "tomllib",
    "tsyncd.daemon_args",
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
        "import tsyncd.__main__, tsyncd.daemon_cli\n"
        f"tsyncd.daemon_cli._startup(['-c', {str(_CONFIG)!r}])\n"  # argparse: no shutil
        "import tsyncd.daemon, tsyncd.servers.worker\n"
        "tsyncd.sdnotify.Notifier()"
    )
    assert "tsyncd.daemon" in loaded  # the probe itself worked
    assert sorted(loaded & set(_NOT_AT_START)) == []


def test_start_up_forgets_the_command_line_and_toml_parsers_and_a_reload_still_reads() -> None:
    """startup_imports.TRANSIENT: gone once the config is read, and nothing of them kept (no
    class or function of theirs)."""
    loaded = _loaded_after(
        "import gc, tsyncd.__main__, tsyncd.daemon_cli\n"
        f"tsyncd.daemon_cli._startup(['-c', {str(_CONFIG)!r}])\n"
        "gone = ('argparse', 'tomllib', 'gettext', 'tsyncd.config_host',\n"
        "        'tsyncd.config_listen', 'tsyncd.config_names')\n"
        "kept = [o for o in gc.get_objects() if isinstance(o, type | type(gc.collect))\n"
        "        or callable(o) and hasattr(o, '__code__')]\n"
        "kept = [o for o in kept if str(getattr(o, '__module__', '')).startswith(gone)]\n"
        "assert kept == [], kept\n"
        "from tsyncd.config import load_config\n"  # a reload: the parser comes back
        f"assert load_config(__import__('pathlib').Path({str(_CONFIG)!r})).servers\n"
        "import tsyncd.startup_imports as s; s.forget_transient_modules()"
    )
    assert "tsyncd.daemon_cli" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in ("argparse", "tomllib", "gettext")) == []
    assert "tsyncd.daemon_args" not in loaded
    # The config's cross-table and host checks: only while a config is read.
    assert {"tsyncd.config_host", "tsyncd.config_listen", "tsyncd.config_names"} & loaded == set()


def test_tls_is_still_there_for_whoever_imports_it_later() -> None:
    """Only asyncio goes without: aioquic's ``import ssl`` after start-up loads the module."""
    loaded = _loaded_after(
        "import tsyncd.__main__, asyncio.base_events as b\n"
        "assert b.ssl is None, 'asyncio imported with TLS'\n"
        "import ssl\n"
        "ssl.create_default_context()"
    )
    assert {"ssl", "asyncio"} <= loaded
