"""An NTP server source's IO edge: one UDP socket, one association, one clock filter.

The association decides when to poll and whether a reply is good; this adapter only sends, reads
(with kernel receive timestamps) and sleeps until the association's next deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from tsyncd.clock.base import Clock
from tsyncd.net.udp import Address, TimestampedUdp, normalize_ip
from tsyncd.snapshots import SourceSnapshot
from tsyncd.sync.association import AssociationState, NtpAssociation
from tsyncd.sync.filter import ClockFilter
from tsyncd.sync.system import Candidate
from tsyncd.wire.ntp import Leap, refid_for_address, refid_to_str

log = logging.getLogger(__name__)

_NS = 1e-9


class NtpSource:
    """Polls one server address; hands good samples to its filter and tells the daemon."""

    def __init__(
        self,
        *,
        name: str,
        mode: str,
        ip: str,
        port: int,
        min_poll: int,
        max_poll: int,
        iburst: bool,
        clock: Clock,
        precision_log2: int,
        rng: random.Random,
        on_update: Callable[[], None],
    ) -> None:
        self.name = name
        self.mode = mode
        self.ip = str(normalize_ip(ip))
        self.port = port
        self._clock = clock
        self._on_update = on_update
        self.association = NtpAssociation(
            min_poll=min_poll,
            max_poll=max_poll,
            iburst=iburst,
            precision_log2=precision_log2,
            rng=rng,
            now_ns=clock.now_ns(),
        )
        self.filter = ClockFilter(precision_ns=max(1, 1_000_000_000 >> -precision_log2))
        self.reference_id = refid_for_address(self.ip)
        self._udp: TimestampedUdp | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.wrong_address = 0

    @property
    def address(self) -> str:
        """'ip:port' or '[ip6]:port'."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    def start(self) -> None:
        """Open the socket and start polling (on the running loop)."""
        wildcard = "::" if ":" in self.ip else "0.0.0.0"
        self._udp = TimestampedUdp.bind(wildcard, 0, self._on_datagram, self._clock.now_ns)
        self._task = asyncio.get_running_loop().create_task(
            self._poll_loop(), name=f"source {self.name}"
        )

    async def _poll_loop(self) -> None:
        while True:
            deadline = self.association.next_deadline_ns()
            if deadline is None:
                await asyncio.Event().wait()  # demobilized: nothing more to do
                return
            delay_s = (deadline - self._clock.now_ns()) * _NS
            if delay_s > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay_s)
                continue
            request = self.association.handle_timer(self._clock.now_ns())
            if request is not None and self._udp is not None:
                # T1 is read before the send: on loopback the kernel hands the datagram to the
                # server inside sendto, and the server may run (and answer) before we return.
                t1_ns = self._clock.now_ns()
                if self._udp.sendto(request, (self.ip, self.port)):
                    self.association.handle_sent(t1_ns)
                self._on_update()  # reach changed

    def _on_datagram(self, data: bytes, address: Address, rx_ns: int) -> None:
        if str(normalize_ip(str(address[0]))) != self.ip or address[1] != self.port:
            self.wrong_address += 1
            return
        before = self.association.next_deadline_ns()
        sample = self.association.handle_reply(data, rx_ns)
        if sample is not None:
            self.filter.add(sample)
        if self.association.next_deadline_ns() != before:
            self._wake.set()
        self._on_update()

    def candidate(self) -> Candidate:
        """This source as the system process sees it."""
        a = self.association
        return Candidate(
            name=self.name,
            reference_id=self.reference_id,
            reach=a.reach,
            polled=a.stats.packets_sent > 0,
            usable=a.state is not AssociationState.DEMOBILIZED,
            unusable_reason=a.unusable_reason,
            estimate=self.filter.output(self._clock.now_ns()),
        )

    def snapshot(self, state: str) -> SourceSnapshot:
        """What ``tsyncctl peers`` shows for this source."""
        a = self.association
        now = self._clock.now_ns()
        est = self.filter.output(now)
        s = est.sample if est is not None else None
        return SourceSnapshot(
            name=self.name,
            address=self.address,
            mode=self.mode,
            state=state,
            state_reason=a.unusable_reason,
            offset=s.offset_ns * _NS if s else None,
            delay=s.delay_ns * _NS if s else None,
            jitter=est.jitter_ns * _NS if est else None,
            dispersion=est.dispersion_ns * _NS if est else None,
            root_delay=s.root_delay_ns * _NS if s else None,
            root_dispersion=s.root_dispersion_ns * _NS if s else None,
            stratum=s.stratum if s else None,
            reference_id=refid_to_str(s.reference_id, s.stratum) if s else None,
            leap=Leap(s.leap).name.lower() if s else None,
            reach=a.reach,
            poll=a.poll,
            last_rx=(now - a.stats.last_rx_ns) * _NS if a.stats.last_rx_ns is not None else None,
            packets_sent=a.stats.packets_sent,
            packets_received=a.stats.packets_received,
            packets_dropped=a.stats.packets_dropped + self.wrong_address,
            kiss_code=a.stats.kiss_code,
        )

    async def close(self) -> None:
        """Stop polling and close the socket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._udp is not None:
            self._udp.close()
