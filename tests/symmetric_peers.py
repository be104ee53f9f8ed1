"""Symmetric associations for the unit tests, on virtual time from ``T0``, polling every second
(``min_poll = max_poll = 0``) and announcing themselves synchronized at a given stratum."""

from __future__ import annotations

import random

from tsyncd.sync.symmetric import SymmetricAssociation
from tsyncd.sync.symmetric_xleave import InterleavedSymmetricAssociation
from tsyncd.wire.ntp import Leap
from tsyncd.wire.timestamps import ntp64_from_unix_ns

S = 1_000_000_000
T0 = 1_800_000_000 * S


def symmetric_peer(seed: int, stratum: int, *, xleave: bool) -> SymmetricAssociation:
    """A basic (``xleave=False``) or interleaved symmetric active association."""
    cls = InterleavedSymmetricAssociation if xleave else SymmetricAssociation
    a = cls(
        min_poll=0,
        max_poll=0,
        iburst=False,
        precision_log2=-20,
        rng=random.Random(seed),
        now_ns=T0,
        xleave=xleave,
    )
    announce(a, stratum)
    return a


def announce(a: SymmetricAssociation, stratum: int) -> None:
    """What ``a`` tells its peer of itself: synchronized below stratum 16, else not."""
    a.set_announced(
        leap=Leap.NONE if stratum < 16 else Leap.UNSYNCHRONIZED,
        stratum=stratum,
        root_delay=0,
        root_dispersion=0,
        reference_id=0x7F000001,
        reference_ts=ntp64_from_unix_ns(T0 - S),
    )
