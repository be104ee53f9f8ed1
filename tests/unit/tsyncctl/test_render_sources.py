"""The S column and the Note of ``tsyncctl peers``' table."""

from __future__ import annotations

from typing import Any

from tsyncctl.render import render_sources


def _row(name: str, state: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "address": "192.0.2.1:123", "state": state, **fields}


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
    assert lines["waiting"].startswith("?") and lines["denied"].startswith("?")
    assert lines["far"].startswith("-") and lines["rated"].startswith("+")
    assert lines["denied"].count("DENY") == 1  # the reason says it: no "KoD DENY" after it
    assert lines["rated"].endswith("KoD RATE")
