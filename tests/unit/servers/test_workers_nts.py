"""NTS on the multi-core server: the workers get the main process's cookie keys, and a key
rotation or reload pushed by the main process reaches them (old cookies NAKed, new accepted)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time

from tsyncd.clock.measure import VirtualClock
from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet, new_keyset
from tsyncd.servers.ntskeys import key_state
from tsyncd.servers.responder import AccessList, ResponseTemplate, ServerPolicy
from tsyncd.servers.workers import WorkerPool
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.ntske import AeadId

_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")  # both workers get clients


def session(keys: KeySet) -> NtsSession:
    """A client session as NTS-KE would have set it up, with one cookie under ``keys``."""
    c2s, s2c = secrets.token_bytes(32), secrets.token_bytes(32)
    cookie = keys.seal(CookieContents(aead_id=AeadId.AES_SIV_CMAC_256, c2s=c2s, s2c=s2c))
    return NtsSession(AeadId.AES_SIV_CMAC_256, c2s, s2c, [cookie])


def exchange(port: int, source: str, nts: NtsSession) -> str | None:
    """One NTS request from ``source``: None if authenticated, else the client's drop reason."""
    request = nts.protect(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=secrets.randbits(63))))
    assert request is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(1.0)
        s.sendto(request, ("127.0.0.1", port))
        data = s.recv(2048)
    assert len(data) <= len(request)  # never more bytes than the request paid for
    return nts.verify(data, decode_ntp(data))


def until(expected: str | None, port: int, source: str, make: object) -> None:
    """Ask until the answer is ``expected``: the key push reaches a worker within ~0.2 s."""
    deadline = time.monotonic() + 5
    while True:
        got = exchange(port, source, make())  # type: ignore[operator]
        if got == expected or time.monotonic() > deadline:
            assert got == expected, (source, got)
            return


def test_workers_serve_nts_and_follow_key_changes() -> None:
    async def scenario() -> None:
        now_s = time.time()
        old, new = new_keyset(now_s, 3600), new_keyset(now_s, 3600)
        pool = WorkerPool(
            "127.0.0.1",
            0,
            2,
            AccessList((), ()),
            ServerPolicy(),
            VirtualClock(time.time_ns),
            ResponseTemplate(stratum=3),
            keys=key_state(old),
        ).start()
        try:
            port = int(pool.listen.rsplit(":", 1)[1])
            for source in _SOURCES:
                nts = session(old)
                assert exchange(port, source, nts) is None  # authenticated by a worker
                assert len(nts.cookies) == 8  # 1 + 7 placeholders' worth of fresh cookies
            # The main process reloads its keys (tsyncctl rekey, a fleet key): push them.
            pool.set_keys(key_state(new))
            for source in _SOURCES:
                until("nts_nak", port, source, lambda: session(old))
                assert exchange(port, source, session(new)) is None
            await pool.refresh()
            counters = pool.counters()
            assert counters["nts_naks"] >= len(_SOURCES)
            assert counters["nts_requests"] >= 2 * len(_SOURCES)
            assert counters["nts_cookies_issued"] >= 8 * 2 * len(_SOURCES)
            # A scheduled rotation: cookies of the new epoch's key open at the workers, and
            # cookies of the previous key still do (RFC 8915 §6: old keys are kept a while).
            rotated = key_state(new).keyset()
            assert rotated.advance(now_s + 3600)
            pool.set_keys(key_state(rotated))
            for source in _SOURCES:
                until(None, port, source, lambda: session(rotated))
                assert exchange(port, source, session(new)) is None
        finally:
            pool.close()

    asyncio.run(scenario())
