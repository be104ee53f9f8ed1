"""tsyncd's client in basic mode against a real chronyd: T1 and T4 are the kernel's stamps.

The per-source client path the daemon runs (``NtpSourceSocket`` + ``NtpAssociation``, as
``bench.precision`` drives it) polls a chronyd server (``-x``) on loopback.  For every sample
the offset is recomputed from the reply bytes with T1 = the kernel's TX stamp of the request
(from the error queue) and T4 = the kernel's RX stamp of the reply: the sample must be exactly
that, not one built from a clock read around ``sendto``/``recvmsg``.  No timing is asserted.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time

from peers import Peers, free_udp_port

from tsyncd.sources.ntp import NtpSourceSocket
from tsyncd.sync.association import NtpAssociation
from tsyncd.sync.sample import Sample
from tsyncd.wire.timestamps import ntp64_diff_ns, ntp64_from_unix_ns

_SAMPLES = 6


async def _poll(port: int) -> list[tuple[Sample, int, int, bytes]]:
    """(sample, kernel TX stamp of its request, kernel RX stamp of its reply, reply bytes)."""
    assoc = NtpAssociation(
        min_poll=-4,
        max_poll=-4,
        iburst=False,
        precision_log2=-20,
        rng=random.Random(7),
        now_ns=time.time_ns(),
    )
    got: list[tuple[Sample, int, int, bytes]] = []
    tx_stamps: list[int] = []
    sock = NtpSourceSocket(name="chronyd", mode="server", ip="127.0.0.1", port=port)

    def on_tx(_name: str, tx_ns: int) -> None:
        tx_stamps.append(tx_ns)
        assoc.handle_tx_timestamp(tx_ns)

    def on_reply(_name: str, data: bytes, rx_ns: int) -> None:
        sample = assoc.handle_reply(data, rx_ns)
        if sample is not None:
            got.append((sample, tx_stamps[-1], rx_ns, data))

    sock.open(on_reply, on_tx)
    end = time.monotonic() + 20
    try:
        while len(got) < _SAMPLES and time.monotonic() < end:
            deadline = assoc.next_deadline_ns() or 0
            await asyncio.sleep(max(0.0, (deadline - time.time_ns()) * 1e-9))
            data = assoc.handle_timer(time.time_ns())
            if data is None:
                continue
            sent = len(tx_stamps)
            t1 = time.time_ns() - 1_000_000_000  # a pre-send read far off: it must not be used
            if sock.send(data):
                assoc.handle_sent(t1)
                assert len(tx_stamps) == sent + 1  # stamped inside sendto on loopback
    finally:
        sock.close()
    return got


def test_basic_samples_use_the_kernel_tx_and_rx_stamps(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd(
        "chronyd-server",
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n",
    )
    got = asyncio.run(_poll(port))
    assert len(got) == _SAMPLES
    for sample, t1, t4, reply in got:
        t2, t3 = struct.unpack_from("!QQ", reply, 32)
        expected = (
            ntp64_diff_ns(t2, ntp64_from_unix_ns(t1)) + ntp64_diff_ns(t3, ntp64_from_unix_ns(t4))
        ) // 2
        assert not sample.interleaved
        assert sample.offset_ns == expected
        assert sample.local_rx_ns == t4
