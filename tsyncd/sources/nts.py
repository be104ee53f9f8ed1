"""An NTS source (RFC 8915): NTS-KE, then an NTP association whose packets carry NTS fields.

The NTP side is the ordinary association in the ``SyncCore``; this adapter only owns its
``NtsSession`` (set as the association's ``auth`` hook) and re-runs NTS-KE when the session
says so: cookies used up, or an NTS NAK.  Until a new KE succeeds the association sends
nothing (never plain NTP: that would be NTS stripping, §9); old cookies stay in use while KE
fails.  Failed KE attempts back off as §4.2 suggests (10 s · 1.5ⁿ, at most a day here), and
successful ones are at least ``_MIN_KE_INTERVAL_S`` apart, so forged NAKs cannot cause a storm.

With ``[nts-client] cookie-storage-path`` set, the session (keys, unused cookies, NTP server)
is saved on a clean exit and taken up again at start instead of a first NTS-KE
(``nts/saved.py`` says why and how).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Final

from tsyncd.config import SourceConfig
from tsyncd.nts.aead import aead_name
from tsyncd.nts.client import NtsSession
from tsyncd.nts.ke import KeOutcome
from tsyncd.nts.saved import SavedSession, decode_saved, encode_saved, saved_path
from tsyncd.snapshots import NtsSourceSnapshot, SourceSnapshot, pending_source_snapshot
from tsyncd.sources.ntske import KeFailure, KeResult, run_ke
from tsyncd.statefile import write_atomic
from tsyncd.sync.association import NtpAssociation

log = logging.getLogger(__name__)

_BACKOFF_FIRST_S: Final = 10.0
_BACKOFF_BASE: Final = 1.5
_BACKOFF_MAX_S: Final = 86400.0
_MIN_KE_INTERVAL_S: Final = 4.0  # a forged NAK (on-path) must not cause a KE storm (§5.7, §10)
_CHECK_S: Final = 0.25  # how often the KE task looks at the session between kicks


class NtsSource:
    """Keeps one NTS source keyed: first KE, re-KE on demand, state for ``tsyncctl peers``."""

    def __init__(self, cfg: SourceConfig, storage: Path | None = None) -> None:
        self.cfg = cfg
        self._saved = saved_path(storage, str(cfg.address)) if storage is not None else None
        self.session: NtsSession | None = None
        self.association: NtpAssociation | None = None
        self.last: KeResult | None = None
        self.ke_count = 0
        self.ke_failures = 0
        self.last_error: str | None = None
        self.unresolved: str | None = None  # why the NTP server the KE named does not resolve
        self._kick = asyncio.Event()
        self._last_ke_mono: float | None = None

    def restore(self) -> KeResult | None:
        """Take up the session saved at the last clean exit, if there is a usable one.

        The file is removed whatever it holds: its cookies are used from now on (or are
        useless), and must not be sent again after a crash."""
        path = self._saved
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the saved NTS session %s: %s", path, exc)
            return None
        try:
            path.unlink()
        except OSError as exc:  # never reuse cookies we could not take out of the file
            log.warning("not resuming from %s: cannot remove it: %s", path, exc)
            return None
        try:
            saved = decode_saved(data)
        except ValueError as exc:
            log.warning("ignoring the saved NTS session %s: %s", path, exc)
            return None
        if saved.ke_server != str(self.cfg.address) or not saved.cookies:
            return None
        aead = saved.aead
        outcome = KeOutcome(
            aead=aead,
            context_aead=aead,
            key_len=len(saved.c2s),
            server=saved.ntp_host,
            port=saved.ntp_port,
            cookies=saved.cookies,
        )
        result = KeResult(
            outcome=outcome,
            c2s=saved.c2s,
            s2c=saved.s2c,
            ntp_host=saved.ntp_host,
            ntp_port=saved.ntp_port,
            group=None,  # no TLS this time
            finished_s=saved.ke_s,
        )
        self.session = NtsSession(aead, saved.c2s, saved.s2c, list(saved.cookies))
        self.last = result
        log.info(
            "NTS: %s resumes with %d saved cookies (AEAD %s, NTP at %s:%d), no NTS-KE",
            self.cfg.name,
            len(saved.cookies),
            aead_name(aead),
            saved.ntp_host,
            saved.ntp_port,
        )
        return result

    def save(self) -> None:
        """Keep the session's unused cookies and keys for the next start (``restore``)."""
        path, s, last = self._saved, self.session, self.last
        if path is None or s is None or last is None or not s.cookies:
            return
        saved = SavedSession(
            ke_server=str(self.cfg.address),
            ntp_host=last.ntp_host,
            ntp_port=last.ntp_port,
            aead=s.aead.aead_id,
            c2s=s.c2s,
            s2c=s.s2c,
            cookies=tuple(s.cookies),
            ke_s=last.finished_s,
        )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, encode_saved(saved))
        except OSError as exc:
            log.warning("cannot save the NTS session to %s: %s", path, exc)
            return
        log.info("NTS: saved %d cookies of %s to %s", len(s.cookies), self.cfg.name, path)

    async def key_exchange(self) -> KeResult:
        """One NTS-KE; on success the new session replaces the old (and its cookies)."""
        host, port = self.cfg.address.host, self.cfg.address.port
        result = await run_ke(host, port, self.cfg.certificate_authority)
        session = NtsSession(
            result.outcome.aead, result.c2s, result.s2c, list(result.outcome.cookies)
        )
        if self.session is not None:
            session.counters = self.session.counters  # cumulative across key exchanges
        self.session = session
        if self.association is not None:
            self.association.auth = session
        self.last = result
        self._last_ke_mono = time.monotonic()
        self.ke_count += 1
        self.last_error = self.unresolved = None
        log.info(
            "NTS-KE with %s: AEAD %s, %d cookies, NTP at %s:%d, TLS group %s",
            self.cfg.name,
            aead_name(result.outcome.aead),
            len(result.outcome.cookies),
            result.ntp_host,
            result.ntp_port,
            result.group,
        )
        return result

    async def key_exchange_until_ok(self) -> KeResult:
        """Retry NTS-KE with back-off until it works (cancel the task to give up)."""
        failures = 0
        while True:
            try:
                return await self.key_exchange()
            except KeFailure as exc:
                failures += 1
                self.ke_failures += 1
                self.last_error = str(exc)
                delay = min(_BACKOFF_FIRST_S * _BACKOFF_BASE ** (failures - 1), _BACKOFF_MAX_S)
                log.warning("%s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)

    def ntp_server_unresolved(self, exc: OSError) -> None:
        """The NTP server the last NTS-KE named (or the saved session's) does not resolve."""
        self.unresolved = str(exc)

    def kick(self) -> None:
        """Wake the maintenance task (after a poll or a reply)."""
        if self.session is None or self.session.needs_ke:
            self._kick.set()

    async def maintain(self) -> KeResult:
        """Re-key whenever the session asks for it; return the result of a new NTS-KE that
        sends NTP elsewhere (Server/Port Negotiation, RFC 8915 §4.1.7-8: the KE server's
        answer may change, e.g. when an operator moves clients), for the caller to follow."""
        while True:
            self._kick.clear()
            if self.session is None or self.session.needs_ke:
                if self._last_ke_mono is not None:
                    wait_s = self._last_ke_mono + _MIN_KE_INTERVAL_S - time.monotonic()
                    if wait_s > 0:
                        await asyncio.sleep(wait_s)
                before = self.last
                result = await self.key_exchange_until_ok()
                if before is not None and (result.ntp_host, result.ntp_port) != (
                    before.ntp_host,
                    before.ntp_port,
                ):
                    return result
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), _CHECK_S)

    def snapshot(self) -> NtsSourceSnapshot:
        """What ``tsyncctl peers`` shows about NTS for this source."""
        s, last = self.session, self.last
        return NtsSourceSnapshot(
            ke_server=str(self.cfg.address),
            cookies=len(s.cookies) if s is not None else 0,
            aead=aead_name(last.outcome.aead) if last is not None else None,
            last_ke=time.time() - last.finished_s if last is not None else None,
            tls_group=last.group if last is not None else None,
            key_exchanges=self.ke_count,
            ke_failures=self.ke_failures,
            last_error=self.last_error,
            authenticated=s.counters.authenticated if s is not None else 0,
            naks=s.counters.naks if s is not None else 0,
        )

    def _pending_reason(self) -> str:
        """Why a source without an association has none yet."""
        if self.last_error:
            return f"NTS-KE failed: {self.last_error}"
        if self.unresolved and self.last is not None:
            return (
                f"NTS-KE done; cannot resolve the NTP server {self.last.ntp_host} it named: "
                f"{self.unresolved}"
            )
        return "waiting for NTS-KE"

    def pending_snapshot(self) -> SourceSnapshot:
        """A ``peers`` row for a source that has no NTP association yet (first NTS-KE)."""
        return pending_source_snapshot(
            self.cfg.name,
            "nts",
            self._pending_reason(),
            self.cfg.min_poll,
            # selectdata: "?" out for its own reason (a failed KE, an NTP server name that
            # does not resolve), "M" nothing measured yet
            select_code="?" if self.last_error or self.unresolved else "M",
            nts=self.snapshot(),
        )
