"""``tsyncctl clients`` rendering (issue 4)."""

from __future__ import annotations

from tsyncctl.render import render_clients


def test_render_clients_table() -> None:
    text = render_clients(
        [
            {
                "address": "192.0.2.1",
                "received": 12,
                "answered": 10,
                "interleaved": 8,
                "dropped": 1,
                "kod_sent": 1,
                "last_rx": 3.2,
                "interval": 0.25,
            },
            {"address": "2001:db8::1", "received": 1},  # an older daemon's fields: shown as -
        ]
    )
    lines = text.splitlines()
    assert lines[0].split() == [
        "Address",
        "NTP",
        "Answered",
        "Interleaved",
        "Drop",
        "KoD",
        "Int",
        "Last",
    ]
    assert lines[2].split() == ["192.0.2.1", "12", "10", "8", "1", "1", "250.0ms", "3s"]
    assert lines[3].split() == ["2001:db8::1", "1", "-", "-", "-", "-", "-", "-"]
    assert render_clients([]) == "no clients"
