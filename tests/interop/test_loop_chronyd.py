"""tsyncd and chronyd on their local clocks polling each other: neither takes back time that is
its own (tsyncd's loop test, chronyd's test D), so one keeps its local stratum and the other
follows it, as two chronyds settle (QA s16 hunt-sync F2)."""

from __future__ import annotations

import ipaddress
import time

import pytest
from peers import Chronyd, Peers, Tsyncd, free_udp_port, wait_for

LOCAL = "127.127.1.1"  # the refid of a server on its own clock, chronyd's and tsyncd's


def chronyd_view(chrony: Chronyd) -> tuple[int, str] | None:
    """(stratum, reference ID as a dotted quad) from ``chronyc -c tracking``."""
    fields = chrony.chronyc("tracking").split(",")
    if len(fields) < 3:
        return None
    return int(fields[2]), str(ipaddress.IPv4Address(int(fields[0], 16)))


def tsyncd_view(daemon: Tsyncd) -> tuple[int, str]:
    status = daemon.ctl("status")
    return status["stratum"], status["reference_id"]


@pytest.mark.parametrize(("ours", "theirs"), [(5, 7), (7, 5)])
def test_tsyncd_and_chronyd_polling_each_other_settle_without_a_loop(
    peers: Peers, ours: int, theirs: int
) -> None:
    our_port, chrony_port = free_udp_port(), free_udp_port()
    chrony = peers.chronyd(
        "chronyd",
        f"port {chrony_port}\nbindaddress 127.0.0.1\nlocal stratum {theirs}\nallow 127.0.0.1\n"
        f"server 127.0.0.1 port {our_port} minpoll -3 maxpoll -3\n",
    )
    tsyncd = peers.tsyncd(
        "tsyncd",
        f"[synchronization]\nlocal-stratum = {ours}\n"
        f'[[server]]\nlisten = "127.0.0.1:{our_port}"\n'
        f'[[source]]\nmode = "server"\naddress = "127.0.0.1:{chrony_port}"\n'
        "min-poll = -3\nmax-poll = -3\n",
    )
    # One on its local clock, the other following it one stratum below: tsyncd ignores a
    # local clock no better than its own, so with the lower local stratum it always serves;
    # with the higher one, whichever heard the other first follows it.
    arrangements = {
        ((ours, LOCAL), (ours + 1, "127.0.0.1")),
        ((theirs + 1, "127.0.0.1"), (theirs, LOCAL)),
    }
    if ours < theirs:
        arrangements = {((ours, LOCAL), (ours + 1, "127.0.0.1"))}

    def settled() -> tuple[tuple[int, str], tuple[int, str] | None] | None:
        views = (tsyncd_view(tsyncd), chronyd_view(chrony))
        return views if views in arrangements else None

    first = wait_for("one to follow the other's local clock", settled, timeout=40)
    # 24 polls each: no stratum climbing (a loop's mark), and a tsyncd on its local clock
    # never takes its time back.  chronyd may drop to its own local clock for a moment on a
    # busy machine (a late sample), which is no loop.
    ceiling = max(ours, theirs) + 1
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        ours_now, theirs_now = tsyncd_view(tsyncd), chronyd_view(chrony)
        assert ours_now[0] <= ceiling and (theirs_now is None or theirs_now[0] <= ceiling)
        if first[0][1] == LOCAL:
            assert ours_now == first[0]
        time.sleep(0.2)
    row = tsyncd.ctl("peers")[0]
    if first[0][1] == LOCAL:  # chronyd follows tsyncd: tsyncd refuses its time back
        assert row["state_reason"] == (
            "synchronization loop: synchronized to us (its reference ID 127.0.0.1 is ours)"
        )
        assert row["drops_by_reason"]["loop"] >= 8 and row["select_code"] == "s"
    else:
        assert row["state"] == "selected"
