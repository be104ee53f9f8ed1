"""A tsyncd client told to slow down by a rate-limiting server (KoD RATE) polls less often even
at its max-poll, as RFC 5905 §7.4 requires, about as seldom as a chronyd client of the same
server (QA s16 hunt-sync F1), and says so in its log.  The server is a tsyncd with
``rate-limit`` and ``kod = true``: chronyd 4.3's ``ratelimit`` only drops."""

from __future__ import annotations

import time

from peers import Chronyd, Peers, free_udp_port, wait_for

NTPDATA_TOTAL_TX = 30  # `chronyc -c ntpdata` column


def chronyd_sent(chrony: Chronyd) -> int:
    row = chrony.ntpdata()
    return int(row[NTPDATA_TOTAL_TX]) if row is not None else 0


def test_kod_rate_slows_a_client_polling_at_max_poll(peers: Peers) -> None:
    port = free_udp_port()
    # One request per 0.5 s is answered per client address (a bucket of 1, no leak), and
    # the excess kissed (at most one KoD per 0.5 s, the rest dropped).
    peers.tsyncd(
        "server",
        "[synchronization]\nlocal-stratum = 5\n"
        f'[[server]]\nlisten = "127.0.0.1:{port}"\n'
        "rate-limit = { interval = -1, burst = 1, leak = 0 }\nkod = true\nworkers = 0\n",
    )
    # min-poll = max-poll: a RATE cannot raise the poll, so only a back-off slows it down.
    client = peers.tsyncd(
        "client",
        f'[[source]]\nmode = "server"\naddress = "127.0.0.1:{port}"\nmin-poll = -3\n'
        "max-poll = -3\n",
    )
    # The reference: chronyd from another address (a bucket of its own) at the same poll.
    chrony = peers.chronyd(
        "chronyd-client",
        f"port 0\nbindacqaddress 127.0.0.2\nserver 127.0.0.1 port {port} minpoll -3 maxpoll -3\n",
    )

    def row() -> dict[str, int]:
        r: dict[str, int] = client.ctl("ntpdata")[0]
        return r

    wait_for("a KoD RATE", lambda: row()["drops_by_reason"].get("kiss_of_death", 0) >= 2)
    wait_for("chronyd's first KoD RATE", lambda: "Received KoD RATE" in chrony.proc.output())
    start, theirs_start, t0 = row(), chronyd_sent(chrony), time.monotonic()
    time.sleep(4)
    end, theirs, elapsed = row(), chronyd_sent(chrony) - theirs_start, time.monotonic() - t0
    ours = end["packets_sent"] - start["packets_sent"]
    # Every 1/8 s would be 32 requests in 4 s.  Each RATE holds the next poll back 4 more
    # polls (8, 16, ... while the kisses come in a row), as chronyd holds it back 4 polls:
    # about one request answered and one kissed per 0.75 s.
    assert ours <= elapsed * 8 / 2, (ours, theirs, elapsed, end)
    assert ours <= theirs + 3, (ours, theirs)
    assert end["packets_received"] > start["packets_received"]  # still polled and answered
    assert end["drops_by_reason"]["kiss_of_death"] > start["drops_by_reason"]["kiss_of_death"]
    # Logged as chronyd logs it ("Received KoD RATE from ...", WARNING), but not once per
    # kiss as chronyd does (QA s19 hunt-client F4: tsyncd logged none): once per 10 minutes.
    said = [line for line in client.proc.output().splitlines() if "kiss-o'-death RATE" in line]
    assert len(said) == 1 and " WARNING " in said[0], said
    assert "polling less often (poll -3, next request in" in said[0]
    assert chrony.proc.output().count("Received KoD RATE") >= 2
