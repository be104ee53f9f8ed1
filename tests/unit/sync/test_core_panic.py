"""The sync core while its discipline refuses offsets over ``panic-threshold`` (QA s16 hunt-sync
F5): not synchronized, saying why, serving as unsynchronized, until ``makestep`` accepts it."""

from __future__ import annotations

import ipaddress
import random

from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate
from tsyncd.sync.core import SyncCore
from tsyncd.sync.discipline import Discipline, DisciplineConfig, Step
from tsyncd.wire.ntp import Leap, refid_from_ascii
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000
T0 = 1_800_000_000 * S
CLIENT = ipaddress.ip_address("127.0.0.1")


def server() -> NtpResponder:
    r = NtpResponder(AccessList((), ()))
    r.template = ResponseTemplate(
        leap=Leap.NONE,
        stratum=1,
        precision=-20,
        reference_id=refid_from_ascii("GPS"),
        reference_ts=ntp64_from_unix_ns(T0 - S),
    )
    return r


def poll(
    core: SyncCore, r: NtpResponder, now: int, offset_ns: int, one_way_ns: int = 50_000
) -> list[object]:
    """One exchange at ``now`` with a server ``offset_ns`` ahead, ``one_way_ns`` each way."""
    requests, _ = core.handle_timer(now)
    actions: list[object] = []
    for name, data in requests:
        core.handle_sent(name, now)
        rx = now + one_way_ns + offset_ns
        _, reply = r.handle_request(data, CLIENT, rx, rx + 1_000)
        assert reply is not None
        actions += core.handle_reply(name, reply, now + 2 * one_way_ns + 1_000)
    return actions


def synchronized_core(
    local_stratum: int | None,
) -> tuple[SyncCore, Discipline, NtpResponder, int]:
    """A core with panic-threshold 0.3 s synchronized to a server: (core, its discipline, the
    server, when to poll next)."""
    disc = Discipline(
        DisciplineConfig(panic_threshold_ns=300_000_000, step_limit=0),
        initial_frequency_ppm=None,
        now_ns=T0,
    )
    core = SyncCore(
        local_stratum=local_stratum, min_sources=1, precision_log2=-20, discipline=disc, now_ns=T0
    )
    core.add_source(
        "gps", reference_id=1, min_poll=0, max_poll=0, iburst=False, rng=random.Random(1), now_ns=T0
    )
    r, now = server(), T0 + S
    for _ in range(8):
        poll(core, r, now, 0)
        now += S
    return core, disc, r, now


def test_panic_reports_unsynchronized_until_makestep_accepts_the_offset() -> None:
    core, disc, r, now = synchronized_core(None)
    assert core.decision.synchronized and core.decision.stratum == 2
    for _ in range(4):  # the server jumps 0.5 s: every update is refused
        poll(core, r, now, 500_000_000)
        now += S
    d = core.decision
    assert not d.synchronized and core.selection.synchronized
    assert d.reason == (
        "panic: offset +0.500 s exceeds the panic threshold 0.3 s; tsyncctl makestep to accept it"
    )
    assert (d.stratum, d.leap, d.reference_id) == (16, 3, 0)  # served as unsynchronized
    assert d.selected == "gps" and d.offset_ns > 400_000_000  # what makestep would step
    steps = [a for a in core.makestep(now) if isinstance(a, Step)]
    assert len(steps) == 1 and steps[0].offset_ns > 400_000_000
    assert core.decision.synchronized and disc.panic is None
    assert disc.snapshot().state != "panic"


def test_makestep_steps_the_offset_the_panic_refused() -> None:
    """The clock filter may still hold an older sample of lower delay (so the selection's
    offset is the old one); makestep accepts what the refusal named, not that."""
    core, disc, r, now = synchronized_core(None)
    for _ in range(2):  # the jump (the first is held back as a spike), over a slower path
        poll(core, r, now, 500_000_000, one_way_ns=60_000)
        now += S
    assert disc.panic is not None and abs(core.selection.offset_ns) < 1_000_000
    steps = [a for a in core.makestep(now + S) if isinstance(a, Step)]
    assert len(steps) == 1 and 490_000_000 < steps[0].offset_ns < 510_000_000
    assert disc.panic is None


def test_panic_with_a_local_stratum_serves_the_local_clock_and_ends_by_itself() -> None:
    core, _, r, now = synchronized_core(8)
    for _ in range(4):
        poll(core, r, now, 500_000_000)
        now += S
    d = core.decision
    assert not d.synchronized and d.stratum == 8 and d.leap == 0
    assert d.reason is not None and d.reason.endswith("serving the local clock at stratum 8")
    poll(core, r, now, 0)  # the server is back: the offset is taken, synchronized again
    assert core.decision.synchronized and core.decision.stratum == 2
