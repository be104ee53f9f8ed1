"""``tsyncctl waitsync``: block until tsyncd's clock is synchronized, as ``chronyc waitsync``.

Why a command of its own: boot scripts and units that need correct time (a
``tsyncd-wait.service`` ordered before ``time-sync.target``, a backup job, a certificate
check) want one call that returns when the clock is good, with chronyc's arguments so a line
written for chrony works unchanged: ``waitsync [max-tries [max-correction [max-skew
[interval]]]]``, 0 meaning "no limit" or "no check".

The test each try applies to the ``tracking`` answer (the same fields ``tsyncctl tracking``
shows):

* synchronized to a real source (a local-stratum clock alone never counts, as chronyc
  does not count its ``LOCL`` reference);
* the correction still to apply (``residual_offset``, the phase the discipline is still slewing
  out; chronyc's "System time") at most ``max_correction`` seconds;
* the frequency's error bound (``skew_ppm``) at most ``max_skew_ppm``.

The loop takes its clock and its RPC as callables, so it is tested without waiting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class NoAnswer(Exception):
    """The daemon did not answer this try (not started yet, restarting): ask again later."""


@dataclass(frozen=True, slots=True)
class SyncWanted:
    """What counts as synchronized; 0 turns a bound off (chronyc's convention)."""

    max_correction: float = 0.0  # s
    max_skew_ppm: float = 0.0


def _number(tracking: Mapping[str, Any], key: str) -> float | None:
    value = tracking.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def is_synced(tracking: Mapping[str, Any], wanted: SyncWanted) -> bool:
    """Whether one ``tracking`` answer passes every test ``wanted`` asks for."""
    if tracking.get("synchronized") is not True:
        return False
    correction = _number(tracking, "residual_offset")
    if wanted.max_correction > 0 and (
        correction is None or abs(correction) > wanted.max_correction
    ):
        return False
    skew = _number(tracking, "skew_ppm")
    return not (wanted.max_skew_ppm > 0 and (skew is None or skew > wanted.max_skew_ppm))


def try_line(attempt: int, tracking: Mapping[str, Any]) -> str:
    """One progress line per try, with chronyc's fields: reference, correction, skew."""
    correction = _number(tracking, "residual_offset")
    skew = _number(tracking, "skew_ppm")
    refid = None
    if tracking.get("synchronized") is True:
        raw = tracking.get("reference_id_raw")  # chronyc prints the refid in hex: 7F000001
        hex_ok = isinstance(raw, int) and not isinstance(raw, bool)
        refid = f"{raw:08X}" if hex_ok else tracking.get("reference_id")
    return (
        f"try: {attempt}, refid: {refid or '-'}, "
        f"correction: {'-' if correction is None else f'{abs(correction):.9f}'}, "
        f"skew: {'-' if skew is None else f'{skew:.3f}'}"
    )


def wait_for_sync(
    tracking: Callable[[], Mapping[str, Any]],
    wanted: SyncWanted,
    *,
    max_tries: int,
    interval_s: float,
    sleep: Callable[[float], None],
    echo: Callable[[str], None],
) -> bool:
    """Ask ``tracking`` every ``interval_s`` until it passes (True) or ``max_tries`` asks
    failed (False; 0 asks forever).  A try whose call raises ``NoAnswer`` is echoed and
    counts as not synchronized; any other error ends the wait."""
    attempt = 0
    while True:
        attempt += 1
        try:
            answer = tracking()
        except NoAnswer as exc:
            echo(f"try: {attempt}, no answer: {exc}")
        else:
            echo(try_line(attempt, answer))
            if is_synced(answer, wanted):
                return True
        if max_tries and attempt >= max_tries:
            return False
        sleep(interval_s)
