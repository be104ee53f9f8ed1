"""When a symmetric peer sends its next packet, sans-IO: chronyd's timing, so that the peer
with the higher stratum gets short measurements of us.

Theory of operation
-------------------
In symmetric mode each packet is also the answer to the peer's latest one, and the peer measures
us over the time we held its packet (its T3 - T2, chronyc's "Response time").  Every second of
that span adds its share of the frequency error between the two clocks to the peer's sample.
RFC 5905 leaves the timing to each peer; two free-running timers drift against each other, so
the response time wanders over the whole poll interval and now and then the packets cross in
flight and measure nothing (QA s19: a chronyd peer of tsyncd saw 0.47 s at poll -1, 3.5 % of our
packets invalid and 8 times the noise it had with a chronyd peer, 51 µs).  chronyd
(``ntp_core.c``: ``get_transmit_poll``, ``get_transmit_delay``, restarted on each valid packet
in ``process_response``) times its packets to the peer's, and we do the same, so a chronyd (or
tsyncd) peer of ours does as well as with a chronyd in our place:

* Interval: our poll, or the peer's when it is shorter and the peer is reachable, never below our
  ``min-poll`` (nor a KoD RATE floor): both sides then send at the shorter rate.
* After sending: the next packet one interval on; if the peer's stratum is above ours (it is
  the one that synchronizes to us, and will be answered when its packet comes) 1.1 times the
  longest interval the peer's next packet may take (``wait_poll``): a chronyd-like peer sends
  at the shorter of its poll and ours, and its poll may have risen one step since its last
  packet, so where the two polls differ that can be twice ours.  chronyd waits 1.1 of its own
  interval, and when the higher-stratum peer lengthened its poll (chronyd's polls wander
  between min- and maxpoll) our packet went out before the peer's and crossed it (QA s19
  hunt-new #1: lock lost every 30-60 s with ``minpoll -1 maxpoll 0``).
* On the first valid packet after ours, ``since_tx`` after we sent, the next packet is moved:
  - the peer's stratum is above ours: a packet later than 1 / 1.1 of our interval is answered
    at once (locked on: the peer measures us over the answer's latency alone).  An earlier one
    (the two timers lost their phase: a packet lost, a poll changed) is answered at once too
    from half an interval on, else half an interval after our last packet, so the next packet
    of the peer's finds us locked again.  chronyd instead waits 1.1 intervals from its last
    packet and falls back against the peer's timer by 0.1 interval per poll, then creeps the
    last few per cent in by the peer's random lengthening: about 20 polls of response times up
    to a whole interval (hunt-new #1: 15-20 s at poll 0).  Our intervals are never shorter
    than half of one, and only in the one or two exchanges after the phase was lost; a peer
    polling faster than our ``min-poll`` lets us answer only every other packet, so against it
    we keep chronyd's rule and never go below the floor;
  - equal strata: if the packet came late in our interval (over 0.6 of it), 1.1 intervals from
    our last packet, so the two sides' packets spread out evenly instead of crossing;
  - otherwise one interval after our last packet: the peer locks on to us.
* Each delay is then lengthened by a random 0-2 % (chronyd's ``SAMPLING_RANDOMNESS``, which only
  lengthens): so that a lower-stratum chronyd peer can lock on to us, our intervals must not be
  shorter than the poll.  Bursts keep their own spacing.
"""

from __future__ import annotations

import random
from typing import Final

_ADJ_NUM: Final = 11  # chronyd's PEER_SAMPLING_ADJ, 1.1 = 11 / 10
_ADJ_DEN: Final = 10
_SPREAD_NUM: Final = 6  # equal strata: a packet later than 0.6 (1.1 - 0.5) of the interval
_SPREAD_DEN: Final = 10
_RANDOM_DEN: Final = 50  # up to 1/50 = 2 % longer (chronyd's SAMPLING_RANDOMNESS 0.02)
STRATUM_UNKNOWN: Final = 16  # a peer's stratum before its first valid packet


def stratum_diff(remote: int, ours: int) -> int:
    """The peer's stratum minus ours, each unsynchronized one (0, or 16 and over) taken as 16
    (as chronyd compares them)."""

    def level(stratum: int) -> int:
        return STRATUM_UNKNOWN if stratum == 0 else min(stratum, STRATUM_UNKNOWN)

    return level(remote) - level(ours)


def transmit_poll(poll: int, remote_poll: int | None, floor: int, reachable: bool) -> int:
    """The poll (log2 s) our packets go at: ours, or the reachable peer's if shorter, never
    below ``floor`` (min-poll, or a KoD RATE's)."""
    if reachable and remote_poll is not None and remote_poll < poll:
        return max(remote_poll, floor)
    return poll


def wait_poll(poll: int, remote_poll: int | None, transmit: int, reachable: bool) -> int:
    """The poll (log2 s) of the longest interval a reachable peer may take to its next packet,
    as far as we wait for it: its own poll or ours, within one step above ``transmit`` (the
    poll our packets go at), so that a lost packet costs at most two intervals."""
    if not reachable or remote_poll is None:
        return transmit
    return max(transmit, min(max(poll, remote_poll), transmit + 1))


def transmit_delay_ns(
    interval_ns: int,
    stratum_diff: int,
    since_tx_ns: int | None,
    peer_interval_ns: int | None = None,
) -> int:
    """How long from now our next packet waits (before the random part).

    ``stratum_diff``: the peer's stratum minus ours.  ``since_tx_ns``: None just after we sent;
    on the first valid packet from the peer after ours, the time since we sent.
    ``peer_interval_ns``: just after we sent, the longest interval the peer's next packet may
    take (``wait_poll``); on a packet, the peer's own interval (2 ** its poll).  Either
    defaults to ``interval_ns``."""
    peer = interval_ns if peer_interval_ns is None else peer_interval_ns
    if since_tx_ns is None:
        if stratum_diff > 0:
            return max(interval_ns, peer) * _ADJ_NUM // _ADJ_DEN
        return interval_ns
    since = max(0, since_tx_ns)
    if stratum_diff > 0:
        if since * _ADJ_NUM >= interval_ns * _ADJ_DEN:
            return 0  # locked on: answer at once
        if peer >= interval_ns:  # the peer is not faster than we may be: lock on again now
            return max(0, interval_ns // 2 - since)
        return interval_ns * _ADJ_NUM // _ADJ_DEN - since  # chronyd's fall-back
    if stratum_diff == 0 and since * _SPREAD_DEN > interval_ns * _SPREAD_NUM:
        return max(0, interval_ns * _ADJ_NUM // _ADJ_DEN - since)
    return max(0, interval_ns - since)


def lengthened(delay_ns: int, rng: random.Random) -> int:
    """``delay_ns`` made up to 2 % longer at random (never shorter)."""
    return delay_ns + rng.randrange(0, delay_ns // _RANDOM_DEN + 1)
