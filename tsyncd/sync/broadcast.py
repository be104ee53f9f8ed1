"""A broadcast client association (RFC 5905 mode 5 received), sans-IO.

Theory of operation
-------------------
A broadcast server sends, every few seconds, a packet whose Transmit field is its time of
sending; we never send anything.  One timestamp pair gives no round trip, so the offset is
``T3 - T4 + delay/2`` with a round-trip delay we are told (``broadcast_delay_ns``, like ntpd's
``broadcastdelay``); an error in it goes straight into the offset.  That, and the lack of any
authentication here, is why RFC 8633 §5.5 tells operators to avoid broadcast mode unless the
network is trusted and the accuracy needed is modest: anyone on the segment can send us
packets, and a replayed or forged broadcast is only caught by the duplicate test.  Multicast
(the address is a group) changes nothing here: the IO edge accepts one server's packets.

Calibration (``calibrate``, opt-in, as ntpd does on first hearing a broadcast server): a good
broadcast that finds the reach register empty (the first one, or the first after the server
was unreachable) starts a *volley* of client requests (mode 3) to the server's unicast
address, at most ``VOLLEY_MAX_REQUESTS``, spaced by the broadcast interval (at most RFC 5905's
2 s burst spacing), ending early after ``VOLLEY_GOOD_REPLIES`` valid replies.  The replies go
through the client association's own checks and sample arithmetic, and the smallest measured
round trip becomes ``broadcast_delay_ns``: the broadcast path is assumed as long as the best
unicast one.  While a volley runs, broadcasts keep the server reachable but give no samples
(their delay is what is being measured); the volley's replies give none either, so every
sample of this source is a broadcast one.  A volley with no valid reply (the server does not
answer clients, or sends a kiss-o'-death) leaves the configured delay in use.

Kisses (RFC 5905 §7.4) can only answer a volley's requests: they pass the client's origin
check first, as a unicast source's do (RFC 8633 §5.4), so a forged one cannot end a volley; a
broadcast is not a reply, and one with stratum 0 is just unsynchronized (test 6).  They are
counted (``stats.kisses``) for the daemon's kiss log, as a unicast source's are, and do to the
volley what they do to a unicast source's polls, only for what a listener sends:

- RATE (send less): the volley ends, with the round trips measured so far.  A unicast source
  polls less often; a listener's only requests are the volley's, and the next volley comes
  only when the server is heard anew after an outage.
- DENY, RSTR (send nothing): the volley ends, and the association is *not* demobilized as a
  unicast one is stopped.  RFC 5905 demobilizes so that nothing more is sent to the server,
  and a listener then sends nothing; its broadcasts are sent to us unasked, so they are still
  used, with the configured (or an earlier measured) delay.  A server heard anew after an
  outage gets one request again, as ntpd mobilizes a new association for it (and as its
  filter starts empty, below): at most one kiss per outage, where a stopped unicast source
  waits for the operator because it would otherwise ask at every poll.
- Other codes: the reply is dropped and the volley goes on, as a unicast source keeps polling.

Several broadcasts before the source counts (RFC 5905 §10's empty clock filter): anyone on the
segment can forge the server's address, so one packet must not make the source selectable, or
it would set (step) our clock to whatever it says.  RFC 5905 starts every association with
eight filter stages of MAXDISP (16 s), so the filter dispersion halves with each sample and a
source gets under MAXDIST (1 s) after about five; ntpd's broadcast client behaves so.  Our
clock filter has no empty stages (``sync/filter.py``), so the first sample after the server is
heard (reach 0 before it: first heard, or heard again after being unreachable, after any
calibration volley) carries the empty stages instead: its dispersion is MAXDISP.  Heard again,
the samples from before the outage go first (``filter_outdated``: the core empties the filter
at that broadcast), as ntpd starts a new association for a broadcast server it hears again:
kept, they made the source selectable at once, for as long as a calibration volley gave no
sample, then unusable for five intervals once the MAXDISP sample came, then selected again (QA
s19: a flap at every return of the server), and their delay, from an older volley, is not the
new one.  During that volley the filter is empty and the source out, its reason saying so.
Broadcast samples all have the same delay, so it is the filter's oldest stage, weighed
1/2^(k+1) behind k newer samples: the filter dispersion is about 16 s / 2^k, as with the RFC's
empty stages, and the source becomes selectable at its fifth good broadcast
(``FIRST_BROADCASTS``), each agreeing with the others (their spread is the jitter, which the
root distance adds).  A forger must then send five consistent packets before the real server's;
a selected source is not moved by a few forged ones either (the jitter makes it too far).  Only
the first broadcast of each reach interval (``min_poll``, the server's expected broadcast
interval) is a sample, so a burst of forged packets is one sample, and five take five intervals
(QA s17: five forged packets 1 s apart selected the source); later ones in the interval count
for reach only.
It stays unauthenticated, as RFC 8633 warns.

The timer shifts the reach register once per expected interval (``min_poll``), so a server
that goes quiet becomes unreachable as a polled one would; nothing is sent then, so only the
volley's requests count as sent.  The header tests (3, 6, 7) and
the sample bookkeeping are the client's (``NtpAssociation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from tsyncd.sync.association import AssociationState, NtpAssociation, poll_interval_ns
from tsyncd.sync.sample import MAXDISP_NS, PHI_PPM, Sample
from tsyncd.wire.ntp import Mode, NtpPacket
from tsyncd.wire.timestamps import ntp64_diff_ns, ntp64_from_unix_ns

FIRST_BROADCASTS: Final = 5  # good broadcasts before the source can be selected (documented)
VOLLEY_MAX_REQUESTS: Final = 8  # requests per calibration volley, at most
VOLLEY_GOOD_REPLIES: Final = 4  # valid replies that end a volley early
VOLLEY_ENDING_KISSES: Final = frozenset({"RATE", "DENY", "RSTR"})  # others: the volley goes on
_VOLLEY_MAX_SPACING_NS: Final = 2_000_000_000  # RFC 5905 BTIME
_MODE_SERVER: Final = int(Mode.SERVER)
_NO_BURST: Final = "a broadcast source only listens: it has no requests to send"
_CALIBRATING: Final = "measuring the round trip (broadcast-calibrate): no samples until done"


@dataclass(slots=True)
class _Volley:
    """A calibration volley in progress."""

    next_ns: int  # when to send the next request (or, all sent, to give up waiting)
    sent: int = 0
    delays_ns: list[int] = field(default_factory=list)  # round trips of the valid replies


class BroadcastAssociation(NtpAssociation):
    """Listens to one broadcast server (``mode = "broadcast"``)."""

    broadcast_delay_ns: int = 4_000_000  # round trip in use (ntpd's default 4 ms, or measured)
    calibrate: bool = False  # measure the round trip with a volley of client requests
    calibrations: int = 0  # volleys that measured the delay
    calibration_failures: int = 0  # volleys without a valid reply (configured delay kept)
    _last_xmt: int = 0
    _volley: _Volley | None = None
    _heard_anew: bool = False  # reach was 0: the next sample carries the empty filter stages
    _sampled: bool = False  # a broadcast of this reach interval gave a sample already

    @property
    def calibrating(self) -> bool:
        """A calibration volley is running (broadcasts give no samples meanwhile)."""
        return self._volley is not None

    def shift_times(self, delta_ns: int) -> None:
        """Our clock was stepped by ``delta_ns``: the volley's deadline moves with it too."""
        super().shift_times(delta_ns)
        if self._volley is not None:
            self._volley.next_ns += delta_ns

    @property
    def polled(self) -> bool:
        """An interval went by: a server silent since is unreachable.  Not what was sent:
        ``packets_sent`` (chronyc's Total TX) counts the calibration requests only (QA s19:
        it counted intervals, so a client that never sent showed dozens)."""
        return self.state is not AssociationState.INIT

    def start_burst(self, now_ns: int) -> str | None:
        """Nothing to burst: the server decides when it sends.  (The inherited burst sent
        nothing either, but moved the next interval to now, shifting a 0 into reach at each
        tsyncctl burst: a few in a row made the source unreachable, QA s19.)"""
        return _NO_BURST

    @property
    def bursting(self) -> bool:
        """Never, not even with ``iburst`` set (tsyncctl activity)."""
        return False

    def next_deadline_ns(self) -> int | None:
        """The next reach interval, or the volley's next request if that comes first."""
        if self._volley is None or self._next_ns is None:
            return self._next_ns
        return min(self._next_ns, self._volley.next_ns)

    def handle_timer(self, now_ns: int) -> bytes | None:
        """Age the reach register once per expected interval; during a volley, return its
        next client request when due."""
        if self.state is AssociationState.DEMOBILIZED or self._next_ns is None:
            return None
        request = None
        if self._volley is not None and self._volley.next_ns <= now_ns:
            request = self._volley_request(self._volley, now_ns)
        if self._next_ns <= now_ns:
            self.state = AssociationState.ACTIVE
            self.reach = (self.reach << 1) & 0xFF
            self._next_ns = now_ns + poll_interval_ns(self.poll)
            self._sampled = False
        return request

    def filter_cleared(self) -> None:
        """The clock filter was emptied (tsyncctl reset sources): the next sample carries the
        empty stages again, as after the server was first heard."""
        self._heard_anew = True

    def set_system_poll(self, poll_log2: int) -> None:
        """The server decides how often it sends; our interval stays ``min_poll``."""

    def handle_reply(self, data: bytes, rx_ns: int) -> Sample | None:
        """A packet from the server arrived at ``rx_ns``: a sample if it is a good broadcast.

        A server reply (mode 4) is an answer to a calibration request while those are on.
        """
        if self.calibrate and data[:1] and data[0] & 0x7 == _MODE_SERVER:
            self._handle_volley_reply(data, rx_ns)
            return None
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
        if self.reach == 0:
            # First heard, or heard again after being unreachable: several broadcasts before
            # it counts, and with ``calibrate`` the round trip is measured first.
            self._heard_anew = self.filter_outdated = True
            if self.calibrate and self._volley is None:
                self._volley = _Volley(next_ns=rx_ns)
                self.unusable_reason = _CALIBRATING
        self.reach |= 1
        self.stats.packets_received += 1
        self.stats.last_rx_ns = rx_ns
        self._keep_header(packet, None)  # a broadcast answers no request: no response time
        self.stats.drops_since_reply.clear()
        if self._volley is not None:
            return None  # its delay is being measured
        if self._sampled:
            return None  # one sample per interval: a burst is not several broadcasts
        self._sampled = True
        return self._broadcast_sample(packet, checked, rx_ns)

    def _broadcast_sample(
        self, packet: NtpPacket, checked: tuple[int, int, int], rx_ns: int
    ) -> Sample:
        stratum, root_delay_ns, root_disp_ns = checked
        offset = ntp64_diff_ns(packet.transmit_ts, ntp64_from_unix_ns(rx_ns)) + (
            self.broadcast_delay_ns // 2
        )
        precision_ns = max(1, 1_000_000_000 >> min(62, -self._precision_log2))
        dispersion = 2 * precision_ns + self.broadcast_delay_ns * PHI_PPM // 1_000_000
        if self._heard_anew:  # the empty filter stages (theory of operation)
            self._heard_anew = False
            dispersion = MAXDISP_NS
        return Sample(
            offset_ns=offset,
            delay_ns=max(self.broadcast_delay_ns, precision_ns),
            dispersion_ns=dispersion,
            root_delay_ns=root_delay_ns,
            root_dispersion_ns=root_disp_ns,
            stratum=stratum,
            leap=int(packet.leap),
            reference_id=packet.reference_id,
            local_rx_ns=rx_ns,
        )

    @property
    def kiss_effect(self) -> str | None:
        """A RATE, DENY or RSTR ended the volley, and the broadcasts are still used (theory of
        operation); None for other codes (the volley goes on)."""
        if self.stats.kiss_code not in VOLLEY_ENDING_KISSES:
            return None
        return (
            "no more calibration requests until it is heard anew after an outage; its "
            f"broadcasts are still used (round trip {self.broadcast_delay_ns / 1e6:g} ms)"
        )

    # ---------------------------------------------------------------- calibration

    def _volley_request(self, volley: _Volley, now_ns: int) -> bytes | None:
        """The volley's next client request, or None when it is over (then finished)."""
        if volley.sent >= VOLLEY_MAX_REQUESTS:
            self._finish_volley(volley)  # the last request's wait is over too
            return None
        volley.sent += 1
        volley.next_ns = now_ns + min(_VOLLEY_MAX_SPACING_NS, poll_interval_ns(self.min_poll))
        return self._encode_request(self._new_request(now_ns))

    def _handle_volley_reply(self, data: bytes, rx_ns: int) -> None:
        """The client's checks and arithmetic on a reply; only its round trip is kept."""
        volley = self._volley
        if volley is None:
            self._drop("bogus")  # no request outstanding: nobody asked for it
            return
        sample = NtpAssociation.handle_reply(self, data, rx_ns)
        if sample is None:
            return
        volley.delays_ns.append(sample.delay_ns)
        if len(volley.delays_ns) >= VOLLEY_GOOD_REPLIES:
            self._finish_volley(volley)

    def _finish_volley(self, volley: _Volley) -> None:
        if volley.delays_ns:
            self.broadcast_delay_ns = min(volley.delays_ns)
            self.calibrations += 1
        else:
            self.calibration_failures += 1
        self._volley = None
        self._pending = None  # a late reply is bogus from now on
        self.unusable_reason = None

    def _handle_kod(self, code: str, packet: NtpPacket) -> None:
        """A RATE, DENY or RSTR to a calibration request ends the volley; broadcasts are still
        used (theory of operation).  Counted for the kiss log, as a unicast source's kisses;
        QA s19: they were not, so nothing was logged."""
        self.stats.kiss_code = code
        self.stats.kisses += 1
        self._drop("kiss_of_death")
        if code in VOLLEY_ENDING_KISSES and self._volley is not None:
            self._finish_volley(self._volley)
