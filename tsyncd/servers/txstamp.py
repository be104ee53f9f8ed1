"""Kernel transmit timestamps for server responses (SO_TIMESTAMPING, software TX).

Interleaved mode (RFC 9769) is only worth having if the transmit timestamp we hand out is the
moment the response really left, not a clock read before ``sendto``.  Linux stamps an outgoing
datagram in the network stack when the send asks for it, and queues a copy of the packet with
the stamp on the socket's error queue; we read it back with ``recvmsg(MSG_ERRQUEUE)``.

The stamp is asked for per message (an ``SO_TIMESTAMPING`` control message on ``sendmsg``,
Linux >= 4.13), so only responses to interleaving clients pay for the extra system call; the
socket option itself only enables software RX stamps and the software reporting bit.  The
queued copy carries the link, IP and UDP headers before our payload, so the payload is the
datagram's last 48 bytes (our responses are always exactly one bare header).  On loopback and
with most drivers the stamp is queued before ``sendmsg`` returns; a late one is picked up on
the next read.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any, Final

from tsyncd.net.udp import SO_TIMESTAMPING, enable_rx_timestamps, software_stamp_ns

log = logging.getLogger(__name__)

SOF_TIMESTAMPING_TX_SOFTWARE: Final = 1 << 1
_TX_REQUEST: Final = [
    (socket.SOL_SOCKET, SO_TIMESTAMPING, struct.pack("@I", SOF_TIMESTAMPING_TX_SOFTWARE))
]
_RESPONSE_LEN: Final = 48
_ERRQUEUE_BUF: Final = 256  # link + IP(v6) + UDP headers + 48 bytes
_ANC_BUF: Final = 512
_MAX_READS: Final = 8  # stamps drained per call; more wait for the next one


def enable(sock: socket.socket) -> bool:
    """Set up ``sock`` for software RX stamps and per-message TX stamps; False if refused."""
    return enable_rx_timestamps(sock).name == "kernel-timestamping"


def send_stamped(sock: socket.socket, response: bytes, address: Any) -> bool:
    """Send ``response`` asking the kernel for its TX timestamp; False if it was not sent."""
    try:
        sock.sendmsg([response], _TX_REQUEST, 0, address)
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # an old kernel without per-message stamps: send plainly
            try:
                sock.sendto(response, address)
                return True
            except OSError:
                return False
        log.debug("sendmsg %s failed: %s", address, exc)
        return False


def read_stamps(sock: socket.socket) -> Iterator[tuple[bytes, int]]:
    """Drain queued TX stamps: (our 48-byte response, Unix ns it left by the host clock)."""
    for _ in range(_MAX_READS):
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(
                _ERRQUEUE_BUF, _ANC_BUF, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("error queue read failed: %s", exc)
            return
        stamp = tx_timestamp_ns(ancdata)
        if stamp is not None and len(data) >= _RESPONSE_LEN:
            yield data[-_RESPONSE_LEN:], stamp


def tx_timestamp_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The software stamp (scm_timestamping ts[0]) from error-queue ancillary data."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
            stamp = software_stamp_ns(data)
            if stamp is not None:
                return stamp
    return None
