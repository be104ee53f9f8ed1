"""``tsyncd -c CONFIG [--measure-only] [--check]``: the daemon's entry point.

The command line itself is in ``tsyncd.daemon_cli``; this module first imports asyncio without
the standard library's TLS (``tsyncd.startup_imports``), which must happen before anything else
imports asyncio.
"""

from __future__ import annotations

from tsyncd.startup_imports import import_asyncio_without_tls

import_asyncio_without_tls()

from tsyncd.daemon_cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    main()
