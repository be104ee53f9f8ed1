"""A server that kisses DENY (a tsyncd with ``deny`` and ``kod = true``; chronyd 4.3 never
sends KoDs) and then has its access list fixed: chronyd, the reference, ignores the kisses and
keeps polling, so it recovers by itself; tsyncd stops polling (RFC 5905 §7.4), logs it once at
WARNING, shows it in the Note, and ``tsyncctl online`` polls it again (QA s19 hunt-client F4:
no log line, and offline/online both answered "already")."""

from __future__ import annotations

from peers import NTPDATA_TOTAL_TX, Chronyd, Peers, free_udp_port, wait_for


def test_a_deny_stopped_source_is_logged_shown_and_polled_again_online(peers: Peers) -> None:
    port = free_udp_port()
    server_toml = (
        "[synchronization]\nlocal-stratum = 8\n"
        f'[[server]]\nlisten = "127.0.0.8:{port}"\nkod = true\nworkers = 0\n'
    )
    server = peers.tsyncd("server", server_toml + 'deny = ["127.0.0.1"]\n')
    client = peers.tsyncd(
        "client",
        f'[[source]]\nmode = "server"\naddress = "127.0.0.8:{port}"\niburst = true\n'
        "min-poll = -2\nmax-poll = -2\n",
    )
    chrony = peers.chronyd(
        "chronyd-client", f"port 0\nserver 127.0.0.8 port {port} iburst minpoll -2 maxpoll -2\n"
    )
    name = f"127.0.0.8:{port}"

    def row() -> dict[str, object]:
        rows: list[dict[str, object]] = client.ctl("peers")
        return rows[0]

    def chronyd_sent(c: Chronyd) -> int:
        r = c.ntpdata("127.0.0.8")
        return int(r[NTPDATA_TOTAL_TX]) if r is not None else 0

    wait_for("the DENY", lambda: "DENY" in str(row()["state_reason"]))
    assert str(row()["state_reason"]).endswith("not polled until tsyncctl online or burst")
    # Not polled, so not shown as online (QA s19: activity and ntpdata said it was).
    assert row()["online"] is False
    assert client.ctl("activity")["offline"] == 1 and client.ctl("activity")["online"] == 0
    shown = client.run_ctl("ntpdata", name)
    assert "Online" in shown.stdout and "no" in next(
        line for line in shown.stdout.splitlines() if line.startswith("Online")
    ), shown.stdout
    sources_line = client.run_ctl("sources").stdout
    assert sources_line.count("not polled") == 1 and "offline" not in sources_line
    warnings = [line for line in client.proc.output().splitlines() if "kiss-o'-death" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], warnings
    assert f"{name}: server sent kiss-o'-death DENY (access denied)" in warnings[0]
    # chronyd keeps polling the denying server; tsyncd has stopped.
    sent = row()["packets_sent"]
    theirs = chronyd_sent(chrony)
    wait_for("chronyd to poll on", lambda: chronyd_sent(chrony) >= theirs + 3)
    assert row()["packets_sent"] == sent

    server.proc.stop()  # the server's access list fixed
    peers.tsyncd("server-fixed", server_toml)
    wait_for("chronyd back by itself", lambda: int(chrony.sources()[0][5], 8) != 0)
    assert row()["packets_sent"] == sent and "DENY" in str(row()["state_reason"])
    assert client.ctl("online", name) == {"changed": [name], "selected": [name]}
    wait_for("tsyncd polling and reaching it again", lambda: row()["reach"])
    assert "DENY" not in str(row()["state_reason"])
    # Online again (its iburst may still run: activity then counts it under burst_online).
    activity = client.ctl("activity")
    assert row()["online"] is True and activity["online"] + activity["burst_online"] == 1
    assert activity["offline"] == activity["burst_offline"] == 0
