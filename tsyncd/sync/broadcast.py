"""A broadcast client association (RFC 5905 mode 5 received), sans-IO.

Theory of operation
-------------------
A broadcast server sends, every few seconds, a packet whose Transmit field is its time of
sending; we never send anything.  One timestamp pair gives no round trip, so the offset is
``T3 - T4 + delay/2`` with a round-trip delay we are told (``broadcast_delay_ns``, like ntpd's
``broadcastdelay``); an error in it goes straight into the offset.  That, and the lack of any
authentication here, is why RFC 8633 §5.5 tells operators to avoid broadcast mode unless the
network is trusted and the accuracy needed is modest: anyone on the segment can send us
packets, and a replayed or forged broadcast is only caught by the duplicate test.

The timer shifts the reach register once per expected interval (``min_poll``), so a server
that goes quiet becomes unreachable as a polled one would.  The header tests (3, 6, 7) and
the sample bookkeeping are the client's (``NtpAssociation``).
"""

from __future__ import annotations

from tsyncd.sync.association import AssociationState, NtpAssociation, poll_interval_ns
from tsyncd.sync.sample import PHI_PPM, Sample
from tsyncd.wire.ntp import Mode
from tsyncd.wire.timestamps import ntp64_diff_ns, ntp64_from_unix_ns


class BroadcastAssociation(NtpAssociation):
    """Listens to one broadcast server (``mode = "broadcast"``)."""

    broadcast_delay_ns: int = 4_000_000  # assumed round trip (ntpd's default 4 ms)
    _last_xmt: int = 0

    def handle_timer(self, now_ns: int) -> bytes | None:
        """No request: only age the reach register by one expected interval."""
        if self.state is AssociationState.DEMOBILIZED:
            return None
        self.state = AssociationState.ACTIVE
        self.reach = (self.reach << 1) & 0xFF
        self.stats.packets_sent += 1  # intervals waited, so reach-based rules work unchanged
        self._next_ns = now_ns + poll_interval_ns(self.poll)
        return None

    def set_system_poll(self, poll_log2: int) -> None:
        """The server decides how often it sends; our interval stays ``min_poll``."""

    def handle_reply(self, data: bytes, rx_ns: int) -> Sample | None:
        """A broadcast packet from the server arrived at ``rx_ns``: a sample if it is good."""
        packet = self._decode(data, (Mode.BROADCAST,), "not_broadcast_mode")
        if packet is None:
            return None
        # Test 1, duplicate: a broadcast seen before is a replay.
        if packet.transmit_ts == self._last_xmt:
            self._drop("duplicate")
            return None
        self._last_xmt = packet.transmit_ts
        checked = self._check_header(packet, packet.transmit_ts, answers=False)
        if checked is None:
            return None
        stratum, root_delay_ns, root_disp_ns = checked
        offset = ntp64_diff_ns(packet.transmit_ts, ntp64_from_unix_ns(rx_ns)) + (
            self.broadcast_delay_ns // 2
        )
        precision_ns = max(1, 1_000_000_000 >> min(62, -self._precision_log2))
        self.reach |= 1
        self.stats.packets_received += 1
        self.stats.last_rx_ns = rx_ns
        return Sample(
            offset_ns=offset,
            delay_ns=max(self.broadcast_delay_ns, precision_ns),
            dispersion_ns=2 * precision_ns + self.broadcast_delay_ns * PHI_PPM // 1_000_000,
            root_delay_ns=root_delay_ns,
            root_dispersion_ns=root_disp_ns,
            stratum=stratum,
            leap=int(packet.leap),
            reference_id=packet.reference_id,
            local_rx_ns=rx_ns,
        )
