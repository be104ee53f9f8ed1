"""The system process (RFC 5905 §11): from every source's filter output to the system variables.

Theory of operation
-------------------
``SystemProcess.choose`` runs one pass over all sources:

1. accept() (RFC 5905 A.5.5.3) sorts out sources that cannot take part: unreachable (reach 0),
   unsynchronized (stratum 16 or leap alarm), too far (root distance over MAXDIST plus what
   PHI adds over one poll interval), or synchronized to our own reference (a loop, see below).
2. The selection, clustering and combining algorithms of ``tsyncd.sync.select`` find the
   truechimers, prune outliers, pick the system peer (without clock hopping) and average the
   survivors' offsets into the system offset.
3. The system variables we serve follow the system peer (RFC 5905 §11.2.3 and A.5.5.6):
   stratum + 1, its leap, refid and reference time; root delay = its root delay + delay; root
   dispersion = its root dispersion plus an increment of its filter dispersion (aged to now),
   its |offset| and sqrt(peer jitter² + system jitter²), the increment at least MINDISP so that
   sources at the same stratum cannot pass time back and forth without it growing.

Every source ends in one state, chrony-like: "selected" (system peer), "candidate" (a survivor
combined into the offset), "outlier" (a truechimer that clustering dropped, or left out for a
prefer source), "falseticker" (outside the majority interval, or no majority at all),
"unreachable", "unusable", "noselect" (configured so: measured, never selected, and not a vote
in the selection either) or "init" (no reply yet).  ``SystemDecision.reasons`` says why for
every source but the system peer.

Source options, as chrony's: ``noselect`` sources are left out before the selection;
``prefer`` sources, when any of them survives clustering, are the only survivors the system
peer is picked from and combined (the others become outliers), so a preferred source (a local
reference clock, a trusted LAN server) steers the clock while the others still vote in the
selection and so can outvote it as a falseticker.  With ``trust`` sources the selection is
chronyd's (``select.intersect_trusting``): the interval is the one covered by the most trust
sources and then by the most sources, only the trust sources vote on the majority (so only
another trust source can outvote one), and the other sources are used when they agree with
that interval and lie within the trust sources' (a more accurate LAN server inside a trusted
internet source's interval is combined with it); one that agrees but reaches outside the trust
sources' interval is out ("T").  While no ``require`` source is selectable, no source is used.

The loop tests.  RFC 5905's fit() rejects a source whose refid is our own address: it is
synchronized to us.  Our address is the IO edge's to find (where our packets to the source
leave from); the association checks each reply against it (chronyd's test D, drop reason
``loop``) and the candidate says so (``synchronized_to_us``), which keeps two servers on their
local clocks that poll each other from both selecting the other.  RFC 5905 also rejects a
source whose refid equals the system refid.  Taken literally that drops every sibling
synchronized to our own system peer, which is no loop, so we reject a source, other than the
system peer, only when its refid is the refid we announce and its stratum is at least ours: its
time comes from our reference by a path no shorter than ours, so taking it could only route our
reference back to us one hop longer.

The loop test alone leaves two servers on their local clocks that poll each other a race at
start-up: each takes the other's local clock at once, sees it synchronized to itself, drops
it, and both can keep doing that in step.  So while we have a ``local_stratum``, a source
serving its own local clock (refid 127.127.1.1, chronyd's and ours, or ntpd's "LOCL") at a
stratum not below it is not selected (chronyd's ``local orphan`` ignores such sources at the
local stratum): its clock is no better than ours.  The lower local stratum then serves and the
other follows it, as two chronyds settle.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Final

from tsyncd.sync.filter import FilterOutput
from tsyncd.sync.sample import MAXDIST_NS, MINDISP_NS, PHI_PPM, dispersion_at
from tsyncd.sync.select import (
    Contender,
    cluster,
    combine,
    intersect_trusting,
    pick_system_peer,
)
from tsyncd.wire.ntp import refid_to_str

LOCAL_REFID: Final = 0x7F7F0101  # 127.127.1.1, chrony's refid for "local stratum"
# Refids of servers on their own clocks: ours and chronyd's; ntpd's local clock driver's "LOCL".
_LOCAL_CLOCK_REFIDS: Final = frozenset({LOCAL_REFID, 0x4C4F434C})
MAXSTRAT: Final = 16  # RFC 5905: stratum 16 means unsynchronized
# The reason with no candidates at all; the daemon, which knows of the sources that have no
# association yet (names not resolved), says so instead (daemon_snapshots).
NO_SOURCES: Final = "no sources configured"
_NS_PER_S: Final = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """What the system process needs to know about one source."""

    name: str
    reference_id: int  # the refid we announce if this source is selected
    reach: int
    polled: bool  # at least one request sent
    replied: bool = False  # at least one valid reply came (it may since have gone silent)
    usable: bool  # False when demobilized or otherwise out (reason given)
    unusable_reason: str | None
    estimate: FilterOutput | None
    poll_log2: int | None = None  # the source's poll interval; None: no PHI·poll allowance
    noselect: bool = False  # measured and shown, never in the selection (chrony's noselect)
    unsynchronized: bool = False  # its last reply said so (leap alarm or stratum 0)
    synchronized_to_us: int | None = None  # its last reply's refid is our address (that refid)
    drops: tuple[tuple[str, int], ...] = ()  # (reason, count) of replies dropped since a valid one
    prefer: bool = False  # if any prefer source survives, only those are combined (chrony's)
    trust: bool = False  # outvoted only by other trust sources; the others must lie within them
    require: bool = False  # while no require source is selectable, nothing is (chrony's)
    leap: int = 0  # leap indicator of its latest sample: what we announce if it is selected


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectData:
    """How the last selection saw one source, as ``chronyc selectdata`` shows it."""

    # chronyc's letters: "*" system peer, "+" combined; selectable but not combined: "W" too
    # few agree (min-sources) or no require source is selectable, "P" a prefer source survives,
    # "D" dropped by clustering (too far from the others to be combined, chrony's
    # combinelimit); not selectable: "x" falseticker, "T" not fully inside the trust sources'
    # interval, "N" noselect, "M" no measurement yet, "S" no reply to the last 8 polls, "s"
    # unsynchronized (leap alarm, stratum 16, a loop through us, or a local clock no better
    # than ours), "d" root distance too large.  One letter of our own: "?", out for the
    # association's reason (a KoD, a failed NTS-KE, ...).
    code: str
    # [offset - Λ, offset + Λ] in ns, source time minus our clock: where the truth was expected
    # at the selection (RFC 5905 correctness interval); None without a measurement.
    interval_ns: tuple[int, int] | None = None
    age_ns: int | None = None  # from the measurement used to the selection


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemDecision:
    """The outcome of one pass over the candidates."""

    synchronized: bool
    reason: str | None  # why not synchronized
    selected: str | None  # the system peer
    offset_ns: int  # the combined offset, source time minus our clock: add this to our clock
    jitter_ns: int  # the system jitter
    stratum: int
    reference_id: int
    reference_time_ns: int | None  # local rx time of the system peer's chosen sample
    root_delay_ns: int
    root_dispersion_ns: int
    leap: int
    # name -> "selected" | "candidate" | "outlier" | "falseticker" | "unreachable" |
    # "unusable" | "noselect" | "init"
    states: dict[str, str]
    combined_offset_ns: int = 0  # Θ, the same as offset_ns
    system_jitter_ns: int = 0  # sqrt(Ψ_s² + Ψ_p²), the same as jitter_ns
    survivors: tuple[str, ...] = ()  # combined sources, best merit first
    reasons: dict[str, str] = field(default_factory=dict)  # name -> why it is not selected
    selection: dict[str, SelectData] = field(default_factory=dict)  # name -> selectdata row


def root_distance_ns(est: FilterOutput, now_ns: int) -> int:
    """RFC 5905 A.5.1.1 root_dist Λ: how far this source's time could be from true time.

    The filter dispersion is aged from when the filter computed it (``aged_to_ns``, else the
    sample's arrival) to ``now_ns``.
    """
    s = est.sample
    since = est.aged_to_ns if est.aged_to_ns is not None else s.local_rx_ns
    return (
        max(MINDISP_NS, s.root_delay_ns + s.delay_ns) // 2
        + s.root_dispersion_ns
        + dispersion_at(est.dispersion_ns, now_ns - since)
        + est.jitter_ns
    )


def _selection(
    candidates: list[Candidate], codes: dict[str, str], now_ns: int
) -> dict[str, SelectData]:
    """Each source's selectdata row: its letter, and where its measurement put the truth."""
    rows: dict[str, SelectData] = {}
    for c in candidates:
        est = c.estimate
        if est is None:
            rows[c.name] = SelectData(code=codes.get(c.name, "?"))
            continue
        offset = est.sample.offset_ns
        dist = root_distance_ns(est, now_ns)
        rows[c.name] = SelectData(
            code=codes.get(c.name, "?"),
            interval_ns=(offset - dist, offset + dist),
            age_ns=now_ns - est.sample.local_rx_ns,
        )
    return rows


def max_distance_ns(poll_log2: int | None, maxdist_ns: int = MAXDIST_NS) -> int:
    """RFC 5905 A.5.5.3: MAXDIST (or ``max-distance``) plus what PHI adds over one poll."""
    if poll_log2 is None:
        return maxdist_ns
    interval = _NS_PER_S << poll_log2 if poll_log2 >= 0 else _NS_PER_S >> -poll_log2
    return maxdist_ns + interval * PHI_PPM // 1_000_000


def _with_drops(why: str, drops: tuple[tuple[str, int], ...]) -> str:
    """``why`` a source has no valid reply, with what became of the replies that came:
    "no valid reply yet: 15 dropped, bad_mac" (several reasons: "..., 12 bad_mac, 3 bogus")."""
    if not drops:
        return why
    total = sum(n for _, n in drops)
    ranked = sorted(drops, key=lambda d: (-d[1], d[0]))
    reasons = ranked[0][0] if len(ranked) == 1 else ", ".join(f"{n} {r}" for r, n in ranked)
    return f"{why}: {total} dropped, {reasons}"


def _seconds(ns: int, digits: int = 3) -> str:
    return f"{ns / _NS_PER_S:.{digits}g} s"


def _exceeds(ns: int, limit_ns: int) -> str:
    """The text "X exceeds LIMIT", with as many digits as it takes for X to read larger
    (1.0004 s over 1 s is not "1 s exceeds 1 s")."""
    for digits in range(3, 10):
        value, limit = _seconds(ns, digits), _seconds(limit_ns, digits)
        if value != limit:
            break
    return f"{value} exceeds {limit}"


@dataclass(frozen=True, slots=True)
class _Rejected:
    """accept() said no: the source's state and why."""

    state: str
    reason: str
    code: str  # chronyc selectdata's letter (SelectData.code)


class SystemProcess:
    """Chooses the system peer, combines the survivors and computes what we serve."""

    def __init__(
        self, *, local_stratum: int | None, min_sources: int, max_distance_ns: int = MAXDIST_NS
    ) -> None:
        self.local_stratum = local_stratum
        self.min_sources = min_sources
        self.max_distance_ns = max_distance_ns  # RFC 5905 MAXDIST, chrony's maxdistance
        self._selected: str | None = None
        self._announced: tuple[int, int] | None = None  # (refid, stratum) while synchronized

    def forget_system_peer(self) -> None:
        """Let the next ``choose`` pick the best survivor, not keep the current system peer
        (anti-clockhop, ``pick_system_peer``); the loop test keeps what we announce."""
        self._selected = None

    def choose(self, candidates: list[Candidate], now_ns: int) -> SystemDecision:
        """Select, cluster and combine; derive the system variables.

        Call again whenever a source's filter output or reach changes; the process remembers
        only the current system peer (anti-clockhop) and the refid and stratum it announces
        (loop test).
        """
        states: dict[str, str] = {}
        reasons: dict[str, str] = {}
        codes: dict[str, str] = {}
        contenders: list[Contender] = []
        by_name: dict[str, tuple[Candidate, FilterOutput]] = {}
        for c in candidates:
            verdict = self._accept(c, now_ns)
            if isinstance(verdict, _Rejected):
                states[c.name] = verdict.state
                reasons[c.name] = verdict.reason
                codes[c.name] = verdict.code
                continue
            contenders.append(verdict[0])
            by_name[c.name] = (c, verdict[1])
        if not contenders:
            if not candidates:
                reason = NO_SOURCES
            elif "init" in states.values():
                reason = "waiting for the first replies from sources"
            else:
                reason = "no source is reachable and usable"
            return self._unsynchronized(reason, states, reasons, codes, candidates, now_ns)

        trusted = frozenset(name for name, (c, _) in by_name.items() if c.trust)
        chosen, untrusted = intersect_trusting(contenders, trusted)
        if chosen is None:
            among = f"{len(trusted)} trust sources" if trusted else f"{len(contenders)} sources"
            reason = f"no majority agreement among {among}"
            for ct in contenders:
                states[ct.name] = "falseticker"
                reasons[ct.name] = reason
                codes[ct.name] = "x"
            return self._unsynchronized(reason, states, reasons, codes, candidates, now_ns)
        for name in chosen.falsetickers:
            states[name] = "falseticker"
            reasons[name] = "outside the majority interval"
            codes[name] = "x"
        for name in untrusted:
            states[name] = "falseticker"
            reasons[name] = "does not fully agree with the trust sources (reaches outside them)"
            codes[name] = "T"
        truechimers = [ct for ct in contenders if ct.name in chosen.truechimers]
        required = [c.name for c in candidates if c.require]
        if required and not set(required) & set(chosen.truechimers):
            reason = "no require source is selectable"
            for ct in truechimers:
                states[ct.name] = "candidate"
                reasons[ct.name] = f"{reason} ({', '.join(required)})"
                codes[ct.name] = "W"
            return self._unsynchronized(reason, states, reasons, codes, candidates, now_ns)
        if len(truechimers) < self.min_sources:
            reason = f"{len(truechimers)} source(s) agree, min-sources is {self.min_sources}"
            for ct in truechimers:
                states[ct.name] = "candidate"
                reasons[ct.name] = reason
                codes[ct.name] = "W"
            return self._unsynchronized(reason, states, reasons, codes, candidates, now_ns)

        immune = frozenset(ct.name for ct in truechimers if by_name[ct.name][0].prefer)
        if self._selected is not None:
            immune |= {self._selected}
        clustering = cluster(truechimers, immune=immune)
        survivors = clustering.survivors
        for name in clustering.outliers:
            states[name] = "outlier"
            reasons[name] = "dropped by clustering: too far from the other sources"
            codes[name] = "D"
        preferred = tuple(ct for ct in survivors if by_name[ct.name][0].prefer)
        if preferred and len(preferred) < len(survivors):
            for ct in survivors:
                if ct not in preferred:
                    states[ct.name] = "outlier"
                    reasons[ct.name] = "not combined: a prefer source survives"
                    codes[ct.name] = "P"
            survivors = preferred
        peer = pick_system_peer(survivors, self._selected)
        combo = combine(survivors, peer, selection_jitter_ns=clustering.selection_jitter_ns)
        for ct in survivors:
            states[ct.name] = "candidate"
            reasons[ct.name] = f"combined with weight {float(combo.weights[ct.name]):.0%}"
            codes[ct.name] = "+"
        states[peer.name] = "selected"
        del reasons[peer.name]
        codes[peer.name] = "*"

        cand, est = by_name[peer.name]
        s = est.sample
        since = est.aged_to_ns if est.aged_to_ns is not None else s.local_rx_ns
        increment = (
            dispersion_at(est.dispersion_ns, now_ns - since)
            + abs(s.offset_ns)
            + math.isqrt(est.jitter_ns**2 + combo.system_jitter_ns**2)
        )
        stratum = min(s.stratum + 1, MAXSTRAT)
        self._selected = peer.name
        self._announced = (cand.reference_id, stratum)
        return SystemDecision(
            synchronized=True,
            reason=None,
            selected=peer.name,
            offset_ns=combo.offset_ns,
            jitter_ns=combo.system_jitter_ns,
            stratum=stratum,
            reference_id=cand.reference_id,
            reference_time_ns=s.local_rx_ns,
            root_delay_ns=s.root_delay_ns + s.delay_ns,
            root_dispersion_ns=s.root_dispersion_ns + max(MINDISP_NS, increment),
            leap=cand.leap,  # RFC 5905: the system peer's latest packet, not an older sample
            states=states,
            combined_offset_ns=combo.offset_ns,
            system_jitter_ns=combo.system_jitter_ns,
            survivors=tuple(ct.name for ct in survivors),
            reasons=reasons,
            selection=_selection(candidates, codes, now_ns),
        )

    def _accept(self, c: Candidate, now_ns: int) -> _Rejected | tuple[Contender, FilterOutput]:
        """RFC 5905 A.5.5.3 fitness, checked in the RFC's order; the contender if fit."""
        if not c.usable:
            return _Rejected("unusable", c.unusable_reason or "demobilized", "?")
        if c.noselect:
            return _Rejected("noselect", "configured with noselect: measured, never selected", "N")
        if c.unsynchronized:
            return _Rejected("unusable", "source is unsynchronized (its last reply says so)", "s")
        if c.synchronized_to_us is not None:
            ours = refid_to_str(c.synchronized_to_us, 2)
            why = f"synchronization loop: synchronized to us (its reference ID {ours} is ours)"
            return _Rejected("unusable", why, "s")
        est = c.estimate
        if est is None:
            if c.polled and c.reach == 0 and c.replied:
                # Its samples were all pushed out of the filter by polls that went unanswered
                # (RFC 5905 §13): silent now, not a source that never answered.
                why = c.unusable_reason or "no valid reply to the last 8 polls"
                return _Rejected("unreachable", _with_drops(why, c.drops), "S")
            if c.polled and c.reach == 0:
                why = _with_drops(c.unusable_reason or "no valid reply yet", c.drops)
                return _Rejected("unreachable", why, "M")
            return _Rejected("init", c.unusable_reason or "waiting for the first reply", "M")
        if c.reach == 0:
            why = c.unusable_reason or "no valid reply to the last 8 polls"
            return _Rejected("unreachable", _with_drops(why, c.drops), "S")
        s = est.sample
        if s.leap == 3:
            return _Rejected("unusable", "source is unsynchronized (leap alarm)", "s")
        if s.stratum >= MAXSTRAT:
            return _Rejected("unusable", f"source is unsynchronized (stratum {s.stratum})", "s")
        local = self.local_stratum
        if local is not None and s.reference_id in _LOCAL_CLOCK_REFIDS and s.stratum >= local:
            why = f"serves its local clock at stratum {s.stratum}, not below ours ({local})"
            return _Rejected("unusable", why, "s")
        dist = root_distance_ns(est, now_ns)
        limit = max_distance_ns(c.poll_log2, self.max_distance_ns)
        if dist > limit:
            return _Rejected("unusable", f"distance {_exceeds(dist, limit)}", "d")
        if self._announced is not None and c.name != self._selected:
            refid, stratum = self._announced
            if s.reference_id == refid and s.stratum >= stratum:
                why = (
                    f"synchronization loop: synchronized to our reference "
                    f"{refid_to_str(refid, stratum)} at stratum {s.stratum}"
                )
                return _Rejected("unusable", why, "s")
        contender = Contender(
            name=c.name,
            offset_ns=s.offset_ns,
            root_distance_ns=dist,
            stratum=s.stratum,
            jitter_ns=est.jitter_ns,
        )
        return contender, est

    def refusing(self, d: SystemDecision, reason: str) -> SystemDecision:
        """``d``, a synchronized outcome, as reported while the clock is not kept to it (the
        discipline refuses its offset): unsynchronized for ``reason``, serving what we serve
        when unsynchronized; the system peer, its offset and every source's verdict stay, for
        tsyncctl makestep and the sources views."""
        own = self._own_clock(reason, d.states, d.reasons, d.selection)
        return dataclasses.replace(
            own,
            selected=d.selected,
            offset_ns=d.offset_ns,
            jitter_ns=d.jitter_ns,
            combined_offset_ns=d.combined_offset_ns,
            system_jitter_ns=d.system_jitter_ns,
            survivors=d.survivors,
        )

    def _unsynchronized(
        self,
        reason: str,
        states: dict[str, str],
        reasons: dict[str, str],
        codes: dict[str, str],
        candidates: list[Candidate],
        now_ns: int,
    ) -> SystemDecision:
        self._selected = None
        self._announced = None
        return self._own_clock(reason, states, reasons, _selection(candidates, codes, now_ns))

    def _own_clock(
        self,
        reason: str,
        states: dict[str, str],
        reasons: dict[str, str],
        selection: dict[str, SelectData],
    ) -> SystemDecision:
        """Unsynchronized for ``reason``, serving what we serve then: the local clock at
        ``local_stratum``, else stratum 16 with the leap alarm."""
        if self.local_stratum is not None:
            reason += f"; serving the local clock at stratum {self.local_stratum}"
        return SystemDecision(
            synchronized=False,
            reason=reason,
            selected=None,
            offset_ns=0,
            jitter_ns=0,
            stratum=self.local_stratum if self.local_stratum is not None else MAXSTRAT,
            reference_id=LOCAL_REFID if self.local_stratum is not None else 0,
            reference_time_ns=None,
            root_delay_ns=0,
            root_dispersion_ns=0,
            leap=0 if self.local_stratum is not None else 3,
            states=states,
            reasons=reasons,
            selection=selection,
        )
