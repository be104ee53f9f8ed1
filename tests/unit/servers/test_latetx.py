"""Basic replies carry a Transmit read after the responder ran, right before sending.

Both server IO edges are driven with a clock that moves on at every read, so a reply stamped
with the reading taken before the responder's work (the old behaviour) is told apart from one
stamped with a later reading.  No timing is asserted, only which reading the reply carries.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
import types
from multiprocessing import Pipe
from typing import Any

import pytest

from tsyncd.clock.measure import MeasureClock, VirtualClock
from tsyncd.servers import lonesend as lonesend_mod
from tsyncd.servers import ntp as ntp_mod
from tsyncd.servers import txstamp
from tsyncd.servers import worker as worker_mod
from tsyncd.servers.latetx import SendLag, restamp
from tsyncd.servers.ntp import NtpServer
from tsyncd.servers.responder import AccessList, NtpResponder, ResponseTemplate, ServerPolicy
from tsyncd.servers.worker import ClockMap, WorkerSetup
from tsyncd.wire.ntp import Leap, Mode, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000
RX = 1_800_000_000 * S
TEMPLATE = ResponseTemplate(leap=Leap.NONE, stratum=2)
COOKIE = 0x0123_4567_89AB_CDEF


class SteppingTime:
    """A host clock that moves on 1 ms at every read and remembers what it returned."""

    def __init__(self) -> None:
        self.readings: list[int] = []
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            value = time.time_ns() + (len(self.readings) + 1) * 1_000_000
            self.readings.append(value)
            return value


def basic_request(receive: int = 0) -> bytes:
    return encode_ntp(NtpPacket(mode=Mode.CLIENT, receive_ts=receive, transmit_ts=COOKIE))


def test_restamp_changes_only_transmit_and_keeps_it_after_receive() -> None:
    r = NtpResponder(AccessList((), ()))
    r.template = TEMPLATE
    _, data = r.handle_request(basic_request(), "192.0.2.1", RX, RX + 10)
    assert data is not None
    later = restamp(data, RX, RX + 7_000)
    assert later[:40] == data[:40] and len(later) == 48
    assert decode_ntp(later).transmit_ts == ntp64_from_unix_ns(RX + 7_000)
    early = decode_ntp(restamp(data, RX, RX - 5))  # a clock read before the RX stamp
    assert early.transmit_ts != early.receive_ts
    assert early.transmit_ts == ntp64_from_unix_ns(RX + 1)


def _transmit_reading(reply: bytes, readings: list[int], sent_at: int) -> int:
    """Index in ``readings`` of the reading the reply's Transmit carries (after ``sent_at``)."""
    transmit = decode_ntp(reply).transmit_ts
    index = next(i for i, v in enumerate(readings) if ntp64_from_unix_ns(v) == transmit)
    assert index >= sent_at
    return index


def test_event_loop_server_stamps_basic_reply_after_responding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = SteppingTime()
    monkeypatch.setattr(ntp_mod, "time", types.SimpleNamespace(time_ns=host))
    monkeypatch.setattr(lonesend_mod, "time", types.SimpleNamespace(time_ns=host))

    async def main() -> tuple[bytes, int]:
        clock = VirtualClock(host)  # no step or frequency: daemon time = host time
        responder = NtpResponder(AccessList((), ()))
        responder.template = TEMPLATE
        server = NtpServer.create("127.0.0.1", 0, responder.access, clock, responder=responder)
        port = int(server.listen.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.setblocking(False)
            c.connect(("127.0.0.1", port))
            sent_at = len(host.readings)
            await loop.sock_sendall(c, basic_request())
            reply = await asyncio.wait_for(loop.sock_recv(c, 512), 5)
        server.close()
        return reply, sent_at

    reply, sent_at = asyncio.run(main())
    assert decode_ntp(reply).origin_ts == COOKIE
    # The responder got the first reading after arrival; the Transmit carries a later one.
    assert _transmit_reading(reply, host.readings, sent_at) > sent_at


@pytest.mark.parametrize("receive", [0, 0x5555], ids=["basic-client", "interleaving-client"])
def test_worker_stamps_basic_reply_after_responding(
    monkeypatch: pytest.MonkeyPatch, receive: int
) -> None:
    host = SteppingTime()
    monkeypatch.setattr(
        worker_mod, "time", types.SimpleNamespace(time_ns=host, monotonic=time.monotonic)
    )
    monkeypatch.setattr(lonesend_mod, "time", types.SimpleNamespace(time_ns=host))
    responded_at: list[int] = []  # how many readings there were when the responder ran

    class Responder(NtpResponder):
        def respond(self, *args: Any) -> tuple[str, bytes | None, bool]:
            responded_at.append(len(host.readings))
            return super().respond(*args)

    monkeypatch.setattr(worker_mod, "NtpResponder", Responder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    assert txstamp.enable(sock)  # kernel RX stamps (as workers.py sets up): no clock read
    port = sock.getsockname()[1]
    parent, child = Pipe()
    setup = WorkerSetup(0, AccessList((), ()), ServerPolicy(), TEMPLATE, ClockMap(0, 0, 0))
    thread = threading.Thread(target=worker_mod._serve, args=(sock, child, setup), daemon=True)
    thread.start()
    try:
        assert parent.poll(5)  # its first push: the worker is up and will not push for a while
        assert parent.recv()[0] == "stats"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            sent_at = len(host.readings)
            c.sendto(basic_request(receive), ("127.0.0.1", port))
            reply = c.recv(512)
    finally:
        parent.send(("stop",))
        thread.join(5)
        sock.close()
    assert not thread.is_alive()
    packet = decode_ntp(reply)
    assert packet.origin_ts == COOKIE and packet.transmit_ts != packet.receive_ts
    assert len(responded_at) == 1
    # No reading before the responder ran (a plain header); the Transmit is one taken after.
    assert _transmit_reading(reply, host.readings, sent_at) >= responded_at[0]
    assert struct.unpack_from("!Q", reply, 32)[0] == packet.receive_ts


def test_send_lag_is_the_median_of_sane_gaps_and_calibrates_now_and_then() -> None:
    lag = SendLag()
    assert lag.lag_ns == 0 and lag.due(RX)
    assert not lag.due(RX + 1_000_000)  # one stamped reply per calibration interval
    assert lag.due(RX + 10_000_000)
    for gap in (9_000, 11_000, 10_000):
        lag.observe(RX, RX + gap)
    assert lag.lag_ns == 10_000
    lag.observe(RX, RX - 5)  # a stamp before the read: not this reply's
    lag.observe(RX, RX + 50_000_000)  # preempted for 50 ms: not the usual lag
    assert lag.lag_ns == 10_000
    for _ in range(40):  # old gaps age out
        lag.observe(RX, RX + 3_000)
    assert lag.lag_ns == 3_000


def test_send_lag_grows_with_how_long_the_request_waited() -> None:
    lag = SendLag()
    for _ in range(3):  # too few pairs for a slope: every reply gets the median
        lag.observe(RX, RX + 20_000, 100_000)
    assert lag.slope == 0.0 and lag.lag_for(500_000) == 20_000
    for k in range(31):  # a request handled 1 µs slower leaves 0.2 µs later
        busy = 100_000 + 1_000 * k
        lag.observe(RX, RX + 20_000 + busy // 5, busy)
    assert lag.slope == pytest.approx(0.2, abs=0.01)
    assert lag.lag_for(130_000) - lag.lag_for(100_000) == pytest.approx(6_000, abs=300)
    assert lag.lag_for(-1) == lag.lag_for(2_000_000) == lag.lag_ns  # no sane wait: the median
    assert lag.lag_for(900_000) == lag.lag_for(130_000)  # no extrapolation past the window
    for k in range(31):  # slower handling with a shorter gap: never a negative slope
        lag.observe(RX, RX + 50_000 - k * 1_000, 100_000 + k * 1_000)
    assert lag.slope == 0.0


def test_event_loop_server_learns_the_send_lag_from_kernel_tx_stamps() -> None:
    async def main() -> tuple[bytes, int]:
        responder = NtpResponder(AccessList((), ()))
        responder.template = TEMPLATE
        server = NtpServer.create(
            "127.0.0.1", 0, responder.access, MeasureClock(), responder=responder
        )
        port = int(server.listen.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.setblocking(False)
            c.connect(("127.0.0.1", port))
            await loop.sock_sendall(c, basic_request())
            reply = await asyncio.wait_for(loop.sock_recv(c, 512), 5)
        server.close()
        return reply, server._lag.lag_ns

    reply, lag_ns = asyncio.run(main())
    assert decode_ntp(reply).origin_ts == COOKIE
    assert lag_ns > 0  # the first basic reply was sent asking for its kernel TX stamp
