"""The certificate chain and key files a TLS listener serves, loaded again when they change.

A renewal (certbot's deploy hook running ``systemctl reload tsyncd``) writes new files at the
same paths.  On a reload each listener whose files' contents changed loads them again for the
connections to come; those under way finish with the old ones.  Both TLS servers use this: the
NTS-KE listeners (pyOpenSSL contexts, ``servers/nts.py``) and the TSQ servers (aioquic
configurations, ``servers/tsq_setup.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Why a listener's renewed files could not be used, worded for the operator:
# refused(where, certificate_chain_path, private_key_path, exc).
Refused = Callable[[str, Path, Path, Exception], str]


def files_digest(chain: Path, key: Path) -> bytes:
    """A digest of the chain and key files as they are now (OSError if unreadable)."""
    import hashlib  # only where TLS is served (the daemon does not load it otherwise)

    digest = hashlib.sha256()
    for path in (chain, key):
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.digest()


@dataclass(slots=True)
class ServedCredentials:
    """One listener's files and what they held when last loaded.

    Make it (``watch``) *before* loading the files at start, so that a change between the two
    is seen by the next reload rather than missed."""

    where: str  # the listener as the config names it: "nts-ke-server[0]", "tsq-server[1]"
    chain: Path
    key: Path
    use: Callable[[], None]  # load the files again and serve them from the next connection on
    digest: bytes

    @classmethod
    def watch(
        cls, where: str, chain: Path, key: Path, use: Callable[[], None]
    ) -> ServedCredentials:
        """The files as they are now; OSError if unreadable."""
        return cls(where, chain, key, use, files_digest(chain, key))


def reload_changed(
    served: Iterable[ServedCredentials],
    refused: Refused,
    errors: tuple[type[Exception], ...],
) -> tuple[list[str], list[str]]:
    """Load again the files of each listener whose files changed (same paths, new contents).

    (The listeners reloaded, why others could not be: ``refused``'s words for an ``OSError``
    or one of ``errors`` raised by reading or loading the files; those keep their old ones.)
    """
    reloaded: list[str] = []
    failed: list[str] = []
    for entry in served:
        try:
            now = files_digest(entry.chain, entry.key)
            if now == entry.digest:
                continue
            entry.use()
        except Exception as exc:
            if not isinstance(exc, (OSError, *errors)):
                raise
            failed.append(refused(entry.where, entry.chain, entry.key, exc))
            continue
        entry.digest = now
        reloaded.append(entry.where)
        log.info("%s: certificate and key reloaded from %s", entry.where, entry.chain)
    return reloaded, failed
