"""``tsyncctl local``: a tsyncd server with no source starts and stops serving its own clock,
and a real chronyd client (``-x``) follows."""

from __future__ import annotations

from peers import NTPDATA_VALID_RX, Peers, free_udp_port, wait_for


def test_local_on_and_off_seen_by_chronyd(peers: Peers) -> None:
    port = free_udp_port()
    server = peers.tsyncd("tsyncd-server", f'[[server]]\nlisten = "127.0.0.1:{port}"\n')
    assert server.ctl("status")["stratum"] == 16  # no source, no local clock
    client = peers.chronyd(
        "chronyd-client", f"server 127.0.0.1 port {port} iburst minpoll -2 maxpoll -2\nport 0\n"
    )

    def answered() -> int:
        rows = [line.split(",") for line in client.chronyc("ntpdata").splitlines() if line]
        return int(rows[0][NTPDATA_VALID_RX]) if rows else 0

    wait_for("replies to count", lambda: client.chronyc("ntpdata").strip() or None)
    assert answered() == 0  # an unsynchronized server's replies are not valid for chronyd
    assert server.ctl("local", "--stratum", "9") == {
        "local_stratum": 9,
        "stratum": 9,
        "synchronized": False,
    }
    wait_for("chronyd to select tsyncd", lambda: any(r[1] == "*" for r in client.sources()))
    assert [r[3] for r in client.sources()] == ["9"]
    shown = server.run_ctl("local", "off")
    assert (shown.returncode, shown.stdout) == (
        0,
        "local clock not served while unsynchronized\n",
    )
    assert server.ctl("status")["stratum"] == 16
