"""TSQ sample checks and combining, with spelled-out timestamps."""

from __future__ import annotations

import pytest

from tsyncd.sync.tsq import Rejected, TsqSample, combine, evaluate
from tsyncd.wire.timestamps import NTP_ERA_NS, ntp64_from_unix_ns
from tsyncd.wire.tsq import TsqErrorReply, TsqResponse

NONCE = bytes(range(16))
T1 = 1_795_393_392_000_000_000  # 2026-11-23


def reply(t2_ns: int, t3_ns: int, nonce: bytes = NONCE) -> TsqResponse:
    return TsqResponse(
        nonce=nonce, receive_ts=ntp64_from_unix_ns(t2_ns), send_ts=ntp64_from_unix_ns(t3_ns)
    )


def test_offset_and_delay() -> None:
    # Server 5 ms ahead, 1 ms each way, 10 µs inside the server.
    s = evaluate(reply(T1 + 6_000_000, T1 + 6_010_000), nonce=NONCE, t1_ns=T1, t4_ns=T1 + 2_010_000)
    assert s.offset_ns == 5_000_000 and s.delay_ns == 2_000_000


def test_across_the_2036_era_boundary() -> None:
    t1 = NTP_ERA_NS - 2_208_988_800 * 10**9 - 1_000_000  # 1 ms before 2036-02-07T06:28:16Z
    s = evaluate(reply(t1 + 2_000_000, t1 + 2_000_000), nonce=NONCE, t1_ns=t1, t4_ns=t1 + 2_000_000)
    assert s.offset_ns == 1_000_000 and s.delay_ns == 2_000_000


@pytest.mark.parametrize(
    ("r", "t4", "reason"),
    [
        (TsqErrorReply(code=1, reason="x"), T1 + 1, "error_reply"),
        (reply(T1, T1, nonce=bytes(16)), T1 + 1_000, "bad_nonce"),
        (reply(T1 + 500, T1 + 400), T1 + 1_000, "t3_before_t2"),
        (reply(T1, T1 + 1_000_000), T1 + 1_000, "negative_delay"),
    ],
)
def test_rejections(r: TsqResponse | TsqErrorReply, t4: int, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        evaluate(r, nonce=NONCE, t1_ns=T1, t4_ns=t4)
    assert info.value.reason == reason


def sample(offset: int, delay: int) -> TsqSample:
    return TsqSample(offset_ns=offset, delay_ns=delay, t1_ns=0, t4_ns=0, t2=0, t3=0)


def test_combine_drops_slow_samples_and_weights_by_delay() -> None:
    # A queued sample (delay 50 ms, offset 20 ms) must not pull the result.
    slow = sample(20_000_000, 50_000_000)
    c = combine([sample(100_000, 100_000), sample(300_000, 200_000), slow])
    assert c.used == 2 and c.total == 3 and c.delay_ns == 100_000
    assert c.offset_ns == 140_000  # weights 1/1e10 and 1/4e10: (4*100k + 300k) / 5


def test_combine_needs_samples() -> None:
    with pytest.raises(ValueError):
        combine([])


def test_core_takes_externally_measured_samples() -> None:
    """SyncCore.handle_sample: a TSQ sample is filtered and selected like an NTP reply."""
    import random

    from tsyncd.sync.core import SyncCore
    from tsyncd.sync.sample import Sample

    now = T1
    core = SyncCore(
        local_stratum=None, min_sources=1, precision_log2=-20, discipline=None, now_ns=now
    )
    core.add_source(
        "tsq",
        reference_id=1,
        min_poll=-2,
        max_poll=-2,
        iburst=False,
        rng=random.Random(1),
        now_ns=now,
    )
    requests, _ = core.handle_timer(now + 10**9)
    assert [name for name, _ in requests] == ["tsq"]  # the core decides when to poll
    sample = Sample(
        offset_ns=250_000,
        delay_ns=100_000,
        dispersion_ns=1_000,
        root_delay_ns=0,
        root_dispersion_ns=0,
        stratum=2,
        leap=0,
        reference_id=1,
        local_rx_ns=now + 10**9 + 100_000,
    )
    assert core.handle_sample("tsq", sample) == []
    assert core.handle_sample("unknown", sample) == []
    assert core.decision.selected == "tsq" and core.decision.stratum == 3
    a = core.sources["tsq"].association
    assert a.reach == 1 and a.stats.packets_received == 1
    core.handle_drop("tsq", "bad_nonce")
    assert a.stats.drops_by_reason == {"bad_nonce": 1}
