"""When an NTS source runs NTS-KE again (``tsyncd/sources/nts.py``), on virtual time.

An NTS-KE counts as good only once an authenticated NTP response follows it (chrony's
``nke_attempts``): a KE server whose NTP server NAKs every cookie gets NTS-KE at 10 s, 15 s,
22.5 s ... apart, not one TLS handshake per poll, and ``tsyncctl peers`` says why it waits.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tsyncd.config import SourceConfig
from tsyncd.config_fields import parse_endpoint
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.ke import KeOutcome
from tsyncd.nts.server import NtsResponder
from tsyncd.sources import nts as nts_source
from tsyncd.sources.nts import NtsSource
from tsyncd.sources.ntske import KeFailure, KeResult
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


def source(clock: Clock) -> NtsSource:
    async def sleep(seconds: float) -> None:
        snap = src.snapshot()  # what tsyncctl peers shows while it waits
        clock.sleeps.append((seconds, snap.next_ke, snap.ke_backoff))
        clock.now_s += seconds

    cfg = SourceConfig(name="ke:4460", mode="nts", address=parse_endpoint("ke:4460", 4460))
    src = NtsSource(cfg, clock=clock, sleep=sleep)
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


def install_fake_ke(monkeypatch: pytest.MonkeyPatch, failures: int = 0) -> list[int]:
    """``run_ke`` replaced: ``failures`` failed sessions, then good ones whose cookies only
    ``KE_KEYS`` opens; returns the ports it was called with, one per session."""
    calls: list[int] = []
    monkeypatch.setattr(nts_source, "run_ke", _fake_run_ke(calls, failures))
    return calls


def _fake_run_ke(calls: list[int], failures: int, ntp_host: str = "127.0.0.1") -> object:
    async def run_ke(host: str, port: int, _ca: object) -> KeResult:
        calls.append(port)
        if len(calls) <= failures:
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
    monkeypatch.setattr(nts_source, "run_ke", _fake_run_ke([], 0, ntp_host="::1"))
    with caplog.at_level(logging.INFO):
        asyncio.run(source(Clock()).key_exchange())
    assert "8 cookies, NTP at [::1]:123, TLS group None" in caplog.text
