"""µs per NTS request on the server's packet path, in process (no sockets): ``--micro``.

Run from the repository root::

    python -m bench.nts --micro            # table of µs per request
    python -m bench.nts --micro --profile  # plus the cProfile top entries of each case

Each case feeds pre-built client requests (made by tsyncd's own NTS client) to the server's
NTS code the way ``NtpResponder`` does (``entry`` column):

* ``respond``: the original entry, ``NtsResponder.respond(data, decode_ntp(data),
  decode_ntp(plain))`` — the responder decodes the request and its own 48-byte reply first,
  so both decodes are counted;
* ``respond_raw``: ``NtsResponder.respond_raw(data, plain)`` on the raw bytes;
* ``responder``: the whole server decision, ``NtpResponder.respond`` with the NTS responder
  attached, as the daemon runs it (whichever NTS entry it calls), sockets excepted.

Cases: AEAD 15 and 30; 1 cookie back (the client holds 8, no placeholders: what
``bench.nts``'s load sends) or 8 back (7 placeholders: a client refilling); ``sessions`` is how
many distinct client sessions the requests come from (1: every request from one client, so the
server's per-session cipher cache always hits; 4096: more clients than the cache holds, so
every request pays for keying AES).  Best of ``--repeat`` rounds, each timing ``--count``
requests: the machine is shared, so the minimum is the least disturbed figure.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time
from collections.abc import Callable
from dataclasses import dataclass

from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, KeySet
from tsyncd.nts.server import NtsResponder
from tsyncd.servers.responder import AccessList, NtpResponder
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp

_PLAIN = encode_ntp(NtpPacket(mode=Mode.SERVER, stratum=2, receive_ts=5, transmit_ts=6))
_NOW_NS = 1_800_000_000_000_000_000
_DISTINCT = 256  # distinct requests per session set, reused round-robin


@dataclass(frozen=True, slots=True)
class Case:
    """One line of the table."""

    aead: int
    back: int  # cookies the response carries
    sessions: int  # distinct client sessions the requests come from
    entry: str  # "respond" or "respond_raw"


def _requests(keys: KeySet, aead: int, back: int, sessions: int) -> list[bytes]:
    key_len = 32 if aead == 15 else 16
    contents = [
        CookieContents(aead_id=aead, c2s=os.urandom(key_len), s2c=os.urandom(key_len))
        for _ in range(sessions)
    ]
    out = []
    for i in range(max(_DISTINCT, sessions)):
        s = contents[i % sessions]
        held = 9 - back  # cookies held before sending: 8 - (held - 1) placeholders
        session = NtsSession(aead, s.c2s, s.s2c, [keys.seal(s) for _ in range(held)])
        data = session.protect(encode_ntp(NtpPacket(transmit_ts=i + 1)))
        assert data is not None
        out.append(data)
    return out


def _runner(server: NtsResponder, entry: str, reqs: list[bytes]) -> Callable[[int], str]:
    n = len(reqs)
    if entry == "responder":
        ntp = NtpResponder(AccessList((), ()))
        ntp.extensions = server
        decide = ntp.respond

        def run_responder(count: int) -> str:
            reason = ""
            for i in range(count):
                reason = decide(reqs[i % n], "127.0.0.1", _NOW_NS + i, _NOW_NS + i)[0]
            return reason

        return run_responder
    if entry == "respond_raw":
        raw = server.respond_raw

        def run_raw(count: int) -> str:
            reason = ""
            for i in range(count):
                reason = raw(reqs[i % n], _PLAIN)[0]
            return reason

        return run_raw
    respond = server.respond

    def run(count: int) -> str:
        reason = ""
        for i in range(count):
            data = reqs[i % n]
            reason = respond(data, decode_ntp(data), decode_ntp(_PLAIN))[0]
        return reason

    return run


def measure(case: Case, count: int, repeat: int, profile: bool) -> tuple[float, str]:
    """(best µs per request, profile text or "")."""
    keys = KeySet(1000, os.urandom(32), 86400)
    reqs = _requests(keys, case.aead, case.back, case.sessions)
    server = NtsResponder(keys)
    run = _runner(server, case.entry, reqs)
    if run(len(reqs)) != "answered_nts":  # warm up, and prove the requests authenticate
        raise SystemExit(f"{case}: the server did not answer with NTS")
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(count)
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    text = ""
    if profile:
        prof = cProfile.Profile()
        prof.runcall(run, count)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        text = out.getvalue()
    return best, text


def main(count: int, repeat: int, profile: bool) -> None:
    """Print the µs-per-request table."""
    entries = ["respond", "respond_raw", "responder"]
    print(f"µs per NTS request, server side, in process (best of {repeat} x {count})")
    print(f"{'entry':<12} {'aead':>4} {'back':>4} {'sessions':>8} {'µs':>7} {'req/s':>9}")
    for entry in entries:
        for aead in (15, 30):
            for back, sessions in ((1, 1), (8, 1), (1, 4096)):
                case = Case(aead, back, sessions, entry)
                us, text = measure(case, count, repeat, profile)
                print(f"{entry:<12} {aead:>4} {back:>4} {sessions:>8} {us:7.2f} {1e6 / us:9.0f}")
                if text:
                    print(text)
