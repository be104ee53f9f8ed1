"""The system process for the walking skeleton: pick one source and derive the system variables.

This is the "simple best-sample choice" the foundation issue allows: among usable sources take
the lowest stratum, then the smallest root distance, and keep the current system peer while it
stays usable at the best stratum (no clock hopping).  The RFC 5905 §11 intersection, cluster and
combine algorithms replace ``choose`` when the synchronization engine lands; the inputs and
outputs here are the ones it will keep.

System variables follow RFC 5905 §11.2.3: stratum = peer stratum + 1, root delay = peer root
delay + delay, root dispersion = peer root dispersion + peer dispersion + jitter (bounded below
by MINDISP), leap from the peer, refid = the peer's address (IPv6: hashed, RFC 5905 §7.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tsyncd.sync.filter import FilterOutput
from tsyncd.sync.sample import MAXDIST_NS, MINDISP_NS, dispersion_at

LOCAL_REFID: Final = 0x7F7F0101  # 127.127.1.1, chrony's refid for "local stratum"


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """What the system process needs to know about one source."""

    name: str
    reference_id: int  # the refid we announce if this source is selected
    reach: int
    polled: bool  # at least one request sent
    usable: bool  # False when demobilized or otherwise out (reason given)
    unusable_reason: str | None
    estimate: FilterOutput | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemDecision:
    """The outcome of one pass over the candidates."""

    synchronized: bool
    reason: str | None  # why not synchronized
    selected: str | None
    offset_ns: int  # source minus our clock: add this to our clock
    jitter_ns: int
    stratum: int
    reference_id: int
    reference_time_ns: int | None
    root_delay_ns: int
    root_dispersion_ns: int
    leap: int
    states: dict[str, str]  # name -> "selected" | "candidate" | "unreachable" | "unusable" | "init"


def root_distance_ns(est: FilterOutput, now_ns: int) -> int:
    """RFC 5905 A.5.1.1 root_dist: how far this source's time could be from true time."""
    s = est.sample
    return (
        max(MINDISP_NS, s.root_delay_ns + s.delay_ns) // 2
        + s.root_dispersion_ns
        + dispersion_at(est.dispersion_ns, now_ns - s.local_rx_ns)
        + est.jitter_ns
    )


class SystemProcess:
    """Chooses the system peer and computes what we serve."""

    def __init__(self, *, local_stratum: int | None, min_sources: int) -> None:
        self.local_stratum = local_stratum
        self.min_sources = min_sources
        self._selected: str | None = None

    def choose(self, candidates: list[Candidate], now_ns: int) -> SystemDecision:
        """Select a source (or none) and derive the system variables."""
        states: dict[str, str] = {}
        usable: list[tuple[int, int, Candidate, FilterOutput]] = []
        for c in candidates:
            if not c.usable:
                states[c.name] = "unusable"
            elif c.estimate is None:
                states[c.name] = "unreachable" if c.polled and c.reach == 0 else "init"
            elif c.reach == 0:
                states[c.name] = "unreachable"
            else:
                dist = root_distance_ns(c.estimate, now_ns)
                if dist >= MAXDIST_NS:
                    states[c.name] = "unusable"
                    continue
                states[c.name] = "candidate"
                usable.append((c.estimate.sample.stratum, dist, c, c.estimate))
        if len(usable) < self.min_sources or not usable:
            self._selected = None
            return self._unsynchronized(candidates, usable, states)
        usable.sort(key=lambda u: (u[0], u[1]))
        best = usable[0]
        for u in usable:
            if u[2].name == self._selected and u[0] == best[0]:
                best = u  # keep the current system peer: no clock hopping
                break
        _, dist, cand, est = best
        self._selected = cand.name
        states[cand.name] = "selected"
        s = est.sample
        return SystemDecision(
            synchronized=True,
            reason=None,
            selected=cand.name,
            offset_ns=s.offset_ns,
            jitter_ns=est.jitter_ns,
            stratum=min(s.stratum + 1, 16),
            reference_id=cand.reference_id,
            reference_time_ns=s.local_rx_ns,
            root_delay_ns=s.root_delay_ns + s.delay_ns,
            root_dispersion_ns=s.root_dispersion_ns
            + max(MINDISP_NS, dispersion_at(est.dispersion_ns, now_ns - s.local_rx_ns))
            + est.jitter_ns,
            leap=s.leap,
            states=states,
        )

    def _unsynchronized(
        self,
        candidates: list[Candidate],
        usable: list[tuple[int, int, Candidate, FilterOutput]],
        states: dict[str, str],
    ) -> SystemDecision:
        if not candidates:
            reason = "no sources configured"
        elif usable:
            reason = f"{len(usable)} usable source(s), min-sources is {self.min_sources}"
        elif any(state == "init" for state in states.values()):
            reason = "waiting for the first replies from sources"
        else:
            reason = "no source is reachable and usable"
        if self.local_stratum is not None:
            reason += f"; serving the local clock at stratum {self.local_stratum}"
        return SystemDecision(
            synchronized=False,
            reason=reason,
            selected=None,
            offset_ns=0,
            jitter_ns=0,
            stratum=self.local_stratum if self.local_stratum is not None else 16,
            reference_id=LOCAL_REFID if self.local_stratum is not None else 0,
            reference_time_ns=None,
            root_delay_ns=0,
            root_dispersion_ns=0,
            leap=0 if self.local_stratum is not None else 3,
            states=states,
        )
