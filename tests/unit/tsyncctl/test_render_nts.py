"""Human rendering of NTS state in ``tsyncctl peers``, ``authdata``, ``ntpdata`` and
``serverstats``."""

from __future__ import annotations

from tsyncctl.render import (
    render_authdata,
    render_ntpdata,
    render_nts_sources,
    render_serverstats,
    render_sources,
)


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


def test_an_nts_ke_back_off_is_shown_with_why() -> None:
    """A source whose NTS-KE waits out a back-off (its NTP server NAKed the last KE's
    cookies, or the KE failed) says so in the peers Note, authdata and ntpdata."""
    waiting = {"cookies": 0, "naks": 3, "next_ke": 21.2, "ke_backoff": "NAKed after NTS-KE"}
    rows = [
        {"name": "a:4460", "state": "init", "state_reason": "no valid reply yet", "nts": waiting},
        {
            "name": "b:4460",
            "state": "init",
            "state_reason": "NTS-KE failed: cannot connect",
            "nts": {"next_ke": 15.0, "ke_backoff": "NTS-KE failed"},
        },
        {"name": "c:4460", "state": "selected", "nts": {"next_ke": None, "ke_backoff": None}},
    ]
    peers = {line.split()[1]: line for line in render_sources(rows).splitlines()[2:5]}
    assert peers["a:4460"].endswith("no valid reply yet; NAKed after NTS-KE: next NTS-KE in 22 s")
    assert peers["b:4460"].endswith("NTS-KE failed: cannot connect; next NTS-KE in 15 s")
    assert "NTS-KE" not in peers["c:4460"]
    auth = render_authdata(rows).splitlines()
    assert auth[0].split()[-1] == "Note"
    assert auth[2].endswith("NAKed after NTS-KE: next NTS-KE in 22 s")
    assert render_authdata(rows[2:]).splitlines()[0].split()[-1] == "NAKs"  # no Note column
    details = render_ntpdata(rows[:1])
    assert "NTS back-off      : NAKed after NTS-KE: next NTS-KE in 22 s" in details
