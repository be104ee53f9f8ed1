"""asyncio imported without the standard library's TLS, which the daemon never uses.

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
"""

from __future__ import annotations

import sys


def import_asyncio_without_tls() -> None:
    """Import asyncio with ``ssl`` unavailable (nothing to do if either is loaded already)."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]
