"""What the daemon imports at start-up, and what it forgets again, for a smaller heap.

``import_asyncio_without_tls``: asyncio imported without the standard library's TLS, which
the daemon never uses.

asyncio's event-loop modules import ``ssl`` when they are first imported, for
``loop.create_connection(ssl=...)`` and TLS streams.  tsyncd does its TLS elsewhere: NTS-KE
through pyOpenSSL on memory BIOs, TSQ through aioquic.  Yet that one import costs a daemon
serving plain NTP about 4 MB, for life and in every forked server worker: the ``ssl`` module's
heap and libssl with libcrypto mapped (``python -m bench.memory``: PSS summed over the main
process and two workers 28.7 → 24.6 MB with this and ``hashlib`` imported lazily; bench/README.md,
"Server memory").

While asyncio is imported, ``sys.modules["ssl"]`` is None, so asyncio's own
``try: import ssl / except ImportError: ssl = None`` takes its no-TLS branch; the entry is
removed afterwards, so a later ``import ssl`` (aioquic's, prometheus-client's exporter) loads the
module as usual.  What is lost is only asyncio's built-in TLS, in this process.

``forget_transient_modules``: the modules only start-up needs (``TRANSIENT``) are dropped once
the config file is read, before the daemon's own modules are imported into the room they leave.
"""

from __future__ import annotations

import gc
import sys
from typing import Final

TRANSIENT: Final = (
    "tsyncd.daemon_args",
    "argparse",
    "gettext",
    "tomllib",
    "tomli",
    "tsyncd.config_host",
    "tsyncd.config_listen",
    "tsyncd.config_names",
)
"""Modules the daemon needs only while it starts (the command line, the TOML parser) or reloads
(the TOML parser, and the config's cross-table and host checks, imported only where a config is
read): about 1.2 MB of heap (argparse with gettext 0.7 MB, tomllib 0.35 MB, the checks 0.2 MB,
traced) that the main process and each forked server worker would otherwise carry for life.  Nothing
made with them may outlive that use (plain values only), and nothing else may import them."""


def import_asyncio_without_tls() -> None:
    """Import asyncio with ``ssl`` unavailable (nothing to do if either is loaded already)."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def forget_transient_modules() -> None:
    """Drop the ``TRANSIENT`` modules (and their submodules) from ``sys.modules`` and collect
    them, so the memory they held is reused by what is allocated next (the daemon's modules,
    imported after the config file is read).  Importing one again later (a reload reads the
    config file) loads it afresh, and it can be forgotten again."""
    dropped = [
        name
        for name in sys.modules
        if any(name == t or name.startswith(t + ".") for t in TRANSIENT)
    ]
    for name in dropped:
        module = sys.modules.pop(name)
        parent, _, child = name.rpartition(".")
        # A package keeps its imported submodules as attributes: let go of that link too.
        if parent in sys.modules and getattr(sys.modules[parent], child, None) is module:
            delattr(sys.modules[parent], child)
        del module  # not even this loop may hold one while they are collected
    if dropped:
        gc.collect()
