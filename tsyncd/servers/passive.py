"""Symmetric passive answers (RFC 5905 mode 2) to peers that poll us in symmetric active mode.

A peer configured with ``peer <us>`` (chrony, ntpd) sends mode 1 packets to our server port.
Like chrony, we keep no association for it: each packet gets, at once and statelessly, exactly
the answer a client request would get (same access list, counters and policy of the server's
responder, same template, interleaved answers included), with the mode changed to 2, so the
peer can measure us.  The responder never answers with more bytes than it got (RFC 8633: no
amplification).

A peer that signs its packets with a symmetric key (chronyd's ``peer ... key N``) gets its
answer signed with that key when the server has it in ``[keys]``, as chronyd's own stateless
answers are; a packet signed with a key we lack, or whose MAC fails, is dropped.  The MAC covers
the mode, so it is checked on the packet as it came and made on the mode 2 answer, whose
Transmit is then final (no late stamp: reason ``answered_mac``).
"""

from __future__ import annotations

from tsyncd.servers.responder import ANSWERED_MAC, IPAddress, NtpResponder
from tsyncd.wire.ntp import HEADER_LEN, Mode, mac_lengths

_MODE_MASK = 0x07


def is_symmetric_active(data: bytes) -> bool:
    """Cheap look at the mode bits, before any decoding."""
    return len(data) >= 48 and data[0] & _MODE_MASK == Mode.SYMMETRIC_ACTIVE


def passive_reply(
    data: bytes, responder: NtpResponder, peer: IPAddress, rx_ns: int, tx_ns: int, port: int = -1
) -> tuple[str, bytes | None, bool]:
    """(reason, mode 2 answer or None, whether to send it with a kernel TX stamp for the
    responder) for a symmetric active packet, as ``NtpResponder.respond`` decides for a client.

    A peer in symmetric interleaved mode (chronyd's ``peer ... xleave``) names our Receive
    stamp of its previous packet as its Origin, exactly as an interleaving client does, so the
    responder answers it interleaved with the kernel's TX stamp of our previous answer (chrony's
    stateless passive answers do the same, RFC 9769)."""
    keys = responder.policy.symmetric_keys
    key = None
    if keys is not None and len(data) - HEADER_LEN in mac_lengths((data[0] >> 3) & 7):
        from tsyncd.symkey import verify  # loaded already: [keys] read it

        failure, key = verify(keys, data)
        if failure is not None:
            responder.outcomes[failure] = responder.outcomes.get(failure, 0) + 1
            return failure, None, False
        data = data[:HEADER_LEN]
    as_client = bytes([(data[0] & ~_MODE_MASK) | Mode.CLIENT]) + data[1:]
    reason, response, want_tx = responder.respond(as_client, str(peer), rx_ns, tx_ns, port)
    if response is None or response[0] & _MODE_MASK != Mode.SERVER:
        return reason, None, False
    passive = bytes([(response[0] & ~_MODE_MASK) | Mode.SYMMETRIC_PASSIVE]) + response[1:]
    if key is not None:
        from tsyncd.symkey import seal

        return ANSWERED_MAC, seal(key, passive), want_tx
    return reason, passive, want_tx
