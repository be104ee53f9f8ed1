"""Symmetric passive answers (RFC 5905 mode 2) to peers that poll us in symmetric active mode.

A peer configured with ``peer <us>`` (chrony, ntpd) sends mode 1 packets to our server port.
Like chrony, we keep no association for it: we answer each packet at once, statelessly, with
our system variables, exactly as a server reply but in mode 2, so the peer can measure us.
The answer is a bare 48-byte header, never longer than the packet it answers (RFC 8633: no
amplification), and only clients the server's access list permits get one.
"""

from __future__ import annotations

from tsyncd.servers.responder import ResponseTemplate
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp
from tsyncd.wire.timestamps import ntp64_from_unix_ns


def is_symmetric_active(data: bytes) -> bool:
    """Cheap look at the mode bits, before any decoding."""
    return len(data) >= 48 and data[0] & 0x07 == Mode.SYMMETRIC_ACTIVE


def passive_reply(data: bytes, template: ResponseTemplate, rx_ns: int, tx_ns: int) -> bytes | None:
    """The mode 2 answer to a symmetric active packet, or None if it is malformed."""
    try:
        request = decode_ntp(data)
    except WireError:
        return None
    if request.mode != Mode.SYMMETRIC_ACTIVE or request.transmit_ts == 0:
        return None
    receive_ts = ntp64_from_unix_ns(rx_ns)
    transmit_ts = ntp64_from_unix_ns(max(tx_ns, rx_ns))
    if transmit_ts == receive_ts:
        transmit_ts = (transmit_ts + 1) & 0xFFFF_FFFF_FFFF_FFFF
    reply = NtpPacket(
        leap=template.leap,
        version=request.version,
        mode=Mode.SYMMETRIC_PASSIVE,
        stratum=template.stratum,
        poll=request.poll,
        precision=template.precision,
        root_delay=template.root_delay,
        root_dispersion=template.root_dispersion,
        reference_id=template.reference_id,
        reference_ts=template.reference_ts,
        origin_ts=request.transmit_ts,
        receive_ts=receive_ts,
        transmit_ts=transmit_ts,
    )
    return encode_ntp(reply)
