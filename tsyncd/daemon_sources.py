"""How the daemon turns ``[[source]]`` entries into running associations (ARCHITECTURE.md,
"Sources"): resolve names (retrying), open a socket per association, register it with the
``SyncCore``, and keep pools, NTS sources (NTS-KE first, moving when a later KE names another
NTP server) and TSQ sources going.  ``Daemon`` inherits this; the attributes and the two
methods declared below are the daemon's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from tsyncd.asyncwait import wait_for
from tsyncd.config import Config, ServerConfig, SourceConfig
from tsyncd.kiss_log import KissLog
from tsyncd.net.udp import (
    SocketOptions,
    is_ip_literal,
    listen_text,
    normalize_ip,
    receives_from,
    routed_source_ip,
)
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.core import SourceState, SyncCore
from tsyncd.sync.discipline import ClockAction
from tsyncd.sync.sample import Sample
from tsyncd.wire.ntp import refid_for_address

if TYPE_CHECKING:
    from tsyncd.clock.base import Clock
    from tsyncd.sources.nts import NtsSource, NtsTally
    from tsyncd.sources.ntske import KeResult
    from tsyncd.sync.named_server import NamedServer

log = logging.getLogger("tsyncd.daemon")

_RESOLVE_RETRY_S: Final = 30.0
_POOL_RESOLVE_MAX_S: Final = 60.0  # pools re-resolve at most this often (8 min-polls if less)
_NAME_CHECK_S: Final = 1.0  # how often a server given by name is judged (as a pool's members)
_NS_PER_S: Final = 1_000_000_000


class SourceMobilizer:
    """Source mobilization over the daemon's parts."""

    config: Config
    clock: Clock
    core: SyncCore
    sockets: dict[str, NtpSourceSocket]
    nts_sources: dict[str, NtsSource]
    _nts_tallies: dict[str, NtsTally]  # NTS source name -> its counters for the daemon's life
    precision_log2: int
    _rng: random.Random
    _wake: asyncio.Event
    _template: ResponseTemplate
    _association_source: dict[str, str]  # association name -> the source that made it
    _refresh_events: dict[str, asyncio.Event]  # source name -> set by tsyncctl refresh
    _address_waits: dict[str, str]  # server by name -> why it polls nothing (addresses in use)
    _resolve_failures: dict[str, str]  # source -> why its own name did not resolve last time
    _pool_shortfalls: dict[str, str]  # pool -> why it has too few members after resolving
    _kiss_log: KissLog  # which sources' KoDs were logged

    def _apply(self, actions: list[ClockAction]) -> None:
        raise NotImplementedError  # the daemon's: carry out what the sync core decided

    def _after_update(self) -> None:
        raise NotImplementedError  # the daemon's: refresh the template and notify

    async def _mobilize(self, cfg: SourceConfig) -> None:
        """Resolve a source's address (retrying) and start its association(s)."""
        if cfg.mode == "nts":
            await self._mobilize_nts(cfg)
            return
        host, port = cfg.address.host, cfg.address.port
        if cfg.mode == "pool":
            # Pools, broadcast clients and DNS are imported on first use: a daemon without
            # them should not carry them, in every server worker too (bench/README.md,
            # "Server memory").
            from tsyncd.sources.pool import run_pool
            from tsyncd.sync.pool import PoolMembers

            await run_pool(
                cfg.name,
                PoolMembers(count=cfg.count, resolve_interval_ns=_resolve_interval_ns(cfg)),
                resolve=lambda: self._resolve_own(cfg),
                add=lambda ip: self._add_pool_member(cfg, ip),
                remove=lambda ip: self._remove_association(_join_host_port(ip, port)),
                status=lambda ip: self._member_status(cfg.name, _join_host_port(ip, port)),
                polled_by=lambda ip: self._polled_by(ip, port),
                now_ns=self.clock.now_ns,
                refresh=self._refresh_event(cfg.name),
                report=lambda why: self._pool_shortfalls.__setitem__(cfg.name, why),
            )
            return
        ips = await self._resolve_retrying(cfg)
        if cfg.mode == "server" and not is_ip_literal(host):
            await self._follow_name(cfg, ips)
        else:
            self._take(cfg, ips[0])

    def _take(self, cfg: SourceConfig, ip: str, port: int | None = None) -> SourceState | None:
        """Start ``cfg``'s association at ``ip`` (port: the configured one), taking the
        address over from a pool; None if it could not be started."""
        port = cfg.address.port if port is None else port
        for name in self._polling(ip, port):
            owner = self._association_source.get(name, name)
            if owner not in (name, cfg.name):
                # A pool got to this address first: the source takes it over, and the pool,
                # finding its member gone, replaces it with another address.
                log.info("%s: %s of %s polls it; taking it over", cfg.name, name, owner)
                self._remove_association(name)
        return self._add_association(cfg, ip, cfg.name, port)

    def _refresh_event(self, name: str) -> asyncio.Event:
        """Set by ``tsyncctl refresh``: source ``name`` resolves its name again now."""
        return self._refresh_events.setdefault(name, asyncio.Event())

    async def _follow_name(self, cfg: SourceConfig, ips: list[str]) -> None:
        """Poll the first of ``ips`` (the name's addresses) that no other source polls, then
        resolve the name again when the server turns bad, on refresh, or while every address
        was in use, and move to another address it gives (``sync/named_server.py``), until
        cancelled."""
        from tsyncd.sync.named_server import NamedServer  # only for servers given by name

        host, port, name = cfg.address.host, cfg.address.port, cfg.name
        watch = NamedServer(resolve_interval_ns=_resolve_interval_ns(cfg))
        refresh = self._refresh_event(name)
        self._place(cfg, watch, ips, self.clock.now_ns(), refreshing=False, first=True)
        while True:
            with contextlib.suppress(TimeoutError):
                await wait_for(refresh.wait(), _NAME_CHECK_S)
            refreshing = refresh.is_set()
            refresh.clear()
            now = self.clock.now_ns()
            state, sock = self.core.sources.get(name), self.sockets.get(name)
            current = sock.ip if sock is not None else ""
            if not refreshing:
                if sock is None:
                    if not watch.due(now):
                        continue  # waiting for an address no other source polls
                elif state is None or not state.association.online:
                    continue  # nothing polled (offline): nothing learnt about the server
                else:
                    selection = self.core.decision.states.get(name, "init")
                    reason = watch.check(state.association, selection, now)
                    if reason is None:
                        continue
                    log.warning(
                        "%s: %s is bad (%s); resolving %s again", name, current, reason, host
                    )
            try:
                ips = await self._resolve(host, port)
            except OSError as exc:
                log.warning("cannot resolve %s for %s: %s", host, name, exc)
                watch.resolution_failed(now)
                continue
            self._place(cfg, watch, ips, now, refreshing=refreshing)

    def _place(
        self,
        cfg: SourceConfig,
        watch: NamedServer,
        ips: list[str],
        now_ns: int,
        *,
        refreshing: bool,
        first: bool = False,
    ) -> None:
        """Move server ``cfg`` (given by name) to the address ``watch`` chooses among ``ips``,
        the name's addresses, leaving out those another source polls (a pool member it takes
        over); or, if it polls nothing and every address is in use, wait for one."""
        name, host = cfg.name, cfg.address.host
        sock = self.sockets.get(name)
        current = sock.ip if sock is not None else ""
        free = [ip for ip in ips if self._other_poller(cfg, ip) is None]
        new = watch.choose(current, free, now_ns, refresh=refreshing)
        if new is None:
            if not current:
                self._wait_for_address(cfg, ips)
            elif refreshing:
                log.info("%s: %s still resolves to %s; staying", name, host, current)
            return
        if name in self._address_waits:
            log.info("%s: %s, an address of %s, is free now; polling it", name, new, host)
        elif not first:
            log.info(
                "%s: moving from %s to %s, which %s now resolves to",
                name,
                current or "no address",
                new,
                host,
            )
        self._address_waits.pop(name, None)
        state = self.core.sources.get(name)
        online = state is None or state.association.online
        self._remove_association(name)
        self._take(cfg, new)
        if not online and name in self.core.sources:
            self.core.set_online(name, False, now_ns)  # moved, still offline

    def _other_poller(self, cfg: SourceConfig, ip: str, port: int | None = None) -> str | None:
        """The other source polling ``ip`` at ``port`` (default: ``cfg``'s), or None (a pool's
        member there is no other source's: ``_take`` takes it over)."""
        for name in self._polling(ip, cfg.address.port if port is None else port):
            owner = self._association_source.get(name, name)
            if owner == name != cfg.name:
                return owner
        return None

    def _wait_for_address(self, cfg: SourceConfig, ips: list[str]) -> None:
        """Every address of server ``cfg``'s name is polled by another source: say so (once
        at WARNING, then at DEBUG while it stays so), and in ``tsyncctl peers``."""
        users = self._pollers_text(cfg, ips, cfg.address.port)
        why = (
            f"every address of {cfg.address.host} is polled by another source ({users});"
            " resolving it again later"
        )
        level = logging.DEBUG if self._address_waits.get(cfg.name) == why else logging.WARNING
        log.log(level, "%s: %s", cfg.name, why)
        self._address_waits[cfg.name] = why

    def _pollers_text(self, cfg: SourceConfig, ips: list[str], port: int) -> str:
        """Who polls each of ``ips`` at ``port``: "192.0.2.1:123 by a, 192.0.2.2:123 by b"."""
        return ", ".join(  # sorted: DNS may give them in another order each time
            f"{_join_host_port(ip, port)} by {self._other_poller(cfg, ip, port)}"
            for ip in sorted(ips)
        )

    def _polling(self, ip: str, port: int) -> list[str]:
        """The associations polling ip:port now."""
        ip = str(normalize_ip(ip))
        return [name for name, s in self.sockets.items() if s.ip == ip and s.port == port]

    async def _resolve_retrying(
        self, cfg: SourceConfig, host: str | None = None, port: int | None = None
    ) -> list[str]:
        """Addresses of ``host`` (default: the source's own), retrying every _RESOLVE_RETRY_S
        until the name resolves (a server's own name at once on tsyncctl refresh, too)."""
        own = host is None
        host = cfg.address.host if host is None else host
        port = cfg.address.port if port is None else port
        while True:
            try:
                return await (self._resolve_own(cfg) if own else self._resolve(host, port))
            except OSError as exc:
                log.warning("cannot resolve %s for %s: %s; retrying", host, cfg.name, exc)
            if own and cfg.mode == "server":
                refresh = self._refresh_event(cfg.name)
                with contextlib.suppress(TimeoutError):
                    await wait_for(refresh.wait(), _RESOLVE_RETRY_S)
                refresh.clear()
            else:
                await asyncio.sleep(_RESOLVE_RETRY_S)

    def _add_association(
        self, cfg: SourceConfig, ip: str, name: str, port: int | None = None
    ) -> SourceState | None:
        """Open a socket to ``ip`` (default port: the configured one) and mobilize an
        association named ``name``; None if it exists already or its socket cannot be opened."""
        if name in self.sockets:
            return None
        port = cfg.address.port if port is None else port
        broadcast = cfg.mode == "broadcast"
        if broadcast:
            from tsyncd.sources.broadcast import BroadcastSourceSocket
        sock = (
            BroadcastSourceSocket(cfg, name, ip)
            if broadcast
            else NtpSourceSocket(
                name=name,
                mode=cfg.mode,
                ip=ip,
                port=port,
                options=SocketOptions(dscp=cfg.dscp),
                local_port={"peer": cfg.local_port}.get(cfg.mode, 0),
                bind_ip=peer_bind_ip(self.config.servers, cfg.local_port, ip)
                if cfg.mode == "peer"
                else None,
                xleave=cfg.xleave,
            )
        )
        try:
            sock.open(self._on_reply, self._on_tx_timestamp, self.core.handle_drop)
        except OSError as exc:
            # Peers and broadcast clients bind a fixed port, which something may hold.
            log.error("cannot open a socket for %s (local port %d): %s", name, sock.local_port, exc)
            return None
        self.sockets[name] = sock
        state = self._register(
            cfg,
            name,
            sock.ip,
            xleave=cfg.xleave,
            symmetric=cfg.mode == "peer",
            broadcast_delay_ns=round(cfg.broadcast_delay * _NS_PER_S) if broadcast else None,
        )
        # The loop test: a reply naming an address of ours comes from a server synchronized
        # to us (where our packets leave from, and where our [[server]]s listen).
        state.association.local_refids = sock.local_refids(own_server_ips(self.config.servers))
        self._announce()
        log.info("polling %s (%s, %s)", name, sock.address, cfg.mode)
        self._wake.set()
        return state

    def _register(
        self,
        cfg: SourceConfig,
        name: str,
        ip: str,
        *,
        xleave: bool = False,
        symmetric: bool = False,
        broadcast_delay_ns: int | None = None,
    ) -> SourceState:
        """Hand the sync core a new source ``name`` at ``ip`` with ``cfg``'s polling."""
        state = self.core.add_source(
            name,
            reference_id=refid_for_address(ip),
            min_poll=cfg.min_poll,
            max_poll=cfg.max_poll,
            iburst=cfg.iburst,
            rng=self._rng,
            now_ns=self.clock.now_ns(),
            xleave=xleave,
            symmetric=symmetric,
            broadcast_delay_ns=broadcast_delay_ns,
            broadcast_calibrate=cfg.broadcast_calibrate,
            noselect=cfg.noselect,
            prefer=cfg.prefer,
            trust=cfg.trust,
            require=cfg.require,
            max_delay_ns=round(cfg.max_delay * _NS_PER_S),
            offset_correction_ns=round(cfg.offset * _NS_PER_S),
        )
        if cfg.key is not None:
            from tsyncd.symkey import SymmetricKeyAuth  # hashlib only when keys are used

            state.association.auth = SymmetricKeyAuth(self.config.symmetric_keys[cfg.key])
        self._mobilized(cfg, state)
        return state

    def _mobilized(self, cfg: SourceConfig, state: SourceState) -> None:
        """A new association of ``cfg`` has just joined the sync core (the daemon may take it
        offline)."""

    async def _until_online(self, cfg: SourceConfig) -> None:
        """Before an NTS source's first NTS-KE: wait while it is to stay offline."""

    async def _mobilize_nts(self, cfg: SourceConfig) -> None:
        """NTS-KE first (retrying), then an association to the NTP server it names, moved
        whenever a later NTS-KE names another.

        An NTP server another source polls already (another NTS source sent there, a server
        or peer at that address, a server name that resolved to it) is not polled twice: one
        server would count as two in the selection (and min-sources).  As chrony (which
        refuses a negotiated address in use), the cookies are dropped, ``tsyncctl peers`` says
        why, and NTS-KE runs again after the usual back-off, in case it names another server.
        A pool's member there is taken over, as a configured server takes it over.  An NTS-KE
        server given by name is resolved again on ``tsyncctl refresh`` (``_refresh_nts``)."""
        from tsyncd.sources.nts import NtsSource, NtsTally  # pyOpenSSL only when NTS is used

        client = self.config.nts_client
        nts = NtsSource(
            cfg,
            client.cookie_storage_path,
            refresh_s=client.key_refresh_interval,
            # A reload restarting the source continues its counters (authdata, metrics).
            tally=self._nts_tallies.setdefault(cfg.name, NtsTally()),
            resolve=self._resolve_ke,
        )
        self.nts_sources[cfg.name] = nts
        if is_ip_literal(cfg.address.host):
            await self._run_nts(cfg, nts)
            return
        self._refresh_event(cfg.name)  # tsyncctl refresh covers it from now on
        refresher = asyncio.get_running_loop().create_task(
            self._refresh_nts(cfg, nts), name=f"refresh {cfg.name}"
        )
        try:
            await self._run_nts(cfg, nts)
        finally:
            refresher.cancel()

    async def _refresh_nts(self, cfg: SourceConfig, nts: NtsSource) -> None:
        """On each ``tsyncctl refresh``, resolve NTS source ``cfg``'s NTS-KE server name again
        (as chronyc refresh does); ``nts`` decides whether that calls for a new NTS-KE."""
        host, port = cfg.address.host, cfg.address.port
        refresh = self._refresh_event(cfg.name)
        while True:
            await refresh.wait()
            refresh.clear()
            try:
                ips = await self._resolve_ke(host, port)
            except OSError as exc:
                log.warning("cannot resolve %s for %s: %s; keeping its keys", host, cfg.name, exc)
                continue
            log.info("%s: %s", cfg.name, nts.name_resolved(ips))

    async def _run_nts(self, cfg: SourceConfig, nts: NtsSource) -> None:
        """NTS source ``cfg``'s life after ``_mobilize_nts`` made it: resume or NTS-KE, then
        poll the NTP server the NTS-KE named, following later ones."""
        free: list[str] = []  # the addresses of the last NTP server vetted no other source polls

        async def vet(result: KeResult) -> str | None:
            """Who polls the NTP server ``result`` names, if every address of it is another
            source's (said in the log, once); None, and its free addresses in ``free``."""
            port = result.ntp_port
            ips = await self._resolve_ke_named(nts, cfg, result.ntp_host, port)
            free[:] = [ip for ip in ips if self._other_poller(cfg, ip, port) is None]
            if free:
                return None
            users = self._pollers_text(cfg, ips, port)
            level = logging.DEBUG if nts.in_use == users else logging.WARNING
            log.log(
                level,
                "%s: NTS-KE named %s for NTP, which another source polls (%s); not "
                "polling it twice, NTS-KE again later",
                cfg.name,
                listen_text(result.ntp_host, port),
                users,
            )
            return users

        result = nts.restore()
        if result is None:
            await self._until_online(cfg)  # an offline source does no NTS-KE either
            result = await nts.key_exchange_until_ok(vet)
        else:
            # The sources started with this one take their configured addresses first (this
            # one's was negotiated): chrony, too, sets NTS addresses only after adding them.
            await asyncio.sleep(0)
            users = await vet(result)
            if users is not None:
                nts.ntp_server_in_use(users)
                result = await nts.key_exchange_until_ok(vet)
        while True:
            state = self._take(cfg, free[0], result.ntp_port)
            if state is None:
                return
            state.association.auth = nts.session
            nts.association = state.association
            result = await nts.maintain(vet)  # returns when a new NTS-KE names another server
            log.info(
                "%s: NTS-KE now names %s for NTP; moving there",
                cfg.name,
                listen_text(result.ntp_host, result.ntp_port),
            )
            nts.association = None
            self._remove_association(cfg.name)

    async def _resolve_ke_named(
        self, nts: NtsSource, cfg: SourceConfig, host: str, port: int
    ) -> list[str]:
        """Addresses of the NTP server an NTS-KE named (RFC 8915 §4.1.7), retrying; if it does
        not resolve, ``nts`` keeps why, for ``tsyncctl peers``."""
        try:
            return await self._resolve(host, port)
        except OSError as exc:
            nts.ntp_server_unresolved(exc)
            log.warning("cannot resolve %s for %s: %s; retrying", host, cfg.name, exc)
        await asyncio.sleep(_RESOLVE_RETRY_S)
        return await self._resolve_retrying(cfg, host, port)

    def _announce(self) -> None:
        """Symmetric peers send our system variables, as our servers do."""
        t = self._template
        for state in self.core.sources.values():
            state.association.set_announced(  # a no-op for client associations
                leap=t.leap,
                stratum=t.stratum or 16,
                root_delay=t.root_delay,
                root_dispersion=t.root_dispersion,
                reference_id=t.reference_id,
                reference_ts=t.reference_ts,
            )

    def _remove_association(self, name: str) -> None:
        """Demobilize ``name`` and close its socket."""
        sock = self.sockets.pop(name, None)
        if sock is not None:
            sock.close()
        if name in self.core.sources:
            self.core.remove_source(name, self.clock.now_ns())
        self._kiss_log.forget(name)
        self._after_update()

    def _add_pool_member(self, cfg: SourceConfig, ip: str) -> str | None:
        """Mobilize ``ip`` as a member of pool ``cfg``: None, or why it cannot be used (``run_pool``
        leaves out addresses polled already, but one resolution may give an address twice, as
        IPv4 and IPv4-mapped)."""
        port = cfg.address.port
        users = self._polled_by(ip, port)
        if users:  # never twice
            return f"{users} polls it already"
        if self._add_association(cfg, ip, _join_host_port(ip, port)) is None:
            return "no socket"  # _add_association logged why
        return None

    def _polled_by(self, ip: str, port: int) -> str | None:
        """The associations polling ``ip`` at ``port`` ("a, b"), or None."""
        return ", ".join(self._polling(ip, port)) or None

    def _member_status(self, pool: str, name: str) -> tuple[NtpAssociation, str] | None:
        """(association, selection state) of pool member ``name``; None unless ``pool`` made it (a
        pool never judges, or removes, a configured source at the same address)."""
        state = self.core.sources.get(name)
        if state is None or self._association_source.get(name) != pool:
            return None
        return state.association, self.core.decision.states.get(name, "init")

    async def _resolve_own(self, cfg: SourceConfig) -> list[str]:
        """``_resolve`` of ``cfg``'s own name, keeping why it failed (``_resolve_failures``)
        until it resolves: ``tsyncctl sources`` shows it while the source has no address."""
        try:
            ips = await self._resolve(cfg.address.host, cfg.address.port)
        except OSError as exc:
            self._resolve_failures[cfg.name] = str(exc)
            raise
        self._resolve_failures.pop(cfg.name, None)
        return ips

    async def _resolve(self, host: str, port: int) -> list[str]:
        """IP literals as they are; names through the configured DNS servers or getaddrinfo."""
        from tsyncd.net.resolver import resolve

        return await resolve(host, port, self.config.resolver.servers)

    async def _resolve_ke(self, host: str, port: int) -> list[str]:
        """An NTS-KE server's addresses: ``_resolve``'s, then the system resolver's when the
        configured DNS servers do not know the name.  Until session 21 NTS-KE connected by
        name through the system resolver whatever ``[resolver] servers`` said, so a config
        naming an NTS-KE server those servers do not know (``localhost``, /etc/hosts) worked
        and must keep working; the refresh resolves through here too, so both agree."""
        from tsyncd.net.resolver import resolve

        try:
            return await self._resolve(host, port)
        except OSError as exc:
            if not self.config.resolver.servers:
                raise
            try:
                return await resolve(host, port)
            except OSError as system:
                raise OSError(f"{exc}; system resolver: {system}") from system

    def _on_tx_timestamp(self, name: str, kernel_tx_ns: int) -> None:
        self.core.handle_tx_timestamp(name, self.clock.from_kernel_ns(kernel_tx_ns))

    def _send_request(self, name: str, data: bytes) -> None:
        """Send a packet the core made for source ``name`` (a request, or a peer's packet)."""
        sock = self.sockets.get(name)
        if sock is None:
            return
        # T1 is read before the send: on loopback the kernel hands the datagram to the
        # server inside sendto, and the server may run (and answer) before we return.
        t1_ns = self.clock.now_ns()
        data = self.core.stamp_transmit(name, data, t1_ns)
        if sock.send(data):
            self.core.handle_sent(name, t1_ns)

    def _on_reply(self, name: str, data: bytes, kernel_rx_ns: int) -> None:
        rx_ns = self.clock.from_kernel_ns(kernel_rx_ns)
        state = self.core.sources.get(name)
        kisses = state.association.stats.kisses if state is not None else 0
        valid = state.association.stats.packets_received if state is not None else 0
        sample = self.core.check_reply(name, data, rx_ns)
        if state is not None and state.association.stats.packets_received > valid:
            self._valid_reply(name, state)
        # A symmetric peer's packet may make our answer due now: sent before the selection
        # (our packet then announces what the previous one did; the next one catches up).
        answer = self.core.poll_due(name, self.clock.now_ns())
        if answer is not None:
            self._send_request(name, answer)
        self._apply(self.core.use_sample(name, sample, rx_ns))
        if state is not None:
            self._kiss_log.handle_reply(name, state.association, kisses, rx_ns)
        if name in self.nts_sources:
            self.nts_sources[name].kick()  # an NTS NAK asks for a new NTS-KE
        self._after_update()
        self._wake.set()  # a reply can move deadlines (KoD RATE, poll changes)

    def _valid_reply(self, name: str, state: SourceState) -> None:
        """Tell ``name``'s socket its latest datagram was a valid reply (ntpdata's TX/RX
        timestamping); a broadcast answers no request of ours."""
        sock = self.sockets.get(name)
        header = state.association.stats.last_reply
        if isinstance(sock, NtpSourceSocket):
            sock.valid_reply(answered_request=header is None or header.response_ns is not None)

    async def _mobilize_tsq(self, cfg: SourceConfig) -> None:
        """Resolve a TSQ source's address (retrying) and start polling it."""
        from tsyncd.sources.tsq import TsqSource

        host, port = cfg.address.host, cfg.address.port
        ips = await self._resolve_retrying(cfg)
        source = TsqSource(
            name=cfg.name,
            ip=ips[0],
            port=port,
            server_name=host,
            transport=cfg.transport,
            ca_file=cfg.certificate_authority,
            now_ns=self.clock.now_ns,
            precision_ns=max(1, _NS_PER_S >> -self.precision_log2),
            dscp=cfg.dscp,
        )
        source.start(self._on_tsq_sample, self._on_tsq_drop, self.core.handle_failure)
        self.sockets[cfg.name] = source
        self._register(cfg, cfg.name, source.ip)
        log.info("polling %s (TSQ %s, %s)", cfg.name, cfg.transport, source.address)
        self._wake.set()

    def _on_tsq_sample(self, name: str, sample: Sample) -> None:
        self._apply(self.core.handle_sample(name, sample))
        self._after_update()
        self._wake.set()

    def _on_tsq_drop(self, name: str, reason: str) -> None:
        self.core.handle_drop(name, reason)


def own_server_ips(servers: Iterable[ServerConfig]) -> tuple[str, ...]:
    """The addresses our [[server]]s listen on, where others reach us (wildcards left out)."""
    ips = (normalize_ip(s.listen.host) for s in servers)
    return tuple(str(ip) for ip in ips if not ip.is_unspecified)


def peer_bind_ip(servers: Iterable[ServerConfig], local_port: int, peer_ip: str) -> str | None:
    """The address a peer's socket binds on ``local_port``, or None for the wildcard.

    A peer sends to the address it knows us by, and that must be where our packets to it come
    from (chronyd sends a peer's packets from its server socket).  A [[server]] on the same
    port listening on a specific address takes every packet to that address, the peer's too,
    while our packets would leave from the routed address: so the peer's socket binds the
    server's address (the one routed to the peer if several servers take the peer's family on
    that port, else the first).  A wildcard server leaves the wildcard: the kernel hands the
    peer's packets to the connected socket there."""
    peer = normalize_ip(peer_ip)
    hosts = [
        s.listen.host
        for s in servers
        if s.listen.port == local_port and receives_from(s.listen.host, s.ipv6_only, peer)
    ]
    if not hosts or any(normalize_ip(host).is_unspecified for host in hosts):
        return None
    if len(hosts) > 1:
        routed = routed_source_ip((peer_ip, local_port))
        for host in hosts:
            if str(normalize_ip(host)) == routed:
                return host
    return hosts[0]


def _resolve_interval_ns(cfg: SourceConfig) -> int:
    """The least time between two resolutions of a pool's or server's name: 8 min-polls,
    within 1 s .. _POOL_RESOLVE_MAX_S."""
    return round(min(max(1.0, 8 * 2.0**cfg.min_poll), _POOL_RESOLVE_MAX_S) * _NS_PER_S)


def _join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
