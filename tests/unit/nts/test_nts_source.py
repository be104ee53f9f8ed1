"""When an NTS source runs NTS-KE again (``tsyncd/sources/nts.py``), on virtual time.

An NTS-KE counts as good only once an authenticated NTP response follows it (chrony's
``nke_attempts``): a KE server whose NTP server NAKs every cookie gets NTS-KE at 10 s, 15 s,
22.5 s ... apart, not one TLS handshake per poll, and ``tsyncctl peers`` says why it waits.
Keys older than ``key-refresh-interval`` are refreshed by a new NTS-KE while the old ones keep
serving, with the same back-off when it fails (QA s18 hunt-nts-client #1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Container

import pytest

from tsyncd.config import SourceConfig
from tsyncd.config_fields import parse_endpoint
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.ke import KeOutcome
from tsyncd.nts.server import NtsResponder
from tsyncd.sources import nts as nts_source
from tsyncd.sources.nts import NtsSource
from tsyncd.sources.ntske import KeFailure, KeResult
from tsyncd.sync.association import NtpAssociation
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp

KE_KEYS = KeySet(1, bytes(32), 86400)  # what the NTS-KE server seals cookies with
OTHER_KEYS = KeySet(1, b"\x01" * 32, 86400)  # an NTP server that does not share them
C2S, S2C = b"c" * 32, b"s" * 32


class Clock:
    """Monotonic seconds that move only when told, or when the source sleeps: each sleep is
    kept with what ``tsyncctl peers`` showed meanwhile (next_ke, ke_backoff)."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps: list[tuple[float, float | None, str | None]] = []

    def __call__(self) -> float:
        return self.now_s


def source(
    clock: Clock, refresh_s: float = 14 * 86400, meanwhile: Callable[[], object] | None = None
) -> NtsSource:
    """An NTS source on ``clock``; ``meanwhile`` runs in each of its sleeps (e.g. a poll)."""

    async def sleep(seconds: float) -> None:
        snap = src.snapshot()  # what tsyncctl peers shows while it waits
        clock.sleeps.append((seconds, snap.next_ke, snap.ke_backoff))
        clock.now_s += seconds
        if meanwhile is not None:
            meanwhile()

    cfg = SourceConfig(name="ke:4460", mode="nts", address=parse_endpoint("ke:4460", 4460))
    src = NtsSource(cfg, refresh_s=refresh_s, clock=clock, sleep=sleep)
    return src


def poll(src: NtsSource, keys: KeySet) -> str | None:
    """One request to an NTP server with cookie keys ``keys``: the drop reason, None for an
    authenticated response, or "not sent"."""
    assert src.session is not None
    request = src.session.protect(encode_ntp(NtpPacket(transmit_ts=99)))
    if request is None:
        return "not sent"
    _, response = NtsResponder(keys).respond(
        request, decode_ntp(request), NtpPacket(mode=Mode.SERVER, origin_ts=99)
    )
    assert response is not None
    return src.session.verify(response, decode_ntp(response))


def install_fake_ke(
    monkeypatch: pytest.MonkeyPatch, failures: int = 0, failing: Container[int] = ()
) -> list[int]:
    """``run_ke`` replaced: ``failures`` failed sessions (or those numbered in ``failing``,
    from 1), the others good ones whose cookies only ``KE_KEYS`` opens; returns the ports it
    was called with, one per session."""
    calls: list[int] = []
    failing = failing or range(1, failures + 1)
    monkeypatch.setattr(nts_source, "run_ke", _fake_run_ke(calls, failing))
    return calls


def _fake_run_ke(calls: list[int], failing: Container[int], ntp_host: str = "127.0.0.1") -> object:
    async def run_ke(
        host: str, port: int, _ca: object, connect_host: list[str] | None = None
    ) -> KeResult:
        """The NTS-KE server reached is the first address given (None: connected by name)."""
        calls.append(port)
        if len(calls) in failing:
            raise KeFailure(f"cannot connect to NTS-KE server {host}:{port}: refused")
        contents = CookieContents(aead_id=15, c2s=C2S, s2c=S2C)
        outcome = KeOutcome(
            aead=15,
            context_aead=15,
            key_len=32,
            server=None,
            port=123,
            cookies=tuple(KE_KEYS.seal(contents) for _ in range(8)),
        )
        return KeResult(
            outcome=outcome,
            c2s=C2S,
            s2c=S2C,
            ntp_host=ntp_host,
            ntp_port=123,
            group=None,
            finished_s=0.0,
            ke_address=connect_host[0] if connect_host else None,
        )

    return run_ke


def test_a_server_that_naks_every_cookie_is_rekeyed_with_back_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock)

    async def main() -> None:
        await src.key_exchange_until_ok()  # the first one at once
        for _ in range(4):
            assert poll(src, OTHER_KEYS) == "nts_nak"
            clock.now_s += 1  # the next poll: no authentic response came
            assert poll(src, OTHER_KEYS) == "not sent"  # the NAKed cookies are dropped
            assert src.session is not None and src.session.needs_ke
            assert not src.session.cookies
            await src.key_exchange_until_ok()

    asyncio.run(main())
    assert len(calls) == 5
    # 10, 15, 22.5, 33.75 s after the previous NTS-KE (1 s of it went by before the poll)
    assert [s for s, _, _ in clock.sleeps] == pytest.approx([9, 14, 21.5, 32.75])
    assert [(n, why) for _, n, why in clock.sleeps] == [
        (pytest.approx(s), "NAKed after NTS-KE") for s in (9, 14, 21.5, 32.75)
    ]
    assert src.snapshot().naks == 4 and src.snapshot().next_ke is None


def test_an_authenticated_response_makes_the_next_ke_good_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock)

    async def main() -> None:
        await src.key_exchange_until_ok()
        for _ in range(2):  # two NTS-KEs without an authenticated response: backed off
            poll(src, OTHER_KEYS)
            poll(src, OTHER_KEYS)
            await src.key_exchange_until_ok()
        assert src.attempts() == 3
        assert poll(src, KE_KEYS) is None  # the NTP server reads them now
        assert src.attempts() == 0
        # Its keys change (tsyncctl rekey on a fleet): one NAK, a poll, and a new NTS-KE
        # after the 4 s floor only, with nothing shown as a back-off.
        clock.now_s += 1
        assert poll(src, OTHER_KEYS) == "nts_nak"
        assert poll(src, OTHER_KEYS) == "not sent"
        assert src.ke_wait_s() == pytest.approx(3)
        assert src.snapshot().next_ke is None
        await src.key_exchange_until_ok()

    asyncio.run(main())
    assert [s for s, _, _ in clock.sleeps] == pytest.approx([10, 15, 3])


def test_failed_ke_backs_off_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = install_fake_ke(monkeypatch, failures=3)
    clock = Clock()
    src = source(clock)
    asyncio.run(src.key_exchange_until_ok())
    assert len(calls) == 4 and src.ke_failures == 3 and src.last_error is None
    assert clock.sleeps == [(10, 10, "NTS-KE failed"), (15, 15, "NTS-KE failed"),
                            (22.5, 22.5, "NTS-KE failed")]  # fmt: skip


def test_an_ipv6_ntp_server_is_logged_in_brackets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(nts_source, "run_ke", _fake_run_ke([], (), ntp_host="::1"))
    with caplog.at_level(logging.INFO):
        asyncio.run(source(Clock()).key_exchange())
    assert "8 cookies, NTP at [::1]:123, TLS group None" in caplog.text


def online(src: NtsSource) -> NtpAssociation:
    """An association polling for ``src`` (which uses its session)."""
    association = NtpAssociation(
        min_poll=4, max_poll=6, iburst=False, precision_log2=-20, rng=random.Random(1), now_ns=0
    )
    association.auth = src.session
    src.association = association
    return association


async def run_maintenance(src: NtsSource, vet: nts_source.Vet | None = None) -> None:
    """``maintain`` (with the daemon's ``vet``) until it has nothing to do (with run_ke and
    sleep faked, it runs through every NTS-KE it wants before it first waits for a kick)."""
    task = asyncio.get_running_loop().create_task(src.maintain(vet))
    await asyncio.sleep(0)
    assert not task.done()
    task.cancel()


def test_keys_older_than_the_refresh_interval_are_refreshed_while_they_serve(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """KE 2 and 3 fail, 4 works: the old session answers all along (time keeps flowing), its
    answers do not cut the back-off to 4 s, and peers says why the next NTS-KE waits."""
    calls = install_fake_ke(monkeypatch, failing={2, 3})
    clock = Clock()
    answered: list[str | None] = []
    src = source(clock, refresh_s=3600, meanwhile=lambda: answered.append(poll(src, KE_KEYS)))

    async def main() -> None:
        await src.key_exchange_until_ok()
        association = online(src)
        first = src.session
        assert poll(src, KE_KEYS) is None
        clock.now_s += 3599
        await run_maintenance(src)
        assert len(calls) == 1 and src.snapshot().last_ke == 3599  # not due yet
        clock.now_s += 1
        with caplog.at_level(logging.INFO):
            await run_maintenance(src)
        assert len(calls) == 4
        assert src.session is not first and association.auth is src.session
        assert src.snapshot().last_ke == 0 and src.snapshot().next_ke is None

    asyncio.run(main())
    why = "key refresh failed (old keys in use)"
    assert clock.sleeps == [(10, 10, why), (15, 15, why)]
    assert answered == [None, None]  # the old keys served while the refresh failed
    assert "keys are 3600 s old (key-refresh-interval 3600 s); NTS-KE to refresh" in caplog.text
    assert src.ke_failures == 2 and src.last_error is None


def test_old_keys_serve_a_failing_refresh_up_to_twice_the_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not for ever: at twice key-refresh-interval with no NTS-KE working (an expired
    certificate, say) they are dropped, and nothing is sent until an NTS-KE works.  Dropped at
    that age itself, in the middle of the back-off wait (QA s21 hunt-nts #3: at the next failed
    attempt, 141 s here, up to a day late with the defaults), and peers and authdata say so."""
    calls = install_fake_ke(monkeypatch, failing={2, 3, 4, 5, 6, 7})
    clock = Clock()
    answered: list[tuple[float, str | None]] = []
    src = source(
        clock, refresh_s=60, meanwhile=lambda: answered.append((clock.now_s, poll(src, KE_KEYS)))
    )
    shown: list[tuple[float | None, str | None]] = []
    retire = src._retire_stale_keys

    def retiring(*, due: bool = False) -> None:
        retire(due=due)
        snap = src.snapshot()
        shown.append((snap.last_ke, snap.ke_backoff))

    monkeypatch.setattr(src, "_retire_stale_keys", retiring)

    async def main() -> None:
        await src.key_exchange_until_ok()
        online(src)
        clock.now_s += 60
        with caplog.at_level(logging.WARNING):
            await run_maintenance(src)
        assert len(calls) == 8 and not src.session.needs_ke  # type: ignore[union-attr]

    asyncio.run(main())
    # The refresh fails at t=1060, then at 1075 and 1097.5; the keys from t=1000 are 120 s old
    # at t=1120, 22.5 s into the third wait (33.75 s): it is cut there, the keys dropped, and
    # the rest (11.25 s) waited out.
    assert [s for s, _, _ in clock.sleeps][:4] == pytest.approx([15, 22.5, 22.5, 11.25])
    assert answered[:3] == [(1075, None), (1097.5, None), (1120, None)]
    assert [a for _, a in answered[3:]] == ["not sent"] * 4
    assert "keys are 120 s old, twice key-refresh-interval, and no NTS-KE has worked since" in (
        caplog.text
    )
    dropped = "key refresh failed (old keys dropped at twice key-refresh-interval)"
    assert clock.sleeps[3][1:] == (pytest.approx(11.25), dropped)  # peers, authdata
    assert (None, dropped) in shown  # no age shown for keys no longer used


def test_an_offline_source_does_not_refresh_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nor does it keep them past twice the interval (here, at once): they age all the same,
    and are dropped, not used once it is online again; its NTS-KE waits for online."""
    calls = install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock, refresh_s=3600)

    async def main() -> None:
        await src.key_exchange_until_ok()
        association = online(src)
        association.online = False  # tsyncctl offline: nothing is sent, NTS-KE neither
        clock.now_s += 7200
        await run_maintenance(src)
        assert len(calls) == 1
        assert src.session is not None and src.session.needs_ke  # dropped all the same
        association.online = True
        await run_maintenance(src)
        assert len(calls) == 2 and not src.session.needs_ke

    asyncio.run(main())


def test_an_ntp_server_another_source_polls_drops_the_keys_and_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock)
    why = "its NTP server is polled by another source"

    async def main() -> None:
        await src.key_exchange_until_ok()
        src.ntp_server_in_use("127.0.0.1:123 by plain")
        assert src.session is not None and not src.session.cookies and src.session.needs_ke
        row = src.pending_snapshot()
        assert row.state_reason == f"NTS-KE done; {why} (127.0.0.1:123 by plain)"
        assert row.select_code == "?" and row.nts is not None and row.nts.ke_backoff == why
        await src.key_exchange_until_ok()  # in case it names another server now

    asyncio.run(main())
    assert len(calls) == 2 and clock.sleeps == [(10, 10, why)]


def test_burst_ends_an_nts_ke_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s18 hunt-ops F7: tsyncctl burst on a source whose NTS-KE was backing off (after a
    failure the operator has just fixed) did nothing until the back-off ran out."""
    calls = install_fake_ke(monkeypatch, failing={1})
    cfg = SourceConfig(name="ke:4460", mode="nts", address=parse_endpoint("ke:4460", 4460))

    async def main() -> None:
        src = NtsSource(cfg)  # the real clock and sleep
        assert not src.retry_now()  # nothing waits yet
        task = asyncio.get_running_loop().create_task(src.key_exchange_until_ok())
        async with asyncio.timeout(5):
            while src.ke_failures == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert src.snapshot().next_ke is not None and src.snapshot().next_ke > 5  # 10 s back-off
        assert src.retry_now()
        async with asyncio.timeout(2):  # not the 10 s back-off
            await task
        assert len(calls) == 2 and src.session is not None

    asyncio.run(main())


def test_a_nak_driven_nts_ke_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """QA s18 hunt-nts-client #7: a new NTS-KE after a NAK left no trace in the log."""
    calls = install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock)

    async def main() -> None:
        await src.key_exchange_until_ok()
        online(src)
        clock.now_s += 10
        assert poll(src, OTHER_KEYS) == "nts_nak"
        assert poll(src, OTHER_KEYS) == "not sent"  # the NAK's session wants new keys
        with caplog.at_level(logging.INFO):
            await run_maintenance(src)

    asyncio.run(main())
    assert len(calls) == 2
    assert "NTS: ke:4460 needs new keys (the server sent an NTS NAK): NTS-KE" in caplog.text


def resolving_source(clock: Clock, answers: list[list[str]]) -> NtsSource:
    """An NTS source for "ke:4460" whose resolver gives ``answers`` in turn (the last again)."""

    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("ke", 4460)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    src = source(clock)
    src._resolve = resolve
    return src


def test_refresh_runs_nts_ke_only_when_the_name_lost_the_keys_address(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """QA s18 hunt-nts-client #7: tsyncctl refresh skipped NTS sources.  Now the NTS-KE server's
    name is resolved again: the keys stay while it still gives the address they came from; once
    it does not, NTS-KE runs at once with the name's new address, the old keys serving until it
    has worked (the key-refresh path)."""
    calls = install_fake_ke(monkeypatch)
    clock = Clock()
    answered: list[str | None] = []
    answers = [["192.0.2.1", "192.0.2.2"]]
    src = resolving_source(clock, answers)

    async def main() -> None:
        await src.key_exchange_until_ok()
        assert src.last is not None and src.last.ke_address == "192.0.2.1"  # the resolver's
        association = online(src)
        first = src.session
        clock.now_s += 60
        said = src.name_resolved(["192.0.2.2", "192.0.2.1"])  # reordered: still there
        assert said == "ke still resolves to 192.0.2.1, its NTS-KE server; keeping its keys"
        await run_maintenance(src)
        assert len(calls) == 1 and src.session is first
        answers[0] = ["192.0.2.3"]  # the name moved
        said = src.name_resolved(["192.0.2.3"])
        assert said == (
            "ke no longer resolves to 192.0.2.1, where its keys came from (now 192.0.2.3); "
            "NTS-KE again now, the old keys serve until it works"
        )
        answered.append(poll(src, KE_KEYS))  # the old keys still serve
        with caplog.at_level(logging.INFO):
            await run_maintenance(src)
        assert len(calls) == 2 and src.session is not first and association.auth is src.session
        assert src.last is not None and src.last.ke_address == "192.0.2.3"
        await run_maintenance(src)
        assert len(calls) == 2  # done: no NTS-KE after each refresh-less turn

    asyncio.run(main())
    assert answered == [None]
    assert clock.sleeps == []  # at once: the last NTS-KE was a minute ago
    assert "key-refresh-interval" not in caplog.text  # not an age refresh


def test_refresh_before_any_key_exchange_leaves_the_name_to_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_fake_ke(monkeypatch)
    src = source(Clock())
    assert src.name_resolved(["192.0.2.1"]) == "no NTS-KE has worked yet"


def test_a_session_whose_ke_address_is_unknown_is_rekeyed_on_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys connected to by name (or from a file of an older tsyncd) came from an unknown
    address: refresh cannot tell they are still right, so it runs NTS-KE once."""
    calls = install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock)  # no resolver: connects by name

    async def main() -> None:
        await src.key_exchange_until_ok()
        online(src)
        clock.now_s += 60
        assert src.name_resolved(["192.0.2.1"]).startswith(
            "which NTS-KE server address its keys came from is not known"
        )
        await run_maintenance(src)

    asyncio.run(main())
    assert len(calls) == 2


def test_an_nts_ke_server_name_that_does_not_resolve_fails_the_ke(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = install_fake_ke(monkeypatch)

    async def resolve(host: str, port: int) -> list[str]:
        raise OSError("no addresses for ke")

    src = source(Clock())
    src._resolve = resolve

    async def main() -> None:
        with pytest.raises(nts_source.KeFailure, match="cannot resolve NTS-KE server ke:4460"):
            await src.key_exchange()

    asyncio.run(main())
    assert calls == []


def test_a_tally_carries_the_counters_into_the_next_source_of_that_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QA s18 hunt-nts-client #7: after a reload restarted an NTS source authdata showed KEs 0
    and NAKs 0.  The daemon hands the restarted source the old one's tally: KEs, failures,
    NAKs and authenticated responses go on from there (and so the Prometheus counters), and
    the old NAK is not taken for a reason to wait."""
    install_fake_ke(monkeypatch, failing={1})
    clock = Clock()
    first = source(clock)

    async def main() -> None:
        await first.key_exchange_until_ok()  # one failure, then one NTS-KE
        online(first)
        assert poll(first, KE_KEYS) is None
        assert poll(first, OTHER_KEYS) == "nts_nak"
        second = NtsSource(first.cfg, clock=clock, tally=first.tally)
        snap = second.snapshot()
        assert (snap.key_exchanges, snap.ke_failures, snap.naks, snap.authenticated) == (1, 1, 1, 1)
        await second.key_exchange_until_ok()
        online(second)
        assert poll(second, KE_KEYS) is None
        snap = second.snapshot()
        assert (snap.key_exchanges, snap.ke_failures, snap.naks, snap.authenticated) == (2, 1, 1, 2)
        assert second.session is not None and second.session.counters is first.tally.packets

    asyncio.run(main())


def test_keys_reaching_the_limit_during_a_hung_nts_ke_are_dropped_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QA s21 hunt-nts #3: the limit is a deadline, also while an NTS-KE attempt hangs (up to
    its 10 s timeout per address): the old keys stop serving at it, not when the attempt ends.
    On the real clock, with a refresh interval of 0.2 s."""
    calls: list[int] = []
    good = _fake_run_ke(calls, ())
    release = asyncio.Event()

    async def run_ke(host: str, port: int, ca: object, connect_host: object = None) -> KeResult:
        if calls:  # the refresh: a server that accepts and never answers
            calls.append(port)
            await release.wait()
            raise KeFailure("NTS-KE with ke:4460 timed out after 10 s")
        return await good(host, port, ca, connect_host)  # type: ignore[operator, no-any-return]

    monkeypatch.setattr(nts_source, "run_ke", run_ke)
    monkeypatch.setattr(nts_source, "_MIN_KE_INTERVAL_S", 0.0)  # the refresh starts when due
    cfg = SourceConfig(name="ke:4460", mode="nts", address=parse_endpoint("ke:4460", 4460))

    async def main() -> None:
        src = NtsSource(cfg, refresh_s=0.2)
        await src.key_exchange_until_ok()
        online(src)
        assert poll(src, KE_KEYS) is None  # a good NTS-KE: the refresh waits no back-off
        task = asyncio.get_running_loop().create_task(src.maintain())
        async with asyncio.timeout(5):
            while len(calls) < 2:  # the refresh has started, and hangs
                await asyncio.sleep(0.01)
            assert src.session is not None and not src.session.needs_ke  # still serving
            while not src.session.needs_ke:
                await asyncio.sleep(0.01)
        assert not task.done() and src.ke_failures == 0  # dropped while the attempt hangs
        assert src.snapshot().last_ke is None and src.snapshot().cookies == 0
        release.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_nts_ke_naming_a_server_another_source_polls_counts_as_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QA s21 hunt-nts #5: such an NTS-KE gives keys that are never used; it counted as a
    success and its discarded keys' age was shown.  Now it is a failed attempt (an alert on
    failures sees the source stuck), no age is shown, and the next NTS-KE backs off; one that
    names a free server counts as the success it is."""
    install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock)
    vetted: list[str] = []
    users = ["127.0.0.1:123 by plain", None]

    async def vet(result: KeResult) -> str | None:
        vetted.append(result.ntp_host)
        return users.pop(0)

    async def main() -> None:
        await src.key_exchange_until_ok(vet)

    asyncio.run(main())
    why = "its NTP server is polled by another source"
    assert clock.sleeps == [(10, 10, why)] and vetted == ["127.0.0.1"] * 2
    snap = src.snapshot()
    assert (snap.key_exchanges, snap.ke_failures) == (1, 1) and src.in_use is None
    assert snap.last_ke == 0 and snap.cookies == 8


def test_an_in_use_nts_ke_shows_no_key_age(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_ke(monkeypatch)
    src = source(Clock())

    async def vet(result: KeResult) -> str | None:
        return "127.0.0.1:123 by plain"

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(src.key_exchange_until_ok(vet))
        await asyncio.sleep(0)
        task.cancel()

    src._sleep = asyncio.Event().wait  # type: ignore[assignment]  # the back-off never ends
    asyncio.run(main())
    snap = src.snapshot()
    assert (snap.key_exchanges, snap.ke_failures, snap.cookies) == (0, 1, 0)
    assert snap.last_ke is None
    assert src.pending_snapshot().state_reason == (
        "NTS-KE done; its NTP server is polled by another source (127.0.0.1:123 by plain)"
    )


def test_a_key_refresh_naming_the_server_polled_already_is_not_vetted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source itself polls that server: nothing to ask the daemon (whose check would
    resolve its name again)."""
    calls = install_fake_ke(monkeypatch)
    clock = Clock()
    src = source(clock, refresh_s=3600)

    async def vet(result: KeResult) -> str | None:
        raise AssertionError("vetted")

    async def main() -> None:
        await src.key_exchange_until_ok()
        online(src)
        clock.now_s += 3600
        await run_maintenance(src, vet)

    asyncio.run(main())
    assert len(calls) == 2 and src.snapshot().key_exchanges == 2


def test_a_source_taken_offline_during_a_failing_nts_ke_stops_trying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session 21's review: the back-off loop never looked at online, so a source taken
    offline while its key refresh failed kept running NTS-KE (and logging a warning each
    time) until it worked.  Now no NTS-KE is attempted while it is offline."""
    calls = install_fake_ke(monkeypatch, failing=(2, 3))
    clock = Clock()
    seen: list[tuple[bool, int]] = []  # (online, NTS-KEs so far) at each sleep

    def meanwhile() -> None:
        association = src.association
        assert association is not None
        if len(seen) == 1:
            association.online = False  # tsyncctl offline during the first back-off
        elif len(seen) == 8:
            association.online = True
        seen.append((association.online, len(calls)))

    src = source(clock, refresh_s=3600, meanwhile=meanwhile)

    async def main() -> None:
        await src.key_exchange_until_ok()
        online(src)
        clock.now_s += 3601  # due for a refresh, which fails twice
        await run_maintenance(src)

    asyncio.run(main())
    offline = [made for is_online, made in seen if not is_online]
    assert len(offline) >= 6 and set(offline) == {3}  # two failures before, none since
    assert len(calls) == 4 and src.session is not None and not src.session.needs_ke


def test_a_refresh_during_an_nts_ke_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 21's review: a tsyncctl refresh that found the name moved while an NTS-KE was
    in flight (to the old address) was forgotten when that NTS-KE worked, and the source
    stayed at the address the name no longer gives."""
    calls: list[int] = []
    fake = _fake_run_ke(calls, ())
    answers = [["192.0.2.1"]]

    async def run_ke(
        host: str, port: int, ca: object, connect_host: list[str] | None = None
    ) -> KeResult:
        if len(calls) == 1:  # the age refresh's NTS-KE, to .1: the name moves meanwhile
            answers[0] = ["192.0.2.3"]
            src.name_resolved(["192.0.2.3"])
        return await fake(host, port, ca, connect_host)  # type: ignore[operator, no-any-return]

    monkeypatch.setattr(nts_source, "run_ke", run_ke)
    clock = Clock()
    src = resolving_source(clock, answers)
    src._refresh_s = 3600

    async def main() -> None:
        await src.key_exchange_until_ok()
        online(src)
        clock.now_s += 3601
        await run_maintenance(src)

    asyncio.run(main())
    assert len(calls) == 3 and src.last is not None and src.last.ke_address == "192.0.2.3"


def test_refresh_does_not_say_it_keeps_keys_that_were_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session 21's review: keys dropped because another source polls the NTP server they
    were for are not "kept" by a refresh that finds the name unchanged."""
    install_fake_ke(monkeypatch)
    src = resolving_source(Clock(), [["192.0.2.1"]])

    async def main() -> None:
        await src.key_exchange_until_ok()
        src.ntp_server_in_use("127.0.0.1:123 by plain")

    asyncio.run(main())
    assert src.name_resolved(["192.0.2.1"]) == (
        "ke still resolves to 192.0.2.1, its NTS-KE server; no keys in use (its NTP server is "
        "polled by another source: 127.0.0.1:123 by plain), the next NTS-KE resolves it again"
    )
