"""The MS column and the Note of ``tsyncctl peers``' table."""

from __future__ import annotations

from typing import Any

from tsyncctl.render import render_sources, render_sourcestats


def _row(name: str, state: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "address": "192.0.2.1:123", "state": state, "mode": "server", **fields}


def test_sources_out_for_a_reason_of_their_own_show_a_question_mark() -> None:
    """chronyc's "?": no reply yet, unusable (unsynchronized, too far, KoD), not "-" (an
    outlier, which the legend says "-" is)."""
    text = render_sources(
        [
            _row("waiting", "init", state_reason="waiting for the first reply"),
            _row(
                "denied",
                "unusable",
                state_reason="server sent kiss-o'-death DENY: access denied",
                kiss_code="DENY",
            ),
            _row("rated", "candidate", kiss_code="RATE"),
            _row("far", "outlier"),
        ]
    )
    lines = {line.split()[1]: line for line in text.splitlines()[2:] if line.strip()}
    assert lines["waiting"].startswith("^? ") and lines["denied"].startswith("^? ")
    assert lines["far"].startswith("^- ") and lines["rated"].startswith("^+ ")
    assert lines["denied"].count("DENY") == 1  # the reason says it: no "KoD DENY" after it
    assert lines["rated"].endswith("KoD RATE")


def test_the_ms_column_shows_chronycs_mode_character_before_the_state() -> None:
    """QA s19 hunt-client F5: chronyc's M (``^`` server, ``=`` peer; ours ``~`` for
    broadcast), so a peer and a server no longer look alike; the JSON is unchanged.  No ``#``:
    tsyncd has no reference clocks yet, and the legend does not promise them (hunt-new #6)."""
    modes = ("server", "pool", "nts", "tsq", "peer", "broadcast")
    text = render_sources([_row(m, "candidate", mode=m) for m in modes] + [_row("old", "init")])
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["MS", "Name"]
    cells = {line.split()[1]: line.split()[0] for line in lines[2:9]}
    assert cells == {
        "server": "^+", "pool": "^+", "nts": "^+", "tsq": "^+", "peer": "=+", "broadcast": "~+",
        "old": "^?",
    }  # fmt: skip
    assert render_sources([{"name": "older", "state": "selected"}]).splitlines()[2][:2] == " *"
    assert "M: ^ server (pool member, NTS, TSQ)  = symmetric peer  ~ broadcast\n" in text
    assert "S: * selected  + combined" in text


def test_offset_tables_say_what_the_sign_means() -> None:
    """RFC 5905's sign, source minus local, the opposite of chronyc's sources/sourcestats."""
    legend = (
        "Offset: source minus local clock (RFC 5905), + local clock slow, - fast"
        " (chronyc shows the opposite sign)"
    )
    stats = render_sourcestats([{"name": "v6", "samples": 8, "offset": 0.5}])  # an older tsyncd
    assert stats.splitlines()[2].split()[:7] == ["v6", "8", "-", "-", "-", "-", "+500.0ms"]
    assert stats.splitlines()[-1] == legend
    assert render_sources([_row("v6", "noselect", offset=0.5)]).splitlines()[-1] == legend


def test_an_offline_source_says_so_once() -> None:
    """QA s17 hunt-churn F6: the reason (the core's "offline") and the online flag both said
    it: "offline; offline"."""
    text = render_sources(
        [
            _row("a", "unreachable", state_reason="offline", online=False),
            _row("b", "init", online=False),
        ]
    )
    lines = {line.split()[1]: line for line in text.splitlines()[2:] if line.strip()}
    assert lines["a"].count("offline") == 1 and lines["a"].endswith("offline")
    assert lines["b"].endswith("offline")


def test_sourcestats_shows_chronycs_columns_from_the_regression() -> None:
    """NP, NR, Span, Frequency, Freq Skew, Offset, Std Dev as chronyc orders them, from the
    regression fields (not the clock filter's samples, span, offset and jitter)."""
    row = {
        "name": "ntp1",
        "samples": 8,
        "span": 14.0,
        "offset": 0.002,
        "std_dev": 0.001,
        "delay_min": 0.0002,
        "delay_max": 0.0004,
        "regression_samples": 21,
        "regression_span": 320.0,
        "runs": 11,
        "frequency_ppm": -0.0421,
        "skew_ppm": 0.5,
        "estimated_offset": 1.5e-5,
        "estimated_std_dev": 3e-6,
    }
    lines = render_sourcestats([row]).splitlines()
    assert lines[0].split() == [
        "Name", "NP", "NR", "Span", "Frequency", "Freq", "Skew", "Offset", "Std", "Dev",
        "Delay", "min", "Delay", "max",
    ]  # fmt: skip
    assert lines[2].split() == [
        "ntp1", "21", "11", "320.0s", "-0.042", "0.500", "+15.0µs", "3.0µs", "200.0µs", "400.0µs",
    ]  # fmt: skip
    legend = "\n".join(lines[4:])
    assert "NR: runs of residuals of one sign" in legend
    assert "Frequency: the source's rate against the local clock, ppm, + it runs fast" in legend
