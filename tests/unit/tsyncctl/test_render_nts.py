"""Human rendering of NTS state in ``tsyncctl peers`` and ``serverstats``."""

from __future__ import annotations

from tsyncctl.render import render_nts_sources, render_serverstats


def test_nts_sources_table() -> None:
    sources = [
        {"name": "plain:123", "nts": None},
        {
            "name": "nts.example.org:4460",
            "nts": {
                "cookies": 7,
                "aead": "AES-SIV-CMAC-256",
                "last_ke": 125.0,
                "tls_group": "X25519MLKEM768",
                "key_exchanges": 2,
                "naks": 1,
                "last_error": None,
            },
        },
    ]
    text = render_nts_sources(sources)
    assert text is not None
    header, _rule, row = text.splitlines()
    assert header.split()[:3] == ["NTS", "source", "Cookies"]
    assert row.split() == [
        "nts.example.org:4460",
        "7",
        "AES-SIV-CMAC-256",
        "125s",
        "X25519MLKEM768",
        "2",
        "1",
        "-",
    ]
    assert render_nts_sources([{"name": "plain:123"}]) is None


def test_serverstats_nts_lines() -> None:
    base = {"listen": ["127.0.0.1:123"], "received": 3, "sent": 3, "dropped": 0}
    assert "NTS" not in render_serverstats(base)
    text = render_serverstats(
        {
            **base,
            "nts_key_epoch": 20000,
            "nts_ke_connections": 4,
            "nts_naks": 2,
            "nts_ke_group": "x25519",
            "nts_ke_listen": ["127.0.0.1:4460"],
        }
    )
    lines = {k.strip(): v for k, v in (line.split(" : ") for line in text.splitlines())}
    assert lines["NTS-KE connections"] == "4" and lines["NTS NAKs sent"] == "2"
    assert lines["NTS-KE TLS group"] == "x25519"
    assert lines["NTS-KE listening on"] == "127.0.0.1:4460"
