"""NTS server side of the daemon: cookie keys, NTS-KE listeners, and the NTP hook.

One ``KeySet`` serves every NTS-KE listener (to make cookies) and every NTP server socket (to
open them).  The housekeeping tick calls ``tick`` to rotate the keys on schedule and save the
key file atomically; ``rekey`` (``tsyncctl rekey``) re-reads the file, which is how a fleet
picks up a key an operator distributed.  A missing file is an error there (the running keys
stay): a fleet member must not fork the fleet with a key of its own while the distributed
file is briefly absent.  Only without a key file at all does ``rekey`` draw a fresh random key.

A rotation never overwrites a file that changed since we read or wrote it (an operator's new
key, not yet rekeyed here): it loads it instead, so a member's rotation cannot undo a
distribution (QA s18 hunt-nts-server F1).  Members that ratchet the same file write the same
bytes, so one member's write is no change to the others.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from OpenSSL import SSL

from tsyncd.config import KeysetConfig, NtsKeServerConfig, ServerConfig
from tsyncd.net.sockets import listen_error
from tsyncd.net.tls import server_context
from tsyncd.nts.cookie import (
    KeyFileError,
    KeySet,
    keyset_file_bytes,
    load_keyset,
    new_keyset,
    save_keyset,
)
from tsyncd.nts.server import NtsResponder
from tsyncd.servers.credentials import Refused, ServedCredentials, reload_changed
from tsyncd.servers.keaccess import Ruled, ke_access, negotiated_port
from tsyncd.servers.ntske import NtsKeServer
from tsyncd.servers.ntskeys import KeyState, key_state
from tsyncd.servers.responder import NtpResponder
from tsyncd.servers.stats import NTS_SUMMED
from tsyncd.servers.workers import WorkerPool

log = logging.getLogger(__name__)


class NtsServerSide:
    """Keys, KE listeners and per-packet NTS for the daemon's servers."""

    def __init__(self, keyset: KeysetConfig, now_s: float) -> None:
        self._cfg = keyset
        self._seen: bytes | None = None  # the key file as we last read or wrote it
        self.keys = self._load(now_s)
        self.responders: list[NtsResponder] = []
        self.ke_servers: list[NtsKeServer] = []
        self._credentials: list[ServedCredentials] = []  # each listener's files, for reloads
        self.pools: list[WorkerPool] = []  # worker processes that got our keys (key_state)

    def _load(self, now_s: float, create: bool = True) -> KeySet:
        """The keys of the key file (``KeyFileError`` if unusable), else random ones."""
        path = self._cfg.key_storage_path
        interval = self._cfg.key_rotation_interval
        if path is None:
            return new_keyset(now_s, interval)
        keys = load_keyset(path, interval, now_s, create=create)
        self._seen = keys.file_bytes  # not read again: the file may change in between
        return keys

    def attach(self, responder: NtpResponder) -> None:
        """Let ``responder`` answer NTS requests with our keys."""
        nts = NtsResponder(self.keys)
        responder.extensions = nts
        self.responders.append(nts)

    def key_state(self) -> KeyState:
        """The current keys as plain data, for worker processes (``WorkerPool``)."""
        return key_state(self.keys)

    def attach_pool(self, pool: WorkerPool) -> None:
        """Keep ``pool``'s workers on our keys (it was started with ``key_state``)."""
        self.pools.append(pool)

    def _push_keys(self) -> None:
        state = self.key_state()
        for pool in self.pools:
            pool.set_keys(state)

    async def start_ke(
        self,
        cfg: NtsKeServerConfig,
        servers: Sequence[ServerConfig],
        running: Sequence[Ruled],
        where: str = "nts-ke-server",
    ) -> NtsKeServer:
        """Start one NTS-KE listener beside the config's ``servers``, whose running sockets
        are ``running`` (one per entry: a listener without its own allow/deny judges each
        client by the rules of the one its NTP will reach, ``keaccess``); ``OSError``/
        ``SSL.Error`` if it cannot (a bind failure names ``where``'s listen address)."""
        chain, key = cfg.certificate_chain_path, cfg.private_key_path
        served = ServedCredentials.watch(
            where, chain, key, lambda: server.use_context(server_context(chain, key))
        )
        ctx: SSL.Context = server_context(chain, key)
        server = NtsKeServer(
            ctx,
            lambda: self.keys,
            ntp_server=cfg.ntp_server,
            ntp_port=negotiated_port(cfg, servers),
            rate_limit=cfg.rate_limit,
            access=ke_access(cfg, servers, running),
        )
        try:
            await server.start(cfg.listen.host, cfg.listen.port)
        except OSError as exc:
            raise listen_error(f"{where}.listen", cfg.listen, exc) from exc
        self.ke_servers.append(server)
        self._credentials.append(served)
        log.info("serving NTS-KE on %s", server.listen)
        return server

    def reload_credentials(self, refused: Refused) -> tuple[list[str], list[str]]:
        """Load again the certificate chain and key of each NTS-KE listener whose files
        changed (a renewed certificate: ``systemctl reload`` from certbot's deploy hook), for
        the connections to come; those under way finish with the old.  (Listeners reloaded,
        why others could not be: ``refused(where, chain, key, exc)``, which keep their old
        files.)"""
        return reload_changed(self._credentials, refused, (SSL.Error,))

    def _install(self, keys: KeySet) -> None:
        self.keys = keys
        for nts in self.responders:
            nts.keys = keys
        self._push_keys()

    def tick(self, now_s: float) -> None:
        """Rotate the keys when their epoch is over; persist the new state.  The rotated key
        is logged and pushed to the workers only if it is what serves: a key file changed
        since it was read is taken up instead (``_save`` logs that key), and a "rotated" line
        naming a key replaced a moment later would show two current keys (QA s21 hunt-nts
        #5)."""
        if self.keys.advance(now_s) and not self._save(now_s):
            log.info(
                "NTS cookie key rotated (epoch %d, key %s)",
                self.keys.current_epoch,
                self.keys.key_id,
            )
            self._push_keys()

    def _save(self, now_s: float) -> bool:
        """Write the rotated keys, unless the file changed since we read or wrote it: then
        load it (``rekey``), as it is newer than what we hold; True if its keys serve now."""
        path: Path | None = self._cfg.key_storage_path
        if path is None:
            return False
        ours = keyset_file_bytes(self.keys)
        on_disk = _read(path)
        if on_disk == ours:  # another member of the fleet ratcheted it already
            self._seen = ours
            return False
        if on_disk is not None and self._seen is not None and on_disk != self._seen:
            try:
                keys = self._load(now_s, create=False)
            except KeyFileError as exc:
                log.warning(
                    "NTS key file %s changed since it was read and cannot be used (%s): not"
                    " overwritten; the running keys stay (epoch %d, key %s)",
                    path,
                    exc,
                    self.keys.current_epoch,
                    self.keys.key_id,
                )
                return False
            self._install(keys)
            log.warning(
                "NTS key file %s changed since it was read: its keys are in use now (epoch"
                " %d, key %s), not overwritten by the rotation (tsyncctl rekey loads a"
                " distributed file at once)",
                path,
                keys.current_epoch,
                keys.key_id,
            )
            return True
        try:
            save_keyset(path, self.keys)
        except OSError as exc:
            log.warning("cannot write the NTS key file %s: %s", path, exc)
            return False
        self._seen = ours
        return False

    def rekey(self, now_s: float) -> dict[str, object]:
        """Reload the key file (or draw a new random key without one); ``KeyFileError`` if
        the file is missing or unusable, the running keys kept."""
        keys = self._load(now_s, create=False)
        self._install(keys)
        log.info("NTS cookie keys reloaded (epoch %d, key %s)", keys.current_epoch, keys.key_id)
        path = self._cfg.key_storage_path
        return {
            "epoch": keys.current_epoch,
            "key_id": keys.key_id,
            "key_file": str(path) if path else None,
        }

    async def close(self) -> None:
        """Stop the KE listeners."""
        for server in self.ke_servers:
            await server.close()
        self.ke_servers.clear()
        self._credentials.clear()

    def counters(self) -> dict[str, object]:
        """NTS counters for ``serverstats``."""
        ke = [s.stats for s in self.ke_servers]
        pools = [pool.counters() for pool in self.pools]  # as the workers last pushed them
        remote = {key: sum(int(p.get(key, 0)) for p in pools) for key in NTS_SUMMED}
        return {
            "nts_ke_listen": [s.listen for s in self.ke_servers],
            "nts_ke_connections": sum(s.connections for s in ke),
            "nts_ke_completed": sum(s.completed for s in ke),
            "nts_ke_failures": sum(sum(s.failures.values()) for s in ke),
            "nts_ke_failures_by_reason": dict(sum((s.failures for s in ke), Counter())),
            "nts_ke_group": next((s.last_group for s in ke if s.last_group), None),
            "nts_ke_groups": dict(sum((s.groups for s in ke), Counter())),
            "nts_cookies_issued": sum(s.cookies_issued for s in ke)
            + sum(r.cookies_issued for r in self.responders)
            + remote["nts_cookies_issued"],
            "nts_requests": sum(r.requests for r in self.responders) + remote["nts_requests"],
            "nts_naks": sum(r.naks for r in self.responders) + remote["nts_naks"],
            "nts_key_epoch": self.keys.current_epoch,
            "nts_key_id": self.keys.key_id,
        }


def _read(path: Path) -> bytes | None:
    """The key file's bytes, or None if it cannot be read (absent, unreadable)."""
    try:
        return path.read_bytes()
    except OSError:
        return None
