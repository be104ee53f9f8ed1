"""Kernel transmit timestamps for server responses (SO_TIMESTAMPING, software TX).

Interleaved mode (RFC 9769) is only worth having if the transmit timestamp we hand out is the
moment the response really left, not a clock read before ``sendto``.  Linux stamps an outgoing
datagram in the network stack when the send asks for it, and queues a copy of the packet with
the stamp on the socket's error queue; we read it back with ``recvmsg(MSG_ERRQUEUE)``.

The stamp is asked for per message (an ``SO_TIMESTAMPING`` control message on ``sendmsg``,
Linux >= 4.13), so only responses to interleaving clients pay for the extra system call; the
socket option itself only enables software RX stamps and the software reporting bit.  The
queued copy carries the link, IP and UDP headers before our payload; ``read_stamps`` steps
over them and gives the payload's first 48 bytes, our reply's NTP header (an NTS reply is
longer: its last 48 bytes, which an earlier version took, are ciphertext, so an interleaved NTS
client got the estimate instead of the stamp).  On loopback and with most drivers the stamp is
queued before ``sendmsg`` returns; a late one is picked up on the next read.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any, Final

from tsyncd.net.udp import (
    SO_TIMESTAMPING,
    Control,
    enable_rx_timestamps,
    send_with,
    software_stamp_ns,
)

log = logging.getLogger(__name__)

SOF_TIMESTAMPING_TX_SOFTWARE: Final = 1 << 1
_TX_REQUEST: Final = [
    (socket.SOL_SOCKET, SO_TIMESTAMPING, struct.pack("@I", SOF_TIMESTAMPING_TX_SOFTWARE))
]
_RESPONSE_LEN: Final = 48
_ETH_LEN: Final = 14
_ETHERTYPE_IPV4: Final = b"\x08\x00"
_ETHERTYPE_IPV6: Final = b"\x86\xdd"
_UDP: Final = b"\x11"
_UDP_LEN: Final = 8
_ERRQUEUE_BUF: Final = 256  # link + IP(v6) + UDP headers + 48 bytes
_ANC_BUF: Final = 512
_MAX_READS: Final = 8  # stamps drained per call; more wait for the next one


def enable(sock: socket.socket) -> bool:
    """Set up ``sock`` for software RX stamps and per-message TX stamps; False if refused."""
    return enable_rx_timestamps(sock).name == "kernel-timestamping"


def send_stamped(
    sock: socket.socket, response: bytes, address: Any, control: Control | None = None
) -> bool:
    """Send ``response`` asking the kernel for its TX timestamp, with ``control`` beside that
    request (the source address of a wildcard server's reply, ``udp.reply_control``); False
    if it was not sent."""
    try:
        sock.sendmsg([response], _TX_REQUEST + control if control else _TX_REQUEST, 0, address)
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # an old kernel without per-message stamps: send plainly
            try:
                send_with(sock, response, address, control or [])
                return True
            except OSError:
                return False
        log.debug("sendmsg %s failed: %s", address, exc)
        return False


def read_stamps(sock: socket.socket) -> Iterator[tuple[bytes, int]]:
    """Drain queued TX stamps: (our response's 48-byte NTP header, Unix ns it left by the host
    clock)."""
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
        header = ntp_header(data)
        if stamp is not None and header is not None:
            yield header, stamp


def ntp_header(packet: bytes) -> bytes | None:
    """The first 48 bytes of the UDP payload of ``packet`` as the error queue gives it back
    (an Ethernet header, as loopback has, or none; IPv4 with its options, or IPv6), or None
    if it is not a UDP datagram with that much payload."""
    at = 0
    if len(packet) >= _ETH_LEN and packet[0] >> 4 not in (4, 6):
        if packet[12:14] not in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
            return None
        at = _ETH_LEN
    if len(packet) <= at:
        return None
    version = packet[at] >> 4
    if version == 4:
        protocol, ip_len = packet[at + 9 : at + 10], (packet[at] & 0x0F) * 4
    elif version == 6:
        protocol, ip_len = packet[at + 6 : at + 7], 40
    else:
        return None
    if protocol != _UDP:
        return None
    at += ip_len + _UDP_LEN
    header = packet[at : at + _RESPONSE_LEN]
    return header if len(header) == _RESPONSE_LEN else None


def tx_timestamp_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The software stamp (scm_timestamping ts[0]) from error-queue ancillary data."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
            stamp = software_stamp_ns(data)
            if stamp is not None:
                return stamp
    return None
