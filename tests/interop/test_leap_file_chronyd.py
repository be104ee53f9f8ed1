"""``[synchronization] leap-seconds-file``: a tsyncd server on its own clock announces the leap
second its leap-seconds.list puts at the end of today, and a real chronyd client reads it."""

from __future__ import annotations

import time
from pathlib import Path

from peers import NTPDATA_VALID_RX, Peers, free_udp_port, wait_for

_NTP_UNIX_S = 2_208_988_800
_DAY_S = 86_400
_NTPDATA_LEAP = 5  # `chronyc -c ntpdata`: "Normal", "Insert second", ...


def leap_file(path: Path, *, tonight: bool) -> Path:
    """A leap-seconds.list with leaps at the next two UTC midnights (so a test that crosses
    one still has one tonight), or only long past ones; expiring in a year."""
    today = int(time.time()) // _DAY_S * _DAY_S
    lines = [f"#@ {today + 365 * _DAY_S + _NTP_UNIX_S}", f"{1_483_228_800 + _NTP_UNIX_S} 37"]
    if tonight:
        lines += [f"{today + _DAY_S + _NTP_UNIX_S} 38", f"{today + 2 * _DAY_S + _NTP_UNIX_S} 39"]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def test_chronyd_hears_the_leap_second_of_the_file(peers: Peers) -> None:
    port = free_udp_port()
    table = leap_file(peers.tmp / "leap-seconds.list", tonight=True)
    server = peers.tsyncd(
        "tsyncd-server",
        f'[synchronization]\nlocal-stratum = 8\nleap-seconds-file = "{table}"\n'
        f'[[server]]\nlisten = "127.0.0.1:{port}"\n',
    )
    assert server.ctl("status")["leap"] == "insert"
    client = peers.chronyd(
        "chronyd-client", f"server 127.0.0.1 port {port} iburst minpoll -2 maxpoll -2\nport 0\n"
    )

    def answered() -> list[str] | None:
        rows = [line.split(",") for line in client.chronyc("ntpdata").splitlines() if line]
        return rows[0] if rows and int(rows[0][NTPDATA_VALID_RX]) >= 1 else None

    row = wait_for("chronyd to get a valid reply", answered)
    assert row[_NTPDATA_LEAP] == "Insert second", row
    # The same server without a leap tonight in its file: nothing announced.
    leap_file(table, tonight=False)
    assert server.ctl("reload")["restart_needed"] == []
    assert server.ctl("status")["leap"] == "none"
