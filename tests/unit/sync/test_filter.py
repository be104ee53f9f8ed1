"""ClockFilter: choice by delay, dispersion weights, jitter, the used-once rule, popcorn, shift."""

from __future__ import annotations

from tsyncd.sync.filter import NSTAGE, ClockFilter
from tsyncd.sync.sample import MAXDISP_NS, Sample

S = 1_000_000_000
MS = 1_000_000
US = 1_000
T0 = 1_800_000_000 * S
PRECISION = 1 * US


def smp(offset_ns: int, delay_ns: int, rx_ns: int, dispersion_ns: int = 100 * US) -> Sample:
    return Sample(
        offset_ns=offset_ns,
        delay_ns=delay_ns,
        dispersion_ns=dispersion_ns,
        root_delay_ns=0,
        root_dispersion_ns=0,
        stratum=2,
        leap=0,
        reference_id=0x47505300,
        local_rx_ns=rx_ns,
    )


def test_empty_filter_has_no_output() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    assert f.output(T0) is None and len(f) == 0


def test_lowest_delay_wins_and_equal_delays_prefer_the_newer() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    f.add(smp(5 * MS, 9 * MS, T0))
    f.add(smp(1 * MS, 2 * MS, T0 + S))
    f.add(smp(3 * MS, 4 * MS, T0 + 2 * S))
    out = f.output(T0 + 2 * S)
    assert out is not None and out.sample.offset_ns == 1 * MS
    f.add(smp(7 * MS, 2 * MS, T0 + 3 * S))  # same delay as the best, newer
    out = f.output(T0 + 3 * S)
    assert out is not None and out.sample.offset_ns == 7 * MS


def test_only_eight_stages_are_kept() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    f.add(smp(0, 1 * MS, T0))  # the best sample, shifted out by eight later ones
    for i in range(1, NSTAGE + 1):
        f.add(smp(i * MS, 10 * MS, T0 + i * S))
    out = f.output(T0 + NSTAGE * S)
    assert len(f) == NSTAGE
    assert out is not None and out.sample.delay_ns == 10 * MS


def test_dispersion_weights_halve_down_the_delay_sorted_list() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    now = T0 + 10 * S
    # Added in reverse delay order: the weights follow delay, not arrival.
    f.add(smp(0, 4 * MS, now, dispersion_ns=6_400 * US))
    f.add(smp(0, 3 * MS, now, dispersion_ns=3_200 * US))
    f.add(smp(0, 2 * MS, now, dispersion_ns=1_600 * US))
    f.add(smp(0, 1 * MS, now, dispersion_ns=800 * US))
    out = f.output(now)
    # 800/2 + 1600/4 + 3200/8 + 6400/16 µs
    assert out is not None and out.dispersion_ns == 1_600 * US
    assert out.aged_to_ns == now


def test_every_stage_ages_at_phi() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    f.add(smp(0, 1 * MS, T0, dispersion_ns=1 * MS))
    f.add(smp(0, 2 * MS, T0 + 10 * S, dispersion_ns=2 * MS))
    out = f.output(T0 + 20 * S)
    # (1 ms + 15 µs/s · 20 s)/2 + (2 ms + 15 µs/s · 10 s)/4
    assert out is not None and out.dispersion_ns == 650 * US + 537_500


def test_jitter_is_the_rms_about_the_chosen_offset() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    f.add(smp(10 * MS, 1 * MS, T0))
    f.add(smp(11 * MS, 5 * MS, T0 + S))
    f.add(smp(3 * MS, 6 * MS, T0 + 2 * S))
    out = f.output(T0 + 2 * S)
    # sqrt((1² + 7²)/2) ms
    assert out is not None and out.jitter_ns == 5 * MS


def test_jitter_is_bounded_below_by_the_precision() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    f.add(smp(2 * MS, 1 * MS, T0))
    out = f.output(T0)
    assert out is not None and out.jitter_ns == PRECISION
    f.add(smp(2 * MS + 10, 2 * MS, T0 + S))
    out = f.output(T0 + S)
    assert out is not None and out.jitter_ns == PRECISION


def test_a_sample_is_new_until_marked_used_and_output_has_no_side_effects() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    first = smp(1 * MS, 2 * MS, T0)
    f.add(first)
    out = f.output(T0)
    assert out is not None and out.new and not out.popcorn
    again = f.output(T0 + S)
    assert again is not None and again.new  # asking twice changes nothing
    f.mark_used(first)
    out = f.output(T0 + S)
    assert out is not None and out.sample == first and not out.new
    f.add(smp(1 * MS, 3 * MS, T0 + 2 * S))  # slower: the used sample stays the best
    out = f.output(T0 + 2 * S)
    assert out is not None and out.sample == first and not out.new
    f.add(smp(1 * MS, 1 * MS, T0 + 3 * S))  # faster: a new best
    out = f.output(T0 + 3 * S)
    assert out is not None and out.new and out.sample.local_rx_ns == T0 + 3 * S


def test_never_a_sample_older_than_the_last_used_compared_by_rx_time() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    old = smp(1 * MS, 1 * MS, T0)
    newer = smp(1 * MS, 5 * MS, T0 + 250 * MS)  # sub-second poll: same epoch second
    f.add(old)
    f.add(newer)
    f.mark_used(newer)
    out = f.output(T0 + 300 * MS)
    assert out is not None and out.sample == old and not out.new and not out.popcorn
    f.mark_used(old)  # marking an older sample does not move the mark back
    f.add(smp(1 * MS, 1 * MS, T0 + 100 * MS))  # arrived out of order, older than "newer"
    out = f.output(T0 + 300 * MS)
    assert out is not None and out.sample.local_rx_ns == T0 + 100 * MS and not out.new


def steady_filter(poll_log2: int | None) -> tuple[ClockFilter, int]:
    """Four samples around +1 ms (jitter 100 µs), the best marked used; its rx time."""
    f = ClockFilter(precision_ns=PRECISION, poll_log2=poll_log2)
    f.add(smp(1 * MS + 100 * US, 5 * MS, T0))
    f.add(smp(1 * MS - 100 * US, 5 * MS, T0 + 16 * S))
    f.add(smp(1 * MS + 100 * US, 5 * MS, T0 + 32 * S))
    best = smp(1 * MS, 4 * MS, T0 + 48 * S)
    f.add(best)
    out = f.output(best.local_rx_ns)
    assert out is not None and out.sample == best and out.jitter_ns == 100 * US
    f.mark_used(best)
    return f, best.local_rx_ns


def test_popcorn_spike_is_held_back_but_kept_in_the_register() -> None:
    f, used_rx = steady_filter(poll_log2=4)  # 16 s polls
    spike = smp(5 * MS, 1 * MS, used_rx + 16 * S)  # 4 ms off, 3·jitter is 300 µs
    f.add(spike)
    out = f.output(spike.local_rx_ns)
    assert out is not None and out.sample == spike
    assert out.popcorn and not out.new
    assert len(f) == 5
    assert out.jitter_ns > 3 * MS  # it counts for jitter while it stays


def test_a_lasting_change_gets_through_after_two_poll_intervals() -> None:
    f, used_rx = steady_filter(poll_log2=4)
    f.add(smp(5 * MS, 2 * MS, used_rx + 16 * S))
    out = f.output(used_rx + 16 * S)
    assert out is not None and out.popcorn
    f.add(smp(5 * MS, 1 * MS, used_rx + 32 * S))  # exactly two polls after the used one
    out = f.output(used_rx + 32 * S)
    assert out is not None and out.new and not out.popcorn


def test_a_change_within_sgate_jitters_is_no_spike() -> None:
    f, used_rx = steady_filter(poll_log2=4)
    f.add(smp(1 * MS + 300 * US, 1 * MS, used_rx + 16 * S))  # exactly 3 · 100 µs away
    out = f.output(used_rx + 16 * S)
    assert out is not None and out.new and not out.popcorn


def test_without_a_poll_the_sample_spacing_stands_in() -> None:
    f, used_rx = steady_filter(poll_log2=None)  # samples 16 s apart
    f.add(smp(5 * MS, 1 * MS, used_rx + 31 * S))  # 31 s < 2 · 31 s spacing: a spike
    out = f.output(used_rx + 31 * S)
    assert out is not None and out.popcorn
    f.add(smp(5 * MS, 1 * MS, used_rx + 32 * S), poll_log2=-4)  # poll given: 62.5 ms
    out = f.output(used_rx + 32 * S)
    assert out is not None and out.new and not out.popcorn


def test_shift_moves_every_offset_and_the_used_mark() -> None:
    f, used_rx = steady_filter(poll_log2=4)
    f.shift(1 * MS)  # our clock was stepped forward by 1 ms
    out = f.output(used_rx)
    assert out is not None and out.sample.offset_ns == 0 and out.jitter_ns == 100 * US
    assert not out.new  # still the used sample
    # A post-step sample at the new offset is no spike: the used offset moved too.
    f.add(smp(50 * US, 1 * MS, used_rx + 16 * S))
    out = f.output(used_rx + 16 * S)
    assert out is not None and out.new and not out.popcorn and out.sample.offset_ns == 50 * US


def test_clear_forgets_samples_and_the_used_mark() -> None:
    f, used_rx = steady_filter(poll_log2=4)
    f.clear()
    assert f.output(used_rx) is None and len(f) == 0
    f.add(smp(9 * MS, 1 * MS, used_rx - S))  # older than the forgotten mark
    out = f.output(used_rx)
    assert out is not None and out.new


def test_dummy_stages_weigh_maxdisp_but_are_never_chosen() -> None:
    f = ClockFilter(precision_ns=PRECISION)
    f.add_dummy(T0)
    assert f.output(T0) is None and len(f) == 0
    f.add(smp(2 * MS, 1 * MS, T0 + S, dispersion_ns=1 * MS))
    f.add_dummy(T0 + 2 * S)
    out = f.output(T0 + S)
    assert len(f) == 1
    assert out is not None and out.sample.offset_ns == 2 * MS and out.jitter_ns == PRECISION
    # The sample first (1 ms / 2), then both dummies (MAXDISP / 4 + MAXDISP / 8).
    assert out.dispersion_ns == 500 * US + MAXDISP_NS // 4 + MAXDISP_NS // 8


def test_latest_outlives_the_dummies_follows_steps_and_is_cleared() -> None:
    """The newest real sample stays readable after dummies push it out (chronyc keeps a silent
    source's last sample), moves with a step like the stages, and goes with ``clear``."""
    f = ClockFilter(precision_ns=PRECISION)
    assert f.latest is None
    f.add(smp(3 * MS, 1 * MS, T0))
    f.add(smp(2 * MS, 5 * MS, T0 + S))
    for i in range(NSTAGE):
        f.add_dummy(T0 + (2 + i) * S)
    assert f.output(T0 + 10 * S) is None and len(f) == 0
    assert f.latest is not None and f.latest.offset_ns == 2 * MS and f.latest.local_rx_ns == T0 + S
    f.shift(1 * MS)
    assert f.latest.offset_ns == 1 * MS and f.latest.local_rx_ns == T0 + S + 1 * MS
    f.clear()
    assert f.latest is None
