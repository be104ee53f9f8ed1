"""The per-source clock filter (RFC 5905 §10, Appendix A.5.2).

Theory of operation
-------------------
Eight stages hold the most recent samples of one source.  Queueing only ever adds delay, so the
exchange with the smallest round trip is the least distorted: ``output()`` sorts the stages by
delay and reports the first one's offset.  Around it the filter derives:

* the filter dispersion ``ε = Σ ε_i / 2^(i+1)`` over the delay-sorted stages, where each stage's
  ``ε_i`` has grown at PHI since its sample arrived (the older the sample, the less it says
  about the clock now);
* the jitter, the RMS of the other samples' offsets about the chosen one, bounded below by the
  system precision (we cannot claim to be steadier than we can read the clock).

RFC 5905 uses a sample only once and never one older than the last one used; a sample that
passes that test is ``new``.  ``output()`` only reports, it changes nothing: the caller says
with ``mark_used(sample)`` that it consumed a new sample (RFC 5905 sets ``p.t`` at that point).
Before anything is marked used, every chosen sample is new.

The popcorn spike suppressor holds back a chosen sample whose offset is more than SGATE times
the jitter away from the last used one, unless two poll intervals have passed since that last
sample: an isolated spike is ignored, a real change in offset gets through after two polls.
A held-back sample stays in the register (it still counts for jitter and dispersion).

Deviations from RFC 5905, on purpose:

* Empty stages do not exist.  The RFC pre-fills the register with dummy stages of MAXDISP,
  which keeps a new source unselectable for about four polls; we report from the first sample
  (its dispersion and the precision-bounded jitter are honest about how little we know).  The
  "three polls unanswered" dummy of RFC 5905 §13 is ``add_dummy``: it never becomes the chosen
  sample and does not count for jitter, but its MAXDISP weighs in the dispersion as in the RFC.
* Sample ages compare ``Sample.local_rx_ns`` (T4 on our clock), not the RFC's poll epochs: with
  sub-second polls in tests several samples share an epoch second.
* Every stage is aged to the ``now`` given to ``output()``, so the root distance adds no further
  PHI term for the time since the filter last ran (``FilterOutput.aged_to_ns`` says when that was).
* Popcorn compares against the jitter as it stood when the last sample was used: the jitter
  recomputed with the spike as the chosen sample is inflated by that very spike, so the RFC's
  test almost never fires.  The poll interval is the one given to ``add()``; without one, the
  spacing between the two newest samples stands in for it.
* Equal delays prefer the newer sample.
* Offsets are corrected for our own slews since they were measured (``slewed``, from the
  discipline; steps are ``shift``): a sample taken before the clock slewed out 100 ms still says
  the clock is 100 ms off, and, being the lowest-delay one, would keep saying it for eight
  polls, to the selection (two agreeing servers looking like falsetickers), the jitter and
  the root dispersion we serve.  chrony corrects its stored samples the same way.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from tsyncd.sync.sample import MAXDISP_NS, Sample, dispersion_at, shifted

NSTAGE: Final = 8  # RFC 5905 NSTAGE: clock filter stages
SGATE: Final = 3  # RFC 5905 A: popcorn spike gate, in multiples of the jitter


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterOutput:
    """What the filter believes about a source right now."""

    sample: Sample  # the chosen (lowest-delay) sample
    jitter_ns: int  # RMS of the other offsets about the chosen one, >= precision
    dispersion_ns: int  # filter dispersion, every stage aged to ``aged_to_ns``
    new: bool = False  # the chosen sample may be used: newer than the last used, no spike
    popcorn: bool = False  # the chosen sample is newer but held back as a popcorn spike
    aged_to_ns: int | None = None  # when the dispersion was aged to (None: the sample's rx)


@dataclass(frozen=True, slots=True)
class _Used:
    """The last sample the caller used, for the age rule and the popcorn test."""

    rx_ns: int
    offset_ns: int
    jitter_ns: int  # the filter jitter when it was used


class ClockFilter:
    """Eight-stage shift register of samples; pick by minimum delay (RFC 5905 §10)."""

    def __init__(self, precision_ns: int, *, poll_log2: int | None = None) -> None:
        # A stage is a sample, or None for a dummy (the poll process's "no reply" marker).
        self._stages: deque[tuple[Sample | None, int]] = deque(maxlen=NSTAGE)
        self._precision_ns = max(1, precision_ns)
        self._poll_log2 = poll_log2
        self._used: _Used | None = None
        # The newest real sample, kept after dummies push it out: what chronyc's "Last sample"
        # shows for a source gone silent.
        self.latest: Sample | None = None
        # (measured at, now) -> phase our own slews moved the clock by in between: the sync
        # core sets the discipline's; None: no correction.
        self.slewed: Callable[[int, int], int] | None = None

    # ---------------------------------------------------------------- inputs

    def add(self, sample: Sample, *, poll_log2: int | None = None) -> None:
        """Shift a new sample in (the oldest stage falls out).

        ``poll_log2`` is the poll interval in effect, for the popcorn suppressor's "two poll
        intervals" window; it is remembered until the next one is given.
        """
        if poll_log2 is not None:
            self._poll_log2 = poll_log2
        self._stages.append((sample, sample.local_rx_ns))
        self.latest = sample

    def add_dummy(self, now_ns: int) -> None:
        """Shift in RFC 5905's (0, 0, MAXDISP) stage: three polls went unanswered.

        The dummy is never chosen and has no offset to count for jitter; its MAXDISP inflates the
        filter dispersion so a silent source drifts out of selection.
        """
        self._stages.append((None, now_ns))

    def mark_used(self, sample: Sample) -> None:
        """The caller consumed ``sample`` (normally ``output().sample`` when ``new``).

        From now on only samples received after it are new, and popcorn spikes are measured
        against its offset.  Marking an older sample than the last used one changes nothing.
        """
        if self._used is not None and sample.local_rx_ns <= self._used.rx_ns:
            return
        ordered = self._ordered()
        jitter = self._jitter(ordered) if ordered else self._precision_ns
        self._used = _Used(rx_ns=sample.local_rx_ns, offset_ns=sample.offset_ns, jitter_ns=jitter)

    def shift(self, offset_ns: int) -> None:
        """Our clock was stepped by ``offset_ns``: every stored offset shrinks by as much.

        The offsets were measured against a clock that now reads ``offset_ns`` later, so the
        source is ``offset_ns`` less ahead of it, and the times they were taken at read
        ``offset_ns`` later too (else a step back would make them look younger than they are,
        and their dispersion would stop growing).  Delays and dispersions are unaffected.
        """
        self._stages = deque(
            (
                (shifted(s, offset_ns) if s is not None else None, t + offset_ns)
                for s, t in self._stages
            ),
            maxlen=NSTAGE,
        )
        if self._used is not None:
            self._used = replace(
                self._used,
                rx_ns=self._used.rx_ns + offset_ns,
                offset_ns=self._used.offset_ns - offset_ns,
            )
        if self.latest is not None:
            self.latest = shifted(self.latest, offset_ns)

    def clear(self) -> None:
        """Forget everything, including which sample was last used."""
        self._stages.clear()
        self._used = None
        self.latest = None

    def samples(self) -> list[Sample]:
        """The real samples held, oldest first (for statistics; selection uses ``output``)."""
        return [s for s, _ in self._stages if s is not None]

    def __len__(self) -> int:
        """How many real samples (not dummies) the register holds."""
        return sum(1 for s, _ in self._stages if s is not None)

    # ---------------------------------------------------------------- output

    def output(self, now_ns: int) -> FilterOutput | None:
        """The chosen sample, jitter and dispersion at ``now_ns``; None without a sample.

        Side-effect free: call ``mark_used(out.sample)`` after using a ``new`` output.
        """
        ordered = self._ordered(now_ns)
        if not ordered:
            return None
        best = ordered[0]
        jitter = self._jitter(ordered)
        disp = 0
        for i, (s, t) in enumerate(self._dispersion_order(ordered)):
            eps = MAXDISP_NS if s is None else dispersion_at(s.dispersion_ns, now_ns - t)
            disp += min(eps, MAXDISP_NS) >> (i + 1)
        new = self._used is None or best.local_rx_ns > self._used.rx_ns
        popcorn = new and self._is_spike(best, now_ns)
        return FilterOutput(
            sample=best,
            jitter_ns=jitter,
            dispersion_ns=disp,
            new=new and not popcorn,
            popcorn=popcorn,
            aged_to_ns=now_ns,
        )

    # ---------------------------------------------------------------- helpers

    def _ordered(self, now_ns: int | None = None) -> list[Sample]:
        """Real samples by increasing delay; equal delays newest first.  With ``now_ns``, each
        offset corrected for our slews since it was measured."""
        real = [s for s, _ in self._stages if s is not None]
        slewed = self.slewed
        if slewed is not None and now_ns is not None:
            real = [self._corrected(s, slewed(s.local_rx_ns, now_ns)) for s in real]
        return sorted(real, key=lambda s: (s.delay_ns, -s.local_rx_ns))

    @staticmethod
    def _corrected(sample: Sample, slewed_ns: int) -> Sample:
        return replace(sample, offset_ns=sample.offset_ns - slewed_ns) if slewed_ns else sample

    def _dispersion_order(self, ordered: list[Sample]) -> list[tuple[Sample | None, int]]:
        """All stages as the dispersion sum weighs them: samples by delay, then dummies."""
        stages: list[tuple[Sample | None, int]] = [(s, s.local_rx_ns) for s in ordered]
        return stages + [(s, t) for s, t in self._stages if s is None]

    def _jitter(self, ordered: list[Sample]) -> int:
        """RFC 5905 §10 peer jitter about the chosen sample, bounded below by the precision."""
        best, others = ordered[0], ordered[1:]
        if not others:
            return self._precision_ns
        sq = sum((s.offset_ns - best.offset_ns) ** 2 for s in others)
        return max(math.isqrt(sq // len(others)), self._precision_ns)

    def _is_spike(self, best: Sample, now_ns: int) -> bool:
        """RFC 5905 A.5.2 popcorn test of ``best`` against the last used sample (both as
        corrected for our slews since)."""
        used = self._used
        if used is None:
            return False
        used_offset = used.offset_ns
        if self.slewed is not None:
            used_offset -= self.slewed(used.rx_ns, now_ns)
        if abs(best.offset_ns - used_offset) <= SGATE * used.jitter_ns:
            return False
        return best.local_rx_ns - used.rx_ns < 2 * self._poll_interval_ns()

    def _poll_interval_ns(self) -> int:
        """The poll interval given to ``add``, else the spacing of the two newest samples."""
        if self._poll_log2 is not None:
            p = self._poll_log2
            return 1_000_000_000 << p if p >= 0 else 1_000_000_000 >> -p
        times = [t for s, t in self._stages if s is not None]
        return times[-1] - times[-2] if len(times) >= 2 else 0
