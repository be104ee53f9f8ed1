"""One measurement of a source's clock against ours, as the association hands it on."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

PHI_PPM: Final = 15  # RFC 5905 §7.5 frequency tolerance: dispersion grows 15 µs per second
MAXDISP_NS: Final = 16_000_000_000  # RFC 5905 MAXDISP, 16 s
MAXDIST_NS: Final = 1_000_000_000  # RFC 5905 MAXDIST, 1 s: farther sources are not selectable
MINDISP_NS: Final = 5_000_000  # RFC 5905 body MINDISP, 5 ms


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """A valid reply turned into numbers (RFC 5905 §8); all times integer nanoseconds."""

    offset_ns: int  # theta: source clock minus our clock
    delay_ns: int  # delta: round trip minus the server's processing time
    dispersion_ns: int  # epsilon_0: precisions plus PHI over the round trip
    root_delay_ns: int  # the source's root delay, as it reported
    root_dispersion_ns: int  # the source's root dispersion, as it reported
    stratum: int
    leap: int  # 0..2 (3 never reaches a sample)
    reference_id: int
    local_rx_ns: int  # T4, our clock's Unix ns when the reply arrived
    interleaved: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyHeader:
    """What the last valid reply said of its sender beyond the sample (chronyc ntpdata's
    Version, Precision, Reference time, Response time), kept for ``tsyncctl ntpdata``."""

    version: int  # NTP version of the reply
    precision: int  # log2 s, the sender's clock precision
    reference_ts: int  # raw NTP timestamp: when the sender's clock was last set; 0 if unset
    # T3 - T2 of the exchange measured: how long the server held it (an interleaved reply's
    # T2 is the previous reply's Receive); None for a broadcast, which answers nothing
    response_ns: int | None


def dispersion_at(dispersion_ns: int, since_ns: int) -> int:
    """Dispersion after ``since_ns`` of ageing at PHI (RFC 5905 §9.1)."""
    return dispersion_ns + max(0, since_ns) * PHI_PPM // 1_000_000


def shifted(sample: Sample, step_ns: int) -> Sample:
    """``sample`` as seen after our clock stepped by ``step_ns``: the source is ``step_ns``
    less ahead of the clock, and the clock read ``step_ns`` later when it arrived (else a step
    back would make it look younger than it is)."""
    return replace(
        sample, offset_ns=sample.offset_ns - step_ns, local_rx_ns=sample.local_rx_ns + step_ns
    )
