"""The synchronization core, sans-IO: every source's association and filter, the system process
and the discipline, wired together.  The daemon and the simulator drive the same object.

Theory of operation
-------------------
Inputs are method calls carrying bytes and the disciplined clock's time (integer ns); outputs
are requests to send and clock actions to apply:

* ``handle_timer(now)`` polls every association whose deadline has passed (returning the
  requests) and runs the discipline's timer (returning clock actions);
* ``handle_sent(name, t1)`` records T1, read just before the request went to the kernel;
  ``handle_tx_timestamp(name, t1)`` refines it with the kernel's TX stamp when there is one;
* ``handle_reply(name, data, rx)`` checks the reply, feeds the filter and re-runs selection;
  each fresh sample of the system peer goes to the discipline with its own measurement time and
  delay.  The discipline's delay-weighted regression is the filter there (as in chrony); the
  RFC 5905 clock filter serves selection, jitter and dispersion, and is told what was used.

The caller applies every ``Step``/``SetFrequency`` at once, so the core and the discipline can
assume the clock did what they said; after a step the core shifts every stored sample, send
time and deadline by it, because they were measured against a clock that no longer reads the
same (a step back of an hour must not stop polling for an hour).
``next_deadline_ns()`` says when to call ``handle_timer`` next.

``selection`` is the system process's latest outcome; ``decision``, what status, the servers
and the kernel are told, is the same except while the discipline refuses the offsets it is
handed (panic: over ``panic-threshold``): then the clock is not being kept, so we are not
synchronized (``tsyncctl status``, waitsync, systemd's status say why) and serve as when
unsynchronized, until an offset is taken again or ``tsyncctl makestep`` accepts the offset.
chronyd's ``maxchange`` exits after its N refused updates, RFC 5905's panic exits at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.discipline import ClockAction, Discipline, Step
from tsyncd.sync.filter import ClockFilter
from tsyncd.sync.sample import MAXDIST_NS, Sample
from tsyncd.sync.sourcestats import SampleHistory, combined_skew_ppm
from tsyncd.sync.system import Candidate, SystemDecision, SystemProcess

_NS_PER_S: Final = 1_000_000_000
_OPTIONS: Final = ("noselect", "prefer", "trust", "require")
# A fresh sample of the system peer whose round trip exceeds the least one its filter holds by
# more than this many times that least one (and by more than the floor) waited in a queue long
# enough to be off by half the excess: it goes into the filter, not to the discipline, which
# with few samples cannot out-weigh it (one such reply at start-up pulled the clock 100 ms the
# wrong way and the good replies after it then looked like spikes).  chrony's maxdelaydevratio
# guards the same way.
_EXCESS_DELAY_RATIO: Final = 3
_EXCESS_DELAY_FLOOR_NS: Final = 1_000_000


@dataclass(slots=True)
class SourceState:
    """One source inside the core: its association, its clock filter and its sample history."""

    name: str
    reference_id: int  # what we announce as our refid when this source is the system peer
    association: NtpAssociation
    filter: ClockFilter
    noselect: bool = False  # measured, never selected (chrony's noselect)
    prefer: bool = False  # preferred over sources without it (chrony's prefer)
    trust: bool = False  # true unless other trust sources disagree (chrony's trust)
    require: bool = False  # a require source must be selectable to update (chrony's require)
    max_delay_ns: int | None = None  # samples with a longer round trip are dropped
    offset_correction_ns: int = 0  # added to every offset (chrony's offset option)
    leap: int = 0  # the leap indicator of the latest sample (RFC 5905: the latest packet's)
    # Why the last sample was dropped here, or the last exchange failed outside the core (a
    # TSQ handshake, a timeout): the source's Note while it has no usable estimate.  Cleared
    # when a sample is taken.
    rejected: str | None = None
    # Up to 64 of its samples for its statistics (tsyncctl sourcestats), beside the filter.
    history: SampleHistory = field(default_factory=SampleHistory)

    def admit(self, sample: Sample) -> Sample | None:
        """The sample as this source's options make it, or None if they drop it.

        chrony's maxdelay test: a sample whose round trip is over ``max_delay_ns`` says little
        about the offset (the asymmetry it may hide is up to half the delay); the reply still
        counts for reach, the drop as ``max_delay``.  chrony's offset option: a known
        asymmetry (requests delayed 2c longer than replies overstate the offset by c) is
        corrected by adding ``offset_correction_ns``, -c, to every offset."""
        if self.max_delay_ns is not None and sample.delay_ns > self.max_delay_ns:
            self.association.record_drop("max_delay")
            self.rejected = (
                f"round trip {sample.delay_ns / _NS_PER_S:.3g} s over max-delay "
                f"{self.max_delay_ns / _NS_PER_S:.3g} s"
            )
            return None
        self.rejected = None
        if self.offset_correction_ns:
            return replace(sample, offset_ns=sample.offset_ns + self.offset_correction_ns)
        return sample

    @property
    def options(self) -> tuple[str, ...]:
        """The selection options set, as the config names them."""
        flags = (self.noselect, self.prefer, self.trust, self.require)
        return tuple(name for name, on in zip(_OPTIONS, flags, strict=True) if on)

    def candidate(self, now_ns: int) -> Candidate:
        """This source as the system process sees it."""
        a = self.association
        return Candidate(
            name=self.name,
            reference_id=self.reference_id,
            reach=a.reach,
            polled=a.polled,
            replied=a.stats.packets_received > 0,
            usable=not a.stopped,
            unusable_reason=a.unusable_reason or ("offline" if not a.online else self.rejected),
            estimate=self.filter.output(now_ns),
            leap=self.leap,
            poll_log2=a.poll,
            noselect=self.noselect,
            unsynchronized=a.server_unsynchronized,
            synchronized_to_us=a.synchronized_to_us,
            drops=tuple(a.stats.drops_since_reply.items()),
            prefer=self.prefer,
            trust=self.trust,
            require=self.require,
        )


class SyncCore:
    """Samples in, clock actions and system state out."""

    def __init__(
        self,
        *,
        local_stratum: int | None,
        min_sources: int,
        max_distance_ns: int = MAXDIST_NS,
        precision_log2: int,
        discipline: Discipline | None,
        now_ns: int,
    ) -> None:
        self.system = SystemProcess(
            local_stratum=local_stratum, min_sources=min_sources, max_distance_ns=max_distance_ns
        )
        self.discipline = discipline
        self.precision_log2 = precision_log2
        self.sources: dict[str, SourceState] = {}
        self.selection: SystemDecision = self.system.choose([], now_ns)
        self.decision: SystemDecision = self.selection  # what is reported (see the docstring)
        self.clock_updates = 0  # offsets handed to the discipline
        self.last_update_ns: int | None = None
        self.update_interval_ns: int | None = None  # between the last two clock updates
        # Told of every sample that enters a clock filter (name, sample, its state after):
        # the measurement logs.  Called inside the handler, so it must not call back in.
        self.on_sample: Callable[[str, Sample, SourceState], None] | None = None

    # ---------------------------------------------------------------- sources

    def add_source(
        self,
        name: str,
        *,
        reference_id: int,
        min_poll: int,
        max_poll: int,
        iburst: bool,
        rng: random.Random,
        now_ns: int,
        xleave: bool = False,
        symmetric: bool = False,
        broadcast_delay_ns: int | None = None,
        broadcast_calibrate: bool = False,
        noselect: bool = False,
        prefer: bool = False,
        trust: bool = False,
        require: bool = False,
        max_delay_ns: int | None = None,
        offset_correction_ns: int = 0,
    ) -> SourceState:
        """Mobilize an association (polling starts at its first deadline); with
        ``broadcast_delay_ns``, a broadcast client's, measuring that delay itself when
        ``broadcast_calibrate``."""
        if name in self.sources:
            raise ValueError(f"source {name!r} already exists")
        precision_ns = max(1, _NS_PER_S >> -self.precision_log2)
        state = SourceState(
            name=name,
            reference_id=reference_id,
            association=_new_association(
                symmetric,
                broadcast_delay_ns,
                broadcast_calibrate,
                min_poll=min_poll,
                max_poll=max_poll,
                iburst=iburst,
                precision_log2=self.precision_log2,
                rng=rng,
                now_ns=now_ns,
                xleave=xleave,
            ),
            filter=self._new_filter(precision_ns),
            noselect=noselect,
            prefer=prefer,
            trust=trust,
            require=require,
            max_delay_ns=max_delay_ns,
            offset_correction_ns=offset_correction_ns,
        )
        if self.discipline is not None:
            state.history.slewed = self.discipline.slewed_ns
        self.sources[name] = state
        return state

    def _new_filter(self, precision_ns: int) -> ClockFilter:
        """A clock filter whose offsets follow our own slews (see ``ClockFilter.slewed``)."""
        f = ClockFilter(precision_ns=precision_ns)
        if self.discipline is not None:
            f.slewed = self.discipline.slewed_ns
        return f

    def remove_source(self, name: str, now_ns: int) -> None:
        """Demobilize and forget a source."""
        del self.sources[name]
        self._reselect(now_ns, None)

    # ---------------------------------------------------------------- inputs

    def handle_timer(self, now_ns: int) -> tuple[list[tuple[str, bytes]], list[ClockAction]]:
        """Poll due associations and run the discipline's timer."""
        requests: list[tuple[str, bytes]] = []
        for state in self.sources.values():
            data = self._poll_due(state, now_ns)
            if data is not None:
                requests.append((state.name, data))
        actions: list[ClockAction] = []
        if self.discipline is not None:
            deadline = self.discipline.next_deadline_ns()
            if deadline is not None and deadline <= now_ns:
                actions = self._applied(self.discipline.handle_timer(now_ns), now_ns)
        self._reselect(now_ns, None)
        return requests, actions

    def poll_due(self, name: str, now_ns: int) -> bytes | None:
        """The packet source ``name`` sends now if its deadline has passed, as ``handle_timer``
        would send it: for a symmetric peer whose packet just made our answer due
        (``check_reply``), so the IO edge sends it at once, before ``use_sample``'s selection
        and without waking its timer: each took about 0.2-0.4 ms of the peer's measurement
        of us (its response time)."""
        state = self.sources.get(name)
        return None if state is None else self._poll_due(state, now_ns)

    def _poll_due(self, state: SourceState, now_ns: int) -> bytes | None:
        """Poll ``state``'s association if its deadline has passed: the packet to send, if any."""
        a = state.association
        deadline = a.next_deadline_ns() if a.polling else None
        if deadline is None or deadline > now_ns:
            return None
        data = a.handle_timer(now_ns)
        if not a.online:
            a.polled_offline()
        if data is not None and a.reach & 0b111 == 0 and a.stats.packets_sent > 3:
            # RFC 5905 §13: three polls unanswered inflate the dispersion.
            state.filter.add_dummy(now_ns)
        return data

    def handle_sent(self, name: str, t1_ns: int) -> None:
        """T1 of the request just sent by ``name``."""
        state = self.sources.get(name)
        if state is not None:
            state.association.handle_sent(t1_ns)

    def stamp_transmit(self, name: str, data: bytes, t1_ns: int) -> bytes:
        """The request ``name`` is about to send, with its Transmit field re-read at ``t1_ns``
        where the peer uses it as a time (symmetric mode); other requests come back as is."""
        state = self.sources.get(name)
        return state.association.stamp_transmit(data, t1_ns) if state is not None else data

    def handle_tx_timestamp(self, name: str, tx_ns: int) -> None:
        """The kernel's TX stamp of ``name``'s latest request (disciplined clock)."""
        state = self.sources.get(name)
        if state is not None:
            state.association.handle_tx_timestamp(tx_ns)

    def handle_reply(self, name: str, data: bytes, rx_ns: int) -> list[ClockAction]:
        """A datagram from source ``name`` arrived at ``rx_ns`` (disciplined clock)."""
        return self.use_sample(name, self.check_reply(name, data, rx_ns), rx_ns)

    def check_reply(self, name: str, data: bytes, rx_ns: int) -> Sample | None:
        """``handle_reply``'s first half: the association's checks, which may make its next
        packet due (a symmetric peer answering the other's packet: ``poll_due``); the sample,
        if the datagram measured, for ``use_sample``."""
        state = self.sources.get(name)
        if state is None:
            return None
        sample = state.association.handle_reply(data, rx_ns)
        if state.association.filter_outdated:  # before the reply's sample: those are stale
            state.association.filter_outdated = False
            state.filter.clear()
        return sample

    def use_sample(self, name: str, sample: Sample | None, rx_ns: int) -> list[ClockAction]:
        """``handle_reply``'s second half: ``check_reply``'s sample through the filter,
        selection and discipline (which re-select even without a sample: reach changed)."""
        state = self.sources.get(name)
        if state is None:
            return []
        if sample is not None:
            sample = state.admit(sample)
        if sample is not None:
            self._filtered(state, sample)
        return self._reselect(rx_ns, (name, sample) if sample is not None else None)

    def handle_sample(self, name: str, sample: Sample) -> list[ClockAction]:
        """A sample of source ``name`` measured outside the core (a TSQ exchange, checked by
        ``sync/tsq``): filtered, selected and disciplined exactly like an NTP reply's."""
        state = self.sources.get(name)
        if state is None:
            return []
        state.association.handle_measured(sample)
        admitted = state.admit(sample)
        if admitted is None:
            return self._reselect(sample.local_rx_ns, None)
        sample = admitted
        self._filtered(state, sample)
        return self._reselect(sample.local_rx_ns, (name, sample))

    def _filtered(self, state: SourceState, sample: Sample) -> None:
        state.filter.add(sample, poll_log2=state.association.poll)
        state.history.add(sample)
        state.leap = sample.leap
        if self.on_sample is not None:
            self.on_sample(state.name, sample, state)

    def handle_drop(self, name: str, reason: str) -> None:
        """A reply of source ``name`` was rejected outside the core; count it."""
        state = self.sources.get(name)
        if state is not None:
            state.association.record_drop(reason)

    def handle_failure(self, name: str, why: str) -> None:
        """An exchange of source ``name`` failed outside the core (TSQ): ``why`` is what
        ``tsyncctl peers`` and the selection say about it until a sample is taken."""
        state = self.sources.get(name)
        if state is not None:
            state.rejected = why

    def burst(self, now_ns: int, names: Iterable[str] | None = None) -> dict[str, str]:
        """Send a quick burst of requests to sources ``names`` (default: every one; tsyncctl
        burst); those that send none (a broadcast source), with why."""
        skipped: dict[str, str] = {}
        for name in self.sources if names is None else names:
            why = self.sources[name].association.start_burst(now_ns)
            if why is not None:
                skipped[name] = why
        return skipped

    def set_online(self, name: str, online: bool, now_ns: int) -> bool:
        """Source ``name`` online or offline (tsyncctl online/offline); False if unchanged."""
        return self.sources[name].association.set_online(online, now_ns)

    def reselect(self, now_ns: int) -> None:
        """Select again now with no preference for the current system peer (tsyncctl reselect,
        as chronyc's): the best survivor becomes the system peer even if the current one
        still survives.  The clock is not touched; the next sample of the peer steers it."""
        self.system.forget_system_peer()
        self._reselect(now_ns, None)

    def set_local_stratum(self, stratum: int | None, now_ns: int) -> None:
        """Serve our own clock at ``stratum`` while unsynchronized, or not (None): tsyncctl
        local, as chronyc's; takes effect at once."""
        self.system.local_stratum = stratum
        self._reselect(now_ns, None)

    def reset_sources(self, now_ns: int) -> None:
        """Drop every measurement (tsyncctl reset sources, as chronyc's): each source's clock
        filter and the discipline's offset history; we are unsynchronized until new replies
        come.  Associations (reach, poll) and the frequency stay."""
        for state in self.sources.values():
            state.filter.clear()
            state.history.clear()
            state.association.filter_cleared()  # a broadcast client: several broadcasts again
        if self.discipline is not None:
            self.discipline.forget_offsets(now_ns)
        self._reselect(now_ns, None)

    def makestep(self, now_ns: int) -> list[ClockAction]:
        """Step the clock by the current system offset now (tsyncctl makestep), one the
        discipline refuses (panic) too."""
        d = self.selection
        if not d.synchronized:
            return []
        # Under a panic, the offset refused is the one to accept (what the refusal named):
        # the selection's offset comes from the clock filter, which may still hold an older,
        # lower-delay sample from before the source's jump.
        panic = self.discipline.panic if self.discipline is not None else None
        offset_ns = panic.offset_ns if panic is not None else d.offset_ns
        if offset_ns == 0:
            return []
        actions: list[ClockAction] = [Step(offset_ns=offset_ns)]
        if self.discipline is not None:
            self.discipline.handle_external_step(now_ns, offset_ns)
        return self._applied(actions, now_ns)

    # ---------------------------------------------------------------- the system process

    def _reselect(self, now_ns: int, fresh: tuple[str, Sample] | None) -> list[ClockAction]:
        """Re-run selection; hand a fresh sample of the system peer to the discipline.

        Every new sample of the system peer goes to the discipline, with its own time and
        delay: the discipline's delay-weighted regression is the filter (as chrony does), so
        it must not be starved by the RFC 5905 clock filter's once-only, lowest-delay-of-eight
        and popcorn rules, which there only serve selection, jitter and dispersion.
        """
        candidates = [s.candidate(now_ns) for s in self.sources.values()]
        self.selection = d = self.system.choose(candidates, now_ns)
        self.decision = self._reported(d)
        if fresh is None or not d.synchronized or d.selected != fresh[0]:
            return []
        name, sample = fresh
        peer = self.sources[name]
        est = next(c.estimate for c in candidates if c.name == name)
        if est is None:  # a selected source has an estimate; for the type checker
            return []
        # The filter's chosen sample is its lowest-delay one.
        least = est.sample.delay_ns
        excess = sample.delay_ns - least
        if excess > max(_EXCESS_DELAY_RATIO * least, _EXCESS_DELAY_FLOOR_NS):
            return []
        peer.filter.mark_used(sample)
        self.clock_updates += 1
        if self.last_update_ns is not None:
            self.update_interval_ns = now_ns - self.last_update_ns
        self.last_update_ns = now_ns
        if self.discipline is None:
            return []
        # The sample's own uncertainty is at least its source's jitter: the system jitter
        # alone is the survivors' spread, zero with one source, which made the discipline
        # take a line through its first two samples as exact.
        actions = self.discipline.handle_offset(
            now_ns,
            sample.offset_ns,
            error_ns=max(d.jitter_ns, est.jitter_ns, 1),
            poll_log2=self.system_poll(),
            measured_ns=sample.local_rx_ns,
            delay_ns=sample.delay_ns,
        )
        poll = self.discipline.poll_log2
        for state in self.sources.values():
            state.association.set_system_poll(poll)
        return self._applied(actions, now_ns)

    def _applied(self, actions: list[ClockAction], now_ns: int) -> list[ClockAction]:
        """Account for steps in the stored samples before the caller applies them (and for
        a panic the discipline started or ended in what is reported)."""
        stepped = False
        for action in actions:
            if isinstance(action, Step):
                stepped = True
                for state in self.sources.values():
                    state.filter.shift(action.offset_ns)
                    state.history.shift(action.offset_ns)
                    state.association.shift_times(action.offset_ns)
                if self.last_update_ns is not None:
                    self.last_update_ns += action.offset_ns
        if stepped:
            self.selection = self.system.choose(
                [s.candidate(now_ns) for s in self.sources.values()], now_ns
            )
        self.decision = self._reported(self.selection)
        return actions

    def _reported(self, d: SystemDecision) -> SystemDecision:
        """The selection ``d`` as we report and serve it: not synchronized while the
        discipline refuses its offsets (panic), saying why and what accepts the offset."""
        panic = self.discipline.panic if self.discipline is not None else None
        if panic is None or not d.synchronized:
            return d
        return self.system.refusing(d, f"panic: {panic.reason}; tsyncctl makestep to accept it")

    def reference_skew_ppm(self, now_ns: int) -> float:
        """``tsyncctl tracking``'s skew: the 99.9 % error bound of the frequency as the sources
        combined into the system offset measure it (their ``sourcestats`` skews, combined as
        chronyd does: ``combined_skew_ppm``); 0.0 while unsynchronized, as chronyc shows.
        chronyd also blends each update's skew into its previous one, because its frequency
        estimate is that same blend; ours comes from the discipline's own regression, whose
        standard error (``Discipline.skew_ppm``) is what the drift file keeps."""
        d = self.decision
        if not d.synchronized:
            return 0.0
        lines = (
            self.sources[n].history.regression(now_ns) for n in d.survivors if n in self.sources
        )
        return combined_skew_ppm(line.skew_ppm for line in lines)

    def system_poll(self) -> int:
        """The poll interval the system runs at: the system peer's, else the smallest."""
        d = self.selection
        if d.selected is not None and d.selected in self.sources:
            return self.sources[d.selected].association.poll
        return min((s.association.poll for s in self.sources.values()), default=6)

    def next_deadline_ns(self) -> int | None:
        """When ``handle_timer`` must run next (disciplined-clock ns), or None."""
        deadlines = [
            s.association.next_deadline_ns() for s in self.sources.values() if s.association.polling
        ]
        if self.discipline is not None:
            deadlines.append(self.discipline.next_deadline_ns())
        pending = [d for d in deadlines if d is not None]
        return min(pending) if pending else None


def _new_association(
    symmetric: bool,
    broadcast_delay_ns: int | None,
    broadcast_calibrate: bool,
    *,
    min_poll: int,
    max_poll: int,
    iburst: bool,
    precision_log2: int,
    rng: random.Random,
    now_ns: int,
    xleave: bool,
) -> NtpAssociation:
    """Client, symmetric active (``symmetric``; interleaved with ``xleave``) or broadcast
    client (a broadcast delay, measured itself when ``broadcast_calibrate``).  The symmetric
    and broadcast modules are imported only for such a source: most daemons have none, and
    the main process and every server worker would carry them (memory budget)."""
    kind: type[NtpAssociation] = NtpAssociation
    if broadcast_delay_ns is not None:
        from tsyncd.sync.broadcast import BroadcastAssociation

        kind = BroadcastAssociation
    elif symmetric:
        from tsyncd.sync.symmetric import SymmetricAssociation
        from tsyncd.sync.symmetric_xleave import InterleavedSymmetricAssociation

        kind = InterleavedSymmetricAssociation if xleave else SymmetricAssociation
    association = kind(
        min_poll=min_poll,
        max_poll=max_poll,
        iburst=iburst,
        precision_log2=precision_log2,
        rng=rng,
        now_ns=now_ns,
        xleave=xleave,
    )
    if broadcast_delay_ns is not None and isinstance(association, BroadcastAssociation):
        association.broadcast_delay_ns = broadcast_delay_ns
        association.calibrate = broadcast_calibrate
    return association
