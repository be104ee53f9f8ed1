"""An NTS source (RFC 8915): NTS-KE, then an NTP association whose packets carry NTS fields.

The NTP side is the ordinary association in the ``SyncCore``; this adapter only owns its
``NtsSession`` (set as the association's ``auth`` hook) and re-runs NTS-KE when the session
says so: cookies used up, or dropped after an NTS NAK.  Until a new KE succeeds the association
sends nothing (never plain NTP: that would be NTS stripping, §9).

It also runs NTS-KE when the keys are older than ``[nts-client] key-refresh-interval``
(chrony's ``ntsrefresh``): otherwise a server that keeps refilling cookies would let one TLS
handshake's keys serve for ever, and the server's certificate would never be checked again
(expired, revoked, or no longer trusted).  Unlike chrony, which drops the cookies first, the
old session keeps polling until the new NTS-KE works (at most until the keys are twice the
interval old), so time keeps flowing; a failing refresh
backs off as any failing NTS-KE does, and ``tsyncctl peers`` says so.  The keys' age is kept on
the monotonic clock, so a step of the system clock does not change it.  The twice-the-interval
limit is a deadline of the KE task, not of the back-off: keys reaching it are dropped then, in
the middle of a back-off wait or of an NTS-KE attempt (QA s21 hunt-nts #3: they used to serve
until the next failed attempt, up to a day late), and a saved session that old is not resumed.

An NTS-KE counts as good only once an authenticated NTP response follows it, as chrony's
``nke_attempts`` is reset only in ``NNC_CheckResponseAuth``: a KE server whose NTP server NAKs
every cookie (the two do not share cookie keys, a real misconfiguration) must not get a TLS
handshake per poll.  So every attempt since the last authenticated response, failed or not,
backs off as §4.2 suggests (10 s · 1.5ⁿ⁻¹, at most a day here), and attempts are at least
``_MIN_KE_INTERVAL_S`` apart in any case, so forged NAKs cannot cause a storm either.
``tsyncctl peers`` shows a source waiting out its back-off, with why.

With ``[nts-client] cookie-storage-path`` set, the session (keys, unused cookies, NTP server)
is saved on a clean exit and taken up again at start instead of a first NTS-KE
(``nts/saved.py`` says why and how), unless the source's ``certificate-authority`` is not the
one the keys were made under, or its keys are twice ``key-refresh-interval`` old or more (they
would be dropped at once; past the interval alone they resume and are refreshed at once, the
old keys serving until that works).  Its age carries over: a saved KE time in the future (a clock
that was wrong then, or stepped back since) counts as now, as chrony clamps it; so do the TLS
group and the NTS-KE server address of the handshake that made the keys.

``tsyncctl refresh`` resolves the NTS-KE server's name again (``name_resolved``), as chronyc's
refresh does for NTS sources: if the address the keys came from is no longer among the answers
the source runs NTS-KE again at once, through the key-refresh path (the old keys serve until
the new NTS-KE works); if it still is, nothing changes.  So that the refresh and the NTS-KE
agree on what the name gives, the NTS-KE connects to the addresses the daemon's resolver gives
(``[resolver] servers`` when set), in turn, as a connection by name would.

An NTS-KE counts as a success (``key_exchanges``) only once the daemon's ``vet`` finds the NTP
server it named free to poll: one whose server another source polls already gives keys that are
never used, so it counts as a failed attempt (an alert on failures sees a source stuck so), and
keys that are not used (dropped for that, or at the age limit) show no age.

The counters (NTS-KEs, failed ones, NAKs, authenticated responses) live in an ``NtsTally`` the
daemon keeps per source name for its lifetime: a reload that restarts the source (or tsyncctl
delete then add) continues them, so ``tsyncctl authdata`` and the Prometheus counters never go
back; a daemon restart starts them at 0, as chronyd's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tsyncd.asyncwait import wait_for
from tsyncd.config import NTS_KEY_REFRESH_S, SourceConfig
from tsyncd.net.udp import is_ip_literal, listen_text
from tsyncd.nts.aead import aead_name
from tsyncd.nts.client import NtsCounters, NtsSession
from tsyncd.nts.ke import KeOutcome
from tsyncd.nts.saved import (
    SavedSession,
    decode_saved,
    encode_saved,
    saved_path,
    trust_fingerprint,
    trust_text,
)
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
_IN_USE: Final = "its NTP server is polled by another source"

Resolve = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> its IP addresses
# The daemon's check of the NTP server an NTS-KE named: who polls it already (None: it is free).
Vet = Callable[[KeResult], Awaitable[str | None]]


@dataclass(slots=True)
class NtsTally:
    """One NTS source's counters for the daemon's lifetime (``tsyncctl authdata``, metrics),
    kept by the daemon per source name so a restart of the source within the process (a
    reload) does not take them back; every session of the source counts into ``packets``."""

    key_exchanges: int = 0  # successful NTS-KEs
    ke_failures: int = 0  # failed NTS-KE attempts
    packets: NtsCounters = field(default_factory=NtsCounters)


class NtsSource:
    """Keeps one NTS source keyed: first KE, re-KE on demand, state for ``tsyncctl peers``."""

    def __init__(
        self,
        cfg: SourceConfig,
        storage: Path | None = None,
        *,
        refresh_s: float = NTS_KEY_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tally: NtsTally | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        """``refresh_s``: NTS-KE again once the keys are this old.  ``clock`` (monotonic s) and
        ``sleep`` time the NTS-KE back-off and the keys' age (tests pass their own).  ``tally``:
        the counters to continue (a new one if None).  ``resolve``: the daemon's resolver, which
        gives the NTS-KE server's addresses (None: connect by name)."""
        self.cfg = cfg
        self.tally = NtsTally() if tally is None else tally
        self._resolve = resolve
        self._saved = saved_path(storage, str(cfg.address)) if storage is not None else None
        self.session: NtsSession | None = None
        self.association: NtpAssociation | None = None
        self.last: KeResult | None = None
        self.last_error: str | None = None
        self.unresolved: str | None = None  # why the NTP server the KE named does not resolve
        # Who polls the NTP server the KE named, if another source does (kept until an NTS-KE
        # names one that is free, for peers and to say it once in the log).
        self.in_use: str | None = None
        self._kick = asyncio.Event()
        self._retry = asyncio.Event()  # set by retry_now: a back-off ends early
        self._clock = clock
        self._sleep = sleep
        self._last_attempt_mono: float | None = None  # when the last NTS-KE attempt ended
        self._attempts = 0  # NTS-KE attempts since an authenticated response (chrony's)
        # The counters when the last KE's session began (a carried-over tally's, at first).
        self._seen_at_attempt = dataclasses.replace(self.tally.packets)
        self._ke_session: NtsSession | None = None  # the last attempt's session, if it worked
        self._refresh_s = refresh_s
        self._keys_mono: float | None = None  # monotonic s of the NTS-KE that gave the keys
        self._retired = False  # the keys in use reached twice refresh_s and were dropped
        self._vetting = False  # an NTS-KE that worked waits for vet, not counted yet
        self._trust: str | None = None  # trust_fingerprint they were made under
        # Why tsyncctl refresh wants an NTS-KE now (the name no longer gives the address the
        # keys came from); None once one has worked.
        self._moved: str | None = None

    @property
    def ke_count(self) -> int:
        """Successful NTS-KEs (in this daemon's life, ``NtsTally``)."""
        return self.tally.key_exchanges

    @property
    def ke_failures(self) -> int:
        """Failed NTS-KE attempts (in this daemon's life, ``NtsTally``)."""
        return self.tally.ke_failures

    def _new_session(self, aead: int, c2s: bytes, s2c: bytes, cookies: list[bytes]) -> NtsSession:
        """A session with these keys and cookies that counts into the source's tally."""
        session = NtsSession(aead, c2s, s2c, cookies)
        session.counters = self.tally.packets
        return session

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
        untrusted = self._untrusted(saved.trust)
        if untrusted is not None:
            log.info(
                "NTS: %s does not resume the session saved in %s: %s; running NTS-KE",
                self.cfg.name,
                path,
                untrusted,
            )
            return None
        now_s = time.time()
        ke_s = min(saved.ke_s, now_s)  # in the future: now (chrony's load_cookies clamps it)
        if now_s - ke_s >= self._limit_s:
            log.info(
                "NTS: %s does not resume the session saved in %s: its keys are %s old, twice "
                "key-refresh-interval (%.0f s) or more; running NTS-KE",
                self.cfg.name,
                path,
                _age_text(now_s - ke_s),
                self._refresh_s,
            )
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
            group=saved.group,  # of the handshake that made the keys (no TLS this time)
            finished_s=ke_s,
            ke_address=saved.ke_address,
        )
        self.session = self._new_session(aead, saved.c2s, saved.s2c, list(saved.cookies))
        self.last = result
        self._keys_mono = self._clock() - (now_s - ke_s)
        self._trust = saved.trust
        log.info(
            "NTS: %s resumes with %d saved cookies (AEAD %s, NTP at %s, keys %s old), no NTS-KE",
            self.cfg.name,
            len(saved.cookies),
            aead_name(aead),
            listen_text(saved.ntp_host, saved.ntp_port),
            _age_text(now_s - ke_s),
        )
        return result

    def _untrusted(self, saved: str | None) -> str | None:
        """Why a session whose keys were made under trust ``saved`` (its ``trust_fingerprint``)
        must not be resumed by this source, or None: its server certificate was checked
        against something this source may no longer trust."""
        if saved is None:
            return (
                "the file does not say which certificate authority the server was checked "
                "against (written by an older tsyncd)"
            )
        ca = self.cfg.certificate_authority
        now = trust_fingerprint(ca)
        if now is None:
            return f"cannot read certificate-authority = {ca}"
        if now != saved:
            return (
                f"the server was checked against {trust_text(saved)}; the source now trusts "
                f"{trust_text(now)}"
            )
        return None

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
            trust=self._trust,
            group=last.group,
            ke_address=last.ke_address,
        )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, encode_saved(saved))
        except OSError as exc:
            log.warning("cannot save the NTS session to %s: %s", path, exc)
            return
        log.info("NTS: saved %d cookies of %s to %s", len(s.cookies), self.cfg.name, path)

    async def key_exchange(self) -> KeResult:
        """One NTS-KE; on success the new session replaces the old (and its cookies).  Not
        counted yet: ``key_exchange_until_ok`` counts it once the NTP server it named is
        found free to poll."""
        host, port = self.cfg.address.host, self.cfg.address.port
        ca = self.cfg.certificate_authority
        # Read before the KE: a CA file changed meanwhile then fails the next resume, rather
        # than vouching for keys checked against its old contents.
        trust = trust_fingerprint(ca)
        moved = self._moved  # a tsyncctl refresh during this NTS-KE must not be lost
        result = await run_ke(host, port, ca, connect_host=await self._ke_addresses())
        session = self._new_session(
            result.outcome.aead, result.c2s, result.s2c, list(result.outcome.cookies)
        )
        self.session = self._ke_session = session
        self._seen_at_attempt = dataclasses.replace(session.counters)
        self._keys_mono = self._clock()
        self._retired = False
        self._trust = trust
        if self.association is not None:
            self.association.auth = session
        self.last = result
        self.last_error = self.unresolved = None
        if self._moved is moved:  # else a refresh came meanwhile: this NTS-KE may predate it
            self._moved = None
        log.info(
            "NTS-KE with %s: AEAD %s, %d cookies, NTP at %s, TLS group %s",
            self.cfg.name,
            aead_name(result.outcome.aead),
            len(result.outcome.cookies),
            listen_text(result.ntp_host, result.ntp_port),
            result.group,
        )
        return result

    async def _ke_addresses(self) -> list[str] | None:
        """Where the NTS-KE connects: the addresses the daemon's resolver gives the server's
        name now, in its order (None: by name, or the configured IP); KeFailure if none."""
        host, port = self.cfg.address.host, self.cfg.address.port
        if self._resolve is None or is_ip_literal(host):
            return None
        try:
            return await self._resolve(host, port)
        except OSError as exc:
            raise KeFailure(f"cannot resolve NTS-KE server {self.cfg.address}: {exc}") from exc

    def name_resolved(self, ips: list[str]) -> str:
        """``tsyncctl refresh``: the NTS-KE server's name gives ``ips`` now.  If the address
        the keys came from is not among them, NTS-KE again at once (the old keys serve until it
        works, as for a key refresh); else nothing changes.  What was done, for the log."""
        host, last = self.cfg.address.host, self.last
        if last is None:  # no keys yet: the next NTS-KE resolves the name anyway
            waited = self.retry_now()
            return f"no NTS-KE has worked yet{'; NTS-KE now' if waited else ''}"
        if last.ke_address is not None and last.ke_address in ips:
            if self.in_use is not None:  # its keys were dropped: there are none to keep
                return (
                    f"{host} still resolves to {last.ke_address}, its NTS-KE server; no keys "
                    f"in use ({_IN_USE}: {self.in_use}), the next NTS-KE resolves it again"
                )
            return (
                f"{host} still resolves to {last.ke_address}, its NTS-KE server; keeping its keys"
            )
        if last.ke_address is None:
            why = "which NTS-KE server address its keys came from is not known (an older file)"
        else:
            why = f"{host} no longer resolves to {last.ke_address}, where its keys came from"
        self._moved = f"{why} (now {', '.join(ips)})"
        self.retry_now()  # a back-off (a failing NTS-KE) ends too
        self.kick()
        s = self.session
        serving = ", the old keys serve until it works" if s and not s.needs_ke else ""
        return f"{self._moved}; NTS-KE again now{serving}"

    async def key_exchange_until_ok(self, vet: Vet | None = None) -> KeResult:
        """NTS-KE, retried until it works (cancel the task to give up); every attempt first
        waits out ``ke_wait_s``.  ``vet`` (the daemon's) says who polls the NTP server an
        NTS-KE named, if another source does: that NTS-KE counts as failed (its keys are
        dropped) and the next waits out the back-off, in case it names another server.  It is
        not asked about the server the source polls already (a key refresh naming it again).
        Keys serving meanwhile are dropped once they are twice ``refresh_s`` old."""
        while True:
            self._retire_stale_keys()
            wait_s = self.ke_wait_s()
            backoff = self._backoff()
            if backoff is not None and self.last_error is None:  # failures say it themselves
                log.warning("NTS: %s: %s; next NTS-KE in %.0f s", self.cfg.name, backoff[1], wait_s)
            if wait_s > 0:
                await self._wait_retiring(wait_s)
            if not self._online():  # tsyncctl offline meanwhile: no NTS-KE until online
                while not self._online():
                    self._retire_stale_keys()
                    await self._wait(_CHECK_S)
                continue  # the back-off and the stale keys again, from now
            self._attempts = self.attempts() + 1
            self._ke_session = None  # until this attempt gives a session
            polled = self.last if self.association is not None else None
            try:
                result = await self._retiring_meanwhile(self.key_exchange())
            except KeFailure as exc:
                self.tally.ke_failures += 1
                self.last_error = str(exc)
                log.warning("%s; retrying in %.0f s", exc, self._ke_interval_s())
                continue
            finally:
                self._last_attempt_mono = self._clock()
            same = polled is not None and _ntp_server(polled) == _ntp_server(result)
            self._vetting = True
            try:
                users = None if vet is None or same else await vet(result)
            finally:
                counted, self._vetting = not self._vetting, False
            if users is None:
                self.tally.key_exchanges += 0 if counted else 1
                self.in_use = None
                return result
            if not counted:
                self.tally.ke_failures += 1
            self.ntp_server_in_use(users)

    def _online(self) -> bool:
        """The source may send (no association yet counts as online: the daemon starts an
        ``offline = true`` source's NTS-KE only once it is online)."""
        a = self.association
        return a is None or a.online

    async def _wait(self, wait_s: float) -> bool:
        """Wait out a back-off, or until ``retry_now`` (tsyncctl burst) ends it: True then.  A
        sleep a test passed is awaited as it is (it moves a fake clock)."""
        if self._sleep is not asyncio.sleep:
            await self._sleep(wait_s)
            return False
        self._retry.clear()
        with contextlib.suppress(TimeoutError):
            await wait_for(self._retry.wait(), wait_s)
        return self._retry.is_set()

    async def _wait_retiring(self, wait_s: float) -> None:
        """``_wait`` for ``wait_s``, dropping the keys in use at their age limit if it comes
        first (then waiting out the rest)."""
        left = self._limit_in_s()
        if left is not None and left < wait_s:
            if await self._wait(left):
                return
            self._retire_stale_keys(due=True)
            wait_s -= left
        await self._wait(wait_s)

    async def _retiring_meanwhile(self, attempt: Awaitable[KeResult]) -> KeResult:
        """Await an NTS-KE ``attempt`` (up to ``KE_TIMEOUT_S`` in all, every address tried
        within it), dropping the keys in use if they reach their age limit before it ends: a
        hung server must not keep them serving.  The limit is timed on the event loop's clock,
        the monotonic one ``clock`` is by default."""
        left = self._limit_in_s()
        if left is None:
            return await attempt
        timer = asyncio.get_running_loop().call_later(
            left, functools.partial(self._retire_stale_keys, due=True)
        )
        try:
            return await attempt
        finally:
            timer.cancel()

    def retry_now(self) -> bool:
        """``tsyncctl burst`` on a source whose NTS-KE waits out a back-off: it starts now (an
        operator who just fixed the server expects that); True if one was waiting."""
        if self._backoff() is None:
            return False
        self._retry.set()
        return True

    @property
    def _limit_s(self) -> float:
        """The age at which keys are dropped, whether an NTS-KE has worked since or not."""
        return 2 * self._refresh_s

    def _limit_in_s(self) -> float | None:
        """Seconds until the keys in use reach ``_limit_s`` (None: no keys in use)."""
        s, age = self.session, self.key_age_s()
        if s is None or s.needs_ke or age is None:
            return None
        return max(0.0, self._limit_s - age)

    def _retire_stale_keys(self, *, due: bool = False) -> None:
        """Stop using keys twice ``refresh_s`` old (or now, ``due``: their deadline passed)
        while no NTS-KE works: the old keys serve a failing refresh for a while (time keeps
        flowing), not for ever, as the server's certificate may have expired or been revoked
        since (chrony drops them at once)."""
        s, age = self.session, self.key_age_s()
        if s is None or s.needs_ke or age is None or (age < self._limit_s and not due):
            return
        log.warning(
            "NTS: %s keys are %s old, twice key-refresh-interval, and no NTS-KE has worked "
            "since: no longer used",
            self.cfg.name,
            _age_text(age),
        )
        s.discard()
        self._keys_mono = None  # not in use: no age to show
        self._retired = True

    def attempts(self) -> int:
        """NTS-KE attempts since the last authenticated NTP response (chrony's nke_attempts):
        0 once the server has answered us, so it counts KEs that did not lead anywhere.  Only
        an answer to the last attempt's keys counts: while a key refresh fails, the old keys'
        answers must not make every retry look like the first (4 s apart)."""
        s = self.session
        if (
            s is not None
            and s is self._ke_session
            and s.counters.authenticated > self._seen_at_attempt.authenticated
        ):
            return 0
        return self._attempts

    def _ke_interval_s(self) -> float:
        """How long after the end of the last attempt the next NTS-KE may start."""
        n = self.attempts()
        if n == 0:
            return _MIN_KE_INTERVAL_S
        backoff = min(_BACKOFF_FIRST_S * _BACKOFF_BASE ** (n - 1), _BACKOFF_MAX_S)
        return max(backoff, _MIN_KE_INTERVAL_S)

    def ke_wait_s(self) -> float:
        """Seconds until the next NTS-KE may start (0: now)."""
        if self._last_attempt_mono is None:
            return 0.0
        return max(0.0, self._last_attempt_mono + self._ke_interval_s() - self._clock())

    def key_age_s(self) -> float | None:
        """Seconds since the NTS-KE that gave the keys in use (a saved one's included); None
        before one, and while the last keys are not used (dropped at the age limit, or their
        NTP server is polled by another source)."""
        return None if self._keys_mono is None else self._clock() - self._keys_mono

    def _refresh_due(self) -> bool:
        """The keys are ``refresh_s`` old or older, or tsyncctl refresh found the name no
        longer gives their NTS-KE server, and the source is online (an offline one does no
        NTS-KE)."""
        age, a = self.key_age_s(), self.association
        old = age is not None and age >= self._refresh_s
        return (old or self._moved is not None) and a is not None and a.online

    def _backoff(self) -> tuple[float, str] | None:
        """(s to wait, why) while a wanted NTS-KE waits out a back-off; None otherwise."""
        s = self.session
        refreshing = s is not None and not s.needs_ke  # the old keys serve meanwhile
        if refreshing and not self._refresh_due():
            return None
        wait_s = self.ke_wait_s()
        if wait_s <= 0 or self.attempts() == 0:
            return None
        if self.last_error is not None:
            if refreshing:
                return wait_s, "key refresh failed (old keys in use)"
            if self._retired:
                return wait_s, "key refresh failed (old keys dropped at twice key-refresh-interval)"
            return wait_s, "NTS-KE failed"
        if self.in_use is not None:
            return wait_s, _IN_USE
        if s is not None and s.counters.naks > self._seen_at_attempt.naks:
            return wait_s, "NAKed after NTS-KE"
        return wait_s, "no authenticated reply after NTS-KE"

    def ntp_server_unresolved(self, exc: OSError) -> None:
        """The NTP server the last NTS-KE named (or the saved session's) does not resolve.  An
        NTS-KE waiting for ``vet`` counts as done now (its keys serve once the name resolves),
        not as pending for as long as DNS fails."""
        self.unresolved = str(exc)
        if self._vetting:
            self._vetting = False
            self.tally.key_exchanges += 1

    def ntp_server_in_use(self, users: str) -> None:
        """Another source polls the NTP server the last NTS-KE named (or the saved session's),
        ``users`` says who: these keys will not be used, NTS-KE again (after the back-off)."""
        self.in_use = users
        if self.session is not None:
            self.session.discard()
        self._keys_mono = None  # these keys are not used: no age to show

    def kick(self) -> None:
        """Wake the maintenance task (after a poll or a reply)."""
        if self.session is None or self.session.needs_ke or self._refresh_due():
            self._kick.set()

    async def maintain(self, vet: Vet | None = None) -> KeResult:
        """Re-key whenever the session asks for it or its keys are due for a refresh; return
        the result of a new NTS-KE that sends NTP elsewhere (Server/Port Negotiation, RFC 8915
        §4.1.7-8: the KE server's answer may change, e.g. when an operator moves clients), for
        the caller to follow (``vet``: as for ``key_exchange_until_ok``).  An offline source
        runs no NTS-KE."""
        while True:
            self._kick.clear()
            self._retire_stale_keys()  # also while offline: no NTS-KE then, but no old keys
            s = self.session
            refresh = s is not None and not s.needs_ke and self._refresh_due()
            if (s is None or s.needs_ke or refresh) and self._online():
                if s is not None and s.needs_ke and self.in_use is None:
                    nak = s.counters.naks > self._seen_at_attempt.naks
                    log.info(
                        "NTS: %s needs new keys (%s): NTS-KE",
                        self.cfg.name,
                        "the server sent an NTS NAK" if nak else "no cookies left",
                    )
                if refresh and self._moved is None:  # name_resolved logged its own reason
                    log.info(
                        "NTS: %s keys are %s old (key-refresh-interval %.0f s); NTS-KE to "
                        "refresh them, the old ones serve until it works",
                        self.cfg.name,
                        _age_text(self.key_age_s() or 0.0),
                        self._refresh_s,
                    )
                before = self.last
                result = await self.key_exchange_until_ok(vet)
                if before is not None and _ntp_server(result) != _ntp_server(before):
                    return result
                continue
            with contextlib.suppress(TimeoutError):
                await wait_for(self._kick.wait(), _CHECK_S)

    def snapshot(self) -> NtsSourceSnapshot:
        """What ``tsyncctl peers`` shows about NTS for this source."""
        s, last = self.session, self.last
        backoff = self._backoff()
        return NtsSourceSnapshot(
            ke_server=str(self.cfg.address),
            cookies=len(s.cookies) if s is not None else 0,
            aead=aead_name(last.outcome.aead) if last is not None else None,
            last_ke=self.key_age_s(),
            tls_group=last.group if last is not None else None,
            key_exchanges=self.ke_count,
            ke_failures=self.ke_failures,
            last_error=self.last_error,
            authenticated=self.tally.packets.authenticated,
            naks=self.tally.packets.naks,
            next_ke=backoff[0] if backoff else None,
            ke_backoff=backoff[1] if backoff else None,
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
        if self.in_use:
            return f"NTS-KE done; {_IN_USE} ({self.in_use})"
        return "waiting for NTS-KE"

    def pending_snapshot(self) -> SourceSnapshot:
        """A ``peers`` row for a source that has no NTP association yet (first NTS-KE)."""
        return pending_source_snapshot(
            self.cfg.name,
            "nts",
            self._pending_reason(),
            self.cfg.min_poll,
            # selectdata: "?" out for its own reason (a failed KE, an NTP server name that
            # does not resolve or that another source polls), "M" nothing measured yet
            select_code="?" if self.last_error or self.unresolved or self.in_use else "M",
            nts=self.snapshot(),
        )


def _ntp_server(result: KeResult) -> tuple[str, int]:
    """The NTP server an NTS-KE named (or a saved session's)."""
    return result.ntp_host, result.ntp_port


def _age_text(seconds: float) -> str:
    """An age for the log: "35 s" up to 2 days, "400.0 days" beyond."""
    return f"{seconds / 86400:.1f} days" if seconds >= 2 * 86400 else f"{seconds:.0f} s"
