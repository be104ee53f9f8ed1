"""A sealed (NTS) reply's Transmit read as late as its seal allows (``servers/sealtx.py``), and
the kernel's TX stamps matched to replies by their NTP header (``txstamp.ntp_header``)."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from test_responder import RX, S, request, xleave_request

from tsyncd.servers.responder import AccessList, NtpResponder
from tsyncd.servers.sealtx import LateTransmit
from tsyncd.servers.txstamp import ntp_header
from tsyncd.wire.ntp import decode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns

HEADER = bytes(range(48))
UDP = b"\x00\x7b\x9c\x40\x00\x38\x00\x00"  # ports, length, checksum
ETH_V4 = bytes(12) + b"\x08\x00"
ETH_V6 = bytes(12) + b"\x86\xdd"
IPV4 = b"\x45" + bytes(8) + b"\x11" + bytes(10)  # 20 bytes, protocol UDP
IPV4_OPTIONS = b"\x46" + bytes(8) + b"\x11" + bytes(14)  # 24 bytes: one option word
IPV6 = b"\x60" + bytes(5) + b"\x11" + bytes(33)  # 40 bytes, next header UDP
NTS_TAIL = b"\xee" * 180  # what follows the header of an NTS reply


def test_the_ntp_header_is_found_behind_link_ip_and_udp_headers() -> None:
    """The error queue's copy carries the headers of every layer; an NTS reply is longer than
    48 bytes, so its last 48 bytes (what was taken before) are ciphertext, not its header."""
    for front in (ETH_V4 + IPV4, ETH_V6 + IPV6, IPV4, IPV6, ETH_V4 + IPV4_OPTIONS):
        assert ntp_header(front + UDP + HEADER) == HEADER
        assert ntp_header(front + UDP + HEADER + NTS_TAIL) == HEADER
    tcp = b"\x45" + bytes(8) + b"\x06" + bytes(10)
    assert ntp_header(ETH_V4 + tcp + UDP + HEADER) is None
    assert ntp_header(bytes(12) + b"\x08\x06" + bytes(100)) is None  # ARP
    assert ntp_header(ETH_V4 + IPV4 + UDP + HEADER[:40]) is None  # cut short
    assert ntp_header(b"") is None


def test_late_transmit_reads_the_clock_adds_the_lag_and_keeps_after_receive() -> None:
    late = LateTransmit(lambda host_ns: host_ns + 7 * S)  # the daemon's clock is 7 s ahead
    late.lag.lag_ns = 20_000
    receive = ntp64_from_unix_ns(time.time_ns() - S)  # a second before the read
    header = bytes(32) + struct.pack("!Q", receive) + bytes(8)
    out = late(header)
    assert late.read_ns > 0 and out[:40] == header[:40] and len(out) == 48
    (transmit,) = struct.unpack("!Q", out[40:])
    assert transmit == ntp64_from_unix_ns(late.read_ns + 20_000 + 7 * S)
    # A Receive in the future of the read (a stepped clock): the Transmit stays after it.
    future = ntp64_from_unix_ns(late.read_ns + 3600 * S)
    out = late(bytes(32) + struct.pack("!Q", future) + bytes(8))
    assert struct.unpack("!Q", out[40:])[0] == future + 1


def test_the_send_path_is_warmed_right_before_the_read() -> None:
    """After a quiet spell the kernel's send path is cold and the read-to-departure lag varies
    by tens of µs (warmsend.py): the warm-up must come before the read, on every call."""
    calls: list[int] = []
    late = LateTransmit(lambda host_ns: host_ns, calls.append)
    late(bytes(48))
    assert len(calls) == 1 and 0 < calls[0] <= late.read_ns
    first = late.read_ns
    late(bytes(48))
    assert len(calls) == 2 and first <= calls[1] <= late.read_ns


class _Extensions:
    """Records what the responder hands an NTS responder."""

    def __init__(self) -> None:
        self.restamps: list[Callable[[bytes], bytes] | None] = []

    def respond_raw(
        self, data: bytes, plain: bytes, restamp: Callable[[bytes], bytes] | None = None
    ) -> tuple[str, bytes | None]:
        self.restamps.append(restamp)
        return "answered_nts", plain + data[48:]


def test_only_a_basic_reply_is_restamped_an_interleaved_one_carries_a_kernel_stamp() -> None:
    r = NtpResponder(AccessList((), ()))
    ext = _Extensions()
    r.extensions = ext
    r.late_transmit = LateTransmit(lambda host_ns: host_ns)
    uid = b"\x01\x04\x00\x24" + bytes(32)  # an EF for the responder to hand on
    _, data, _ = r.respond(request(), "192.0.2.1", RX - S, RX - S)
    first_rx = decode_ntp(data or b"").receive_ts
    _, data, _ = r.respond(xleave_request(first_rx, 1, 2) + uid, "192.0.2.1", RX, RX + 1)
    second_rx = decode_ntp(data or b"").receive_ts
    r.respond(xleave_request(second_rx, 3, 4) + uid, "192.0.2.1", RX + S, RX + S + 1)
    assert ext.restamps == [r.late_transmit, None]  # basic (first), then interleaved
