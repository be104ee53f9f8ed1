"""Human-readable rendering of tsyncd's JSON snapshots (``tsyncctl`` without ``--json``).

Input is the JSON the daemon sent (plain dicts and lists), not the dataclasses: tsyncctl may
talk to a newer or older daemon, so a missing field prints as ``-`` instead of failing.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

STATE_SYMBOLS = {
    "selected": "*",
    "candidate": "+",
    "falseticker": "x",
    "unreachable": "?",
    "unusable": "?",
    "init": "?",
    "outlier": "-",
    "noselect": "N",
}
"""chronyc sources' S column: "?" is every source out for a reason of its own (no reply yet,
unreachable, unsynchronized, too far, a KoD, a failed NTS-KE), which the Note gives."""
STATE_LEGEND = (
    "* selected  + combined  - outlier  x falseticker  ? unreachable or unusable (Note)  N noselect"
)
MODE_SYMBOLS = {
    "server": "^",
    "pool": "^",
    "nts": "^",
    "tsq": "^",
    "peer": "=",
    "broadcast": "~",
}
"""chronyc sources' M column: ``^`` a server (chronyc's for NTS servers and pool members too,
and ours for TSQ, which is client/server time over QUIC), ``=`` a symmetric peer; chronyc
has no broadcast client, so ours is ``~`` (time coming over the air to everyone).  chronyc's
``#`` (a reference clock) joins when tsyncd has reference clocks.  A row without a mode (an
older tsyncd) shows a blank."""
MODE_LEGEND = "M: ^ server (pool member, NTS, TSQ)  = symmetric peer  ~ broadcast"
OFFSET_LEGEND = (
    "Offset: source minus local clock (RFC 5905), + local clock slow, - fast"
    " (chronyc shows the opposite sign)"
)
"""The sign of ``sources``' and ``sourcestats``' offsets, which a chronyc user would read
backwards: chronyc's are the local clock minus the source."""

_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))
NO_SOURCES = "no sources configured"
"""What the source tables print for an empty list (tsyncctl asks ``activity`` first whether
sources wait for an address, which the lists may leave out)."""


_NS_DIGITS = (9, 6, 3, 0)  # decimals that show s, ms, µs, ns to the nanosecond


def format_seconds(value: Any, *, signed: bool = False, digits: int | None = 3) -> str:
    """A duration in the largest unit that keeps it >= 1: ``+12.345 µs``, ``1.500 ms``;
    ``digits=None``: to the nanosecond, the resolution of tsyncd's values, whatever the unit
    (``+500.000323 ms``, ``+729 ns``, not ``+729.000000 ns``).

    None (or anything that is not a finite number) prints as ``-``.
    """
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    sign = ("+" if value >= 0 else "-") if signed else ("-" if value < 0 else "")
    magnitude = abs(float(value))
    index = next(i for i, (scale, _unit) in enumerate(_UNITS) if magnitude >= scale or i == 3)
    places = _NS_DIGITS[index] if digits is None else digits
    shown = round(magnitude / _UNITS[index][0], places)
    if shown >= 1000 and index > 0:
        # 999.9996 µs would print as "1000.000 µs": use the next unit up instead.
        index -= 1
        places = _NS_DIGITS[index] if digits is None else digits
        shown = round(magnitude / _UNITS[index][0], places)
    return f"{sign}{shown:.{places}f} {_UNITS[index][1]}"


def format_seconds_compact(value: Any, *, signed: bool = False) -> str:
    """Like ``format_seconds`` with one decimal and no space, for table columns."""
    return format_seconds(value, signed=signed, digits=1).replace(" ", "")


def format_age(seconds: Any) -> str:
    """How long ago, chronyc-style: ``35s``, ``17m``, ``3h``, ``2d``; ``-`` if never."""
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 600:
        return f"{int(seconds)}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}m"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def format_uptime(seconds: Any) -> str:
    """``1d 2h 3m 4s`` style."""
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "-"
    rest = int(seconds)
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def format_log2(value: Any) -> str:
    """A log2-seconds field with its meaning: ``6 (64 s)``, ``-20 (954 ns)``."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "-"
    seconds = 2.0**value
    shown = f"{int(seconds)} s" if value >= 0 else format_seconds(seconds, digits=0)
    return f"{value} ({shown})"


def format_precision(value: Any) -> str:
    """A precision (log2 s) as chronyc ntpdata shows it: ``-23 (0.000000119 seconds)``."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "-"
    return f"{value} ({2.0**value:.9f} seconds)"


def format_utc(unix_s: Any) -> str:
    """Unix seconds as a UTC date, ``2026-03-01 12:00:05 UTC``; ``-`` if none."""
    if not isinstance(unix_s, int | float) or not math.isfinite(unix_s):
        return "-"
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _key_values(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}} : {value}" for key, value in rows)


def _reference_id(system: Mapping[str, Any]) -> str:
    """chronyc's "CF404DC8 (::1)": the refid in hex and what it stands for, the system peer's
    address where the refid is made from it (an IPv6 address's is a hash of it), else its
    text (an IPv4 address, or a code such as GPS)."""
    raw = system.get("reference_id_raw")
    text = _text(system.get("reference_address") or system.get("reference_id"))
    if isinstance(raw, int) and not isinstance(raw, bool):
        return f"{raw:08X} ({text})"
    return text


def render_status(status: Mapping[str, Any]) -> str:
    """A chronyc-tracking-like block for the ``status`` method's result."""
    synced = status.get("synchronized")
    if synced:
        sync_text = "yes"
    else:
        reason = status.get("unsynchronized_reason")
        sync_text = f"no ({reason})" if reason else "no"
    offset = status.get("offset")
    offset_text = format_seconds(offset, signed=True)
    if isinstance(offset, int | float) and offset:
        # chrony's sign: the correction to add, so a positive offset means our clock is behind.
        offset_text += " (clock slow)" if offset > 0 else " (clock fast)"
    ref_text = format_utc(status.get("reference_time"))
    rows = [
        ("Reference ID", _reference_id(status)),
        ("Stratum", _text(status.get("stratum"))),
        ("Synchronized", sync_text),
        ("Selected source", _text(status.get("selected_source"))),
        ("Ref time", ref_text),
        ("Offset", offset_text),
        ("Root delay", format_seconds(status.get("root_delay"))),
        ("Root dispersion", format_seconds(status.get("root_dispersion"))),
        ("Leap status", _text(status.get("leap"))),
        ("Poll", format_log2(status.get("poll"))),
        ("Precision", format_log2(status.get("precision"))),
        ("Clock mode", _text(status.get("clock_mode"))),
        ("Uptime", format_uptime(status.get("uptime"))),
    ]
    return _key_values(rows)


_CHRONYC_LEAP = {
    "none": "Normal",
    "insert": "Insert second",
    "delete": "Delete second",
    "unsynchronized": "Not synchronised",
}
"""chronyc tracking's words for the leap status, which tracking's layout follows (JSON and
``status`` keep tsyncd's)."""


def _offset_of_ntp_time(value: Any) -> str:
    """An offset of NTP time from the local clock (RFC 5905's sign, positive: the clock is
    behind) in chronyc tracking's words, which a bare sign would not give a chronyc user,
    whose "Last offset" has the opposite sign: ``+1.283 µs (slow of NTP time)``."""
    text = format_seconds(value, signed=True)
    if text != "-" and value:
        text += " (slow of NTP time)" if value > 0 else " (fast of NTP time)"
    return text


def render_tracking(t: Mapping[str, Any]) -> str:
    """A ``chronyc tracking``-like block for the ``tracking`` method's result."""
    synced = t.get("synchronized")
    reason = t.get("unsynchronized_reason")
    sync_text = "yes" if synced else (f"no ({reason})" if reason else "no")
    ref_text = format_utc(t.get("reference_time"))
    freq = t.get("frequency_ppm")
    skew = t.get("skew_ppm")
    applied = t.get("applied_frequency_ppm")
    rows = [
        ("Reference ID", _reference_id(t)),
        ("Stratum", _text(t.get("stratum"))),
        ("Synchronized", sync_text),
        ("Ref time", ref_text),
        ("System offset", _offset_of_ntp_time(t.get("system_offset"))),
        ("Host clock offset", _offset_of_ntp_time(t.get("host_clock_offset"))),
        ("Last offset", _offset_of_ntp_time(t.get("last_offset"))),
        ("RMS offset", format_seconds(t.get("rms_offset"))),
        ("Residual offset", _offset_of_ntp_time(t.get("residual_offset"))),
        ("Frequency", f"{freq:+.3f} ppm" if isinstance(freq, int | float) else "-"),
        ("Skew", f"{skew:.3f} ppm" if isinstance(skew, int | float) else "-"),
        ("Applied rate", f"{applied:+.3f} ppm" if isinstance(applied, int | float) else "-"),
        ("Root delay", format_seconds(t.get("root_delay"))),
        ("Root dispersion", format_seconds(t.get("root_dispersion"))),
        ("Update interval", format_seconds(t.get("update_interval"))),
        ("Clock updates", _text(t.get("clock_updates"))),
        ("Discipline", _text(t.get("discipline_state"))),
        ("Leap status", _CHRONYC_LEAP.get(str(t.get("leap")), _text(t.get("leap")))),
        ("Poll", format_log2(t.get("poll"))),
        ("Clock mode", _text(t.get("clock_mode"))),
    ]
    return _key_values(rows)


SOURCESTATS_LEGEND = (
    "NP: samples in the regression  NR: runs of residuals of one sign  Span: oldest to newest\n"
    "Frequency: the source's rate against the local clock, ppm, + it runs fast"
    " (chronyc: opposite sign)\n"
    "Freq Skew: its error bound  Offset: the regression's, now  Std Dev: of its residuals\n"
    "Delay min, max: the clock filter's least and most round trip"
)
"""``sourcestats``' columns (always shown: tsyncctl's ``-v`` is accepted and changes nothing)."""


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` that ``row`` has a value for: a newer daemon's field, else the
    older one it supersedes in a column."""
    return next((row[k] for k in keys if row.get(k) is not None), None)


def _ppm(value: Any, *, signed: bool = False) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def render_sourcestats(stats: Sequence[Mapping[str, Any]]) -> str:
    """A ``chronyc sourcestats``-like table: chronyc's columns from the regression over each
    source's sample history, then the clock filter's delays.  A daemon without the regression
    fields shows the filter's samples, span, offset and jitter in their place."""
    if not stats:
        return NO_SOURCES
    headers = [
        "Name",
        "NP",
        "NR",
        "Span",
        "Frequency",
        "Freq Skew",
        "Offset",
        "Std Dev",
        "Delay min",
        "Delay max",
    ]
    rows = [
        [
            _text(s.get("name")),
            _text(_first(s, "regression_samples", "samples")),
            _text(s.get("runs")),
            format_seconds_compact(_first(s, "regression_span", "span")),
            _ppm(s.get("frequency_ppm"), signed=True),
            _ppm(s.get("skew_ppm")),
            format_seconds_compact(_first(s, "estimated_offset", "offset"), signed=True),
            format_seconds_compact(_first(s, "estimated_std_dev", "std_dev")),
            format_seconds_compact(s.get("delay_min")),
            format_seconds_compact(s.get("delay_max")),
        ]
        for s in stats
    ]
    table = render_table(headers, rows, right=set(range(1, len(headers))))
    return f"{table}\n\n{SOURCESTATS_LEGEND}\n{OFFSET_LEGEND}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A plain-text table; columns in ``right`` are right-aligned, the last one is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return " ".join(out).rstrip()

    rule = "=" * len(line(["=" * w for w in widths]))
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _table_with_notes(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    """``render_table`` for rows whose last cell is a note: a Note column only if any row
    has one."""
    if any(row[-1] for row in rows):
        return render_table([*headers, "Note"], rows, right)
    return render_table(headers, [row[:-1] for row in rows], right)


def render_sources(sources: Sequence[Mapping[str, Any]]) -> str:
    """A ``chronyc sources``-like table for the ``sources`` method's result."""
    if not sources:
        return NO_SOURCES
    headers = ["MS", "Name", "Address", "St", "Poll", "Reach", "LastRx", "Offset", "Delay"]
    headers.append("Jitter")
    rows: list[list[str]] = []
    for src in sources:
        reach = src.get("reach")
        parts = [str(src["state_reason"])] if src.get("state_reason") else []
        not_polled = any("offline" in p or "not polled" in p for p in parts)  # said once
        if src.get("online") is False and not not_polled:
            parts.append("offline")
        kod = src.get("kiss_code")
        if kod and f"kiss-o'-death {kod}" not in "; ".join(parts):  # said once
            parts.append(f"KoD {kod}")
        if src.get("interleaved"):  # RFC 9769: the last reply was interleaved
            parts.append("interleaved")
        if src.get("broadcast_delay") is not None:  # the round trip its offsets assume
            parts.append(f"delay {format_seconds_compact(src['broadcast_delay'])}")
        backoff = _ke_backoff(src.get("nts"))
        if backoff is not None:  # said after the reason, which may already say why
            why, wait = backoff
            said = "; ".join(parts)
            parts.append(wait if why and why in said else f"{why}: {wait}")
        note = "; ".join(parts)
        rows.append(
            [
                MODE_SYMBOLS.get(str(src.get("mode")), " ")
                + STATE_SYMBOLS.get(str(src.get("state")), "-"),
                _text(src.get("name")),
                _text(src.get("address")),
                _text(src.get("stratum")),
                _text(src.get("poll")),
                f"{reach:o}" if isinstance(reach, int) else "-",
                format_age(src.get("last_rx")),
                format_seconds_compact(src.get("offset"), signed=True),
                format_seconds_compact(src.get("delay")),
                format_seconds_compact(src.get("jitter")),
                note,
            ]
        )
    table = _table_with_notes(headers, rows, right={3, 4, 5, 6, 7, 8, 9})
    return f"{table}\n\n{MODE_LEGEND}\nS: {STATE_LEGEND}\n{OFFSET_LEGEND}"


def _ke_backoff(nts: Any) -> tuple[str, str] | None:
    """(why, "next NTS-KE in 22 s") while an NTS source waits out its NTS-KE back-off."""
    if not isinstance(nts, Mapping):
        return None
    next_ke = nts.get("next_ke")
    if not isinstance(next_ke, int | float) or not math.isfinite(next_ke):
        return None
    return str(nts.get("ke_backoff") or ""), f"next NTS-KE in {math.ceil(next_ke)} s"


def _nts_cells(nts: Mapping[str, Any]) -> list[str]:
    """Cookies, AEAD, last NTS-KE, TLS group, key exchanges and NAKs of one NTS source."""
    return [
        _text(nts.get("cookies")),
        _text(nts.get("aead")),
        format_age(nts.get("last_ke")),
        _text(nts.get("tls_group")),
        _text(nts.get("key_exchanges")),
        _text(nts.get("naks")),
    ]


def render_nts_sources(sources: Sequence[Mapping[str, Any]]) -> str | None:
    """A table of the NTS sources' state (cookies, AEAD, last NTS-KE, TLS group), or None."""
    rows = []
    for src in sources:
        nts = src.get("nts")
        if not isinstance(nts, Mapping):
            continue
        rows.append([_text(src.get("name")), *_nts_cells(nts), _text(nts.get("last_error"))])
    if not rows:
        return None
    headers = ["NTS source", "Cookies", "AEAD", "Last KE", "TLS group", "KEs", "NAKs", "Error"]
    return render_table(headers, rows, right={1, 3, 5, 6})


def auth_kind(src: Mapping[str, Any]) -> str | None:
    """How a source's packets are authenticated: "NTS", "SK" (a symmetric key, as chronyc
    says), "TLS" (TSQ, time over QUIC) or None."""
    if isinstance(src.get("nts"), Mapping):
        return "NTS"
    if src.get("key_id") is not None:
        return "SK"
    return "TLS" if src.get("mode") == "tsq" else None


def render_authdata(sources: Sequence[Mapping[str, Any]]) -> str:
    """Every source with how its packets are authenticated, like ``chronyc authdata``: NTS
    (with its cookies, AEAD and key exchanges), TLS or none (-)."""
    rows = []
    for src in sources:
        nts = src.get("nts")
        cells = _nts_cells(nts) if isinstance(nts, Mapping) else ["-"] * 6
        kind = auth_kind(src) or "-"
        if kind == "SK":
            kind = f"SK {src.get('key_id')} {src.get('key_type')}"
        backoff = _ke_backoff(nts)
        note = ": ".join(filter(None, backoff)) if backoff is not None else ""
        rows.append([_text(src.get("name")), kind, *cells, note])
    if not rows:
        return NO_SOURCES
    headers = ["Source", "Auth", "Cookies", "AEAD", "Last KE", "TLS group", "KEs", "NAKs"]
    return _table_with_notes(headers, rows, right={2, 4, 6, 7})


SELECT_LEGEND = """\
* selected  + combined  W too few agree (min-sources) or no require source is selectable
P a prefer source is used  D dropped by clustering  x falseticker
T does not fully agree with the trust sources  N noselect  M no measurement yet
S no reply to the last 8 polls  s unsynchronized  d root distance too large
? out for the reason in Note"""
_LEAP_SYMBOLS = {"none": "N", "insert": "+", "delete": "-", "unsynchronized": "?"}


def _option_flags(options: Any) -> str:
    """chronyc's COpts letters: N noselect, P prefer, T trust, R require ("-" where unset)."""
    given = set(options) if isinstance(options, list | tuple) else set()
    names = ("noselect", "prefer", "trust", "require")
    return "".join(name[0].upper() if name in given else "-" for name in names)


def render_selectdata(sources: Sequence[Mapping[str, Any]]) -> str:
    """A ``chronyc selectdata``-like table: how the last selection judged each source, with
    the interval its measurement put the true offset in (offset ± root distance, the sign of
    the Offset in ``sources``)."""
    rows = []
    for src in sources:
        interval = src.get("select_interval")
        low, high = (
            interval if isinstance(interval, list | tuple) and len(interval) == 2 else (None, None)
        )
        note = _text(src.get("state_reason")) if src.get("state_reason") else ""
        rows.append(
            [
                _text(src.get("select_code")),
                _text(src.get("name")),
                "Y" if auth_kind(src) else "N",
                _option_flags(src.get("options")),
                format_age(src.get("select_age")),
                format_seconds_compact(low, signed=True),
                format_seconds_compact(high, signed=True),
                _LEAP_SYMBOLS.get(str(src.get("leap")), "-"),
                note,
            ]
        )
    if not rows:
        return NO_SOURCES
    headers = ["S", "Name", "Auth", "Opts", "Last", "Low", "High", "Leap"]
    table = _table_with_notes(headers, rows, right={4, 5, 6})
    return f"{table}\n\n{SELECT_LEGEND}"


def render_accheck(address: str, servers: Sequence[Mapping[str, Any]]) -> str:
    """One line per NTP server socket: whether it answers ``address``, and if not, why."""
    if not servers:
        return "no NTP server is configured ([[server]]): nobody is answered"
    lines = []
    for row in servers:
        if row.get("allowed"):
            lines.append(f"{row.get('listen')}: {address} is allowed")
        else:
            reason = str(row.get("reason"))
            if reason == "unreachable":
                why = "it takes another address family"
                lines.append(f"{row.get('listen')}: {address} cannot reach it ({why})")
                continue
            why = {"denied": "on the deny list", "restricted": "not on the allow list"}.get(
                reason, reason
            )
            lines.append(f"{row.get('listen')}: {address} is denied ({why})")
    return "\n".join(lines)


def render_ntpdata(sources: Sequence[Mapping[str, Any]]) -> str:
    """One ``chronyc ntpdata``-like block per source: everything the ``sources`` method
    reports of it, one field a line (the table of ``peers`` has room for a few)."""
    blocks = []
    for src in sources:
        reach = src.get("reach")
        rows = [
            ("Name", _text(src.get("name"))),
            ("Address", _text(src.get("address"))),
            ("Local address", _text(src.get("local_address"))),
            ("Mode", _text(src.get("mode"))),
            ("State", _text(src.get("state"))),
            ("Online", "no" if src.get("online") is False else "yes"),
            ("Options", ", ".join(src.get("options") or []) or "-"),
            ("Reason", _text(src.get("state_reason"))),
            ("Stratum", _text(src.get("stratum"))),
            ("Reference ID", _text(src.get("reference_id"))),
            ("Reference time", format_utc(src.get("reference_time"))),
            ("Leap status", _text(src.get("leap"))),
            ("Version", _text(src.get("version"))),
            ("Poll interval", format_log2(src.get("poll"))),
            ("Precision", format_precision(src.get("precision"))),
            ("Reach", f"{reach:03o}" if isinstance(reach, int) else "-"),
            ("Last RX", format_age(src.get("last_rx"))),
            ("Offset", format_seconds(src.get("offset"), signed=True, digits=None)),
            ("Delay", format_seconds(src.get("delay"), digits=None)),
            ("Jitter", format_seconds(src.get("jitter"), digits=None)),
            ("Dispersion", format_seconds(src.get("dispersion"), digits=None)),
            ("Root delay", format_seconds(src.get("root_delay"), digits=None)),
            ("Root dispersion", format_seconds(src.get("root_dispersion"), digits=None)),
            ("Response time", format_seconds(src.get("response_time"), digits=None)),
            ("Interleaved", "yes" if src.get("interleaved") else "no"),
            ("TX timestamping", _text(src.get("tx_timestamping"))),
            ("RX timestamping", _text(src.get("rx_timestamping"))),
            ("Kiss code", _text(src.get("kiss_code"))),
            ("Total TX", _text(src.get("packets_sent"))),
            ("Total RX", _text(src.get("packets_received_total"))),
            ("Total valid RX", _text(src.get("packets_received"))),
            ("Total dropped RX", _text(src.get("packets_dropped"))),
            *_by_reason(src.get("drops_by_reason")),
        ]
        if src.get("interleaved_replies"):
            rows.append(("Interleaved RX", _text(src.get("interleaved_replies"))))
        if src.get("broadcast_delay") is not None:
            rows.append(
                ("Broadcast delay", format_seconds(src.get("broadcast_delay"), digits=None))
            )
        nts = src.get("nts")
        if isinstance(nts, Mapping):
            rows += [
                ("NTS-KE server", _text(nts.get("ke_server"))),
                ("NTS AEAD", _text(nts.get("aead"))),
                ("NTS cookies", _text(nts.get("cookies"))),
                ("NTS last KE", format_age(nts.get("last_ke"))),
                ("NTS TLS group", _text(nts.get("tls_group"))),
                ("NTS key exchanges", _text(nts.get("key_exchanges"))),
                ("NTS KE failures", _text(nts.get("ke_failures"))),
                ("NTS last error", _text(nts.get("last_error"))),
                ("NTS authenticated", _text(nts.get("authenticated"))),
                ("NTS NAKs", _text(nts.get("naks"))),
            ]
            backoff = _ke_backoff(nts)
            if backoff is not None:
                rows.append(("NTS back-off", ": ".join(filter(None, backoff))))
        blocks.append(_key_values(rows))
    return "\n\n".join(blocks) if blocks else NO_SOURCES


def _by_reason(counts: Any, indent: str = "  ") -> list[tuple[str, str]]:
    """Indented "reason: count" lines under a total, reasons in order (none if absent)."""
    if not isinstance(counts, Mapping):
        return []
    return [(f"{indent}{reason}", _text(count)) for reason, count in sorted(counts.items())]


def render_serverstats(stats: Mapping[str, Any]) -> str:
    """Key/value lines for the ``serverstats`` method's result, drops broken down by reason."""
    listen = stats.get("listen")
    listen_text = ", ".join(str(a) for a in listen) if isinstance(listen, list) and listen else "-"
    rows = [
        ("Listening on", listen_text),
        ("Packets received", _text(stats.get("received"))),
        ("Packets sent", _text(stats.get("sent"))),
        ("Packets dropped", _text(stats.get("dropped"))),
    ]
    rows.extend(_by_reason(stats.get("dropped_by_reason")))
    rows.append(("KoD sent", _text(stats.get("kod_sent"))))
    rows.append(("Answered", _text(stats.get("answered"))))
    rows.append(("Interleaved answered", _text(stats.get("interleaved_answered"))))
    rows.append(("Clients", _text(stats.get("clients"))))
    rows.append(("Client log records dropped", _text(stats.get("clients_evicted"))))
    rows.append(("Workers", _text(stats.get("workers"))))
    rows.append(("Worker restarts", _text(stats.get("worker_restarts"))))
    rows.extend(_tsq_rows(stats.get("tsq")))
    if stats.get("nts_key_epoch") is not None:
        ke_listen = stats.get("nts_ke_listen")
        rows.extend(
            [
                ("NTS-KE listening on", ", ".join(ke_listen) if ke_listen else "-"),
                ("NTS-KE connections", _text(stats.get("nts_ke_connections"))),
                ("NTS-KE completed", _text(stats.get("nts_ke_completed"))),
                ("NTS-KE failures", _text(stats.get("nts_ke_failures"))),
                *_by_reason(stats.get("nts_ke_failures_by_reason")),
                ("NTS-KE TLS group", _text(stats.get("nts_ke_group"))),
                *_by_reason(stats.get("nts_ke_groups")),
                ("NTS requests", _text(stats.get("nts_requests"))),
                ("NTS cookies issued", _text(stats.get("nts_cookies_issued"))),
                ("NTS NAKs sent", _text(stats.get("nts_naks"))),
                ("NTS key epoch", _text(stats.get("nts_key_epoch"))),
                ("NTS key ID", _text(stats.get("nts_key_id"))),
            ]
        )
    return _key_values(rows)


def _tsq_rows(servers: Any) -> list[tuple[str, str]]:
    """serverstats lines for each TSQ server (absent from older daemons)."""
    rows: list[tuple[str, str]] = []
    for tsq in servers if isinstance(servers, list) else []:
        if not isinstance(tsq, Mapping):
            continue
        rows.append((f"TSQ {_text(tsq.get('transport'))}", _text(tsq.get("listen"))))
        for key, label in (
            ("connections", "  Connections open"),
            ("connections_accepted", "  Connections accepted"),
            ("connections_refused", "  Connections refused"),
            ("received", "  Requests received"),
            ("sent", "  Responses sent"),
            ("errors_sent", "  Error responses sent"),
            ("dropped", "  Requests dropped"),
        ):
            rows.append((label, _text(tsq.get(key))))
        rows.extend(_by_reason(tsq.get("dropped_by_reason"), "    "))
    return rows


_Column = tuple[str, str, Any]  # header, field, how to show it


def _client_table(clients: Sequence[Mapping[str, Any]], columns: Sequence[_Column]) -> str:
    """One row per client, the first column left-aligned (its address), the rest right."""
    headers = [header for header, _, _ in columns]
    rows = [[show(c.get(field)) for _, field, show in columns] for c in clients]
    return render_table(headers, rows, right=set(range(1, len(columns))))


def render_clients(clients: Sequence[Mapping[str, Any]]) -> str:
    """A ``chronyc clients``-like table for the ``clients`` method's result."""
    if not clients:
        return "no clients"
    columns: list[_Column] = [
        ("Address", "address", _text),
        ("NTP", "received", _text),
        ("Answered", "answered", _text),
        ("Interleaved", "interleaved", _text),
        ("Drop", "dropped", _text),
        ("KoD", "kod_sent", _text),
        ("Int", "interval", format_seconds_compact),
        ("Last", "last_rx", format_age),
    ]
    return _client_table(clients, columns)


def render_ke_clients(clients: Sequence[Mapping[str, Any]]) -> str:
    """``chronyc clients -k``-like: NTS-KE connections, those served (ended with cookies), those
    refused (rate limit, connection bound), interval and age."""
    if not clients:
        return "no NTS-KE clients"
    columns: list[_Column] = [
        ("Address", "address", _text),
        ("NTS-KE", "received", _text),
        ("Served", "answered", _text),  # sessions that got cookies
        ("Drop", "dropped", _text),
        ("Int", "interval", format_seconds_compact),
        ("Last", "last_rx", format_age),
    ]
    return _client_table(clients, columns)


def render_activity(counts: Mapping[str, Any]) -> str:
    """``chronyc activity``'s lines for the ``activity`` method's counts."""
    lines = (
        ("online", "sources online"),
        ("offline", "sources offline"),
        ("burst_online", "sources doing burst (return to online)"),
        ("burst_offline", "sources doing burst (return to offline)"),
        ("unknown_address", "sources with unknown address"),
    )
    return "\n".join(f"{_text(counts.get(key))} {text}" for key, text in lines)
