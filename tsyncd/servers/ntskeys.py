"""The NTS cookie key set as plain data, so the main process can hand it to its workers.

``KeySet`` holds cipher objects and cannot cross a pipe.  It does not need to: every key it
holds is the ratchet (RFC 8915 §6, ``tsyncd/nts/cookie.py``) of its oldest one, so the oldest
(epoch, key), the rotation interval and the current epoch rebuild the very same set in a
worker.  The main process pushes a ``KeyState`` whenever it rotates (``NtsServerSide.tick``)
or reloads (``tsyncctl rekey``), and a worker answers NTS requests with the keys of the last
state it got, as the event-loop server does with the main process's own set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported only by daemons that serve NTS
    from tsyncd.nts.cookie import KeySet


@dataclass(frozen=True, slots=True)
class KeyState:
    """What rebuilds a ``KeySet``: its oldest key, the rotation interval, the current epoch."""

    oldest_epoch: int
    oldest_key: bytes
    rotation_s: int
    current_epoch: int

    def keyset(self) -> KeySet:
        """The key set this state describes (the ratchet run forward from the oldest key)."""
        from tsyncd.nts.cookie import KeySet

        keys = KeySet(self.oldest_epoch, self.oldest_key, self.rotation_s)
        keys.advance(self.current_epoch * self.rotation_s)  # epoch_at() of that is current
        return keys


def key_state(keys: KeySet) -> KeyState:
    """The plain-data description of ``keys``."""
    epoch, key = keys.oldest
    return KeyState(epoch, key, keys.rotation_s, keys.current_epoch)
