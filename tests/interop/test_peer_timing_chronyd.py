"""Symmetric mode timing against real chronyd (QA s19 hunt-client #3): tsyncd at the lower
stratum sends its packet just after the higher-stratum chronyd peer's, as a chronyd in its place
would, so chronyd's measurements of tsyncd have a short response time (tsyncd's T3 - T2)
instead of one anywhere in the poll interval (0.36-0.48 s at poll -1 before), and chronyd's
packets no longer cross ours.

tsyncd serves its local clock at stratum 8 (``min-sources = 2`` keeps it there); chronyd has no
source but tsyncd and no local stratum, so it is at stratum 16 until it synchronizes to tsyncd
at 9: higher than tsyncd's either way.
"""

from __future__ import annotations

import pytest
from peers import (
    NTPDATA_INTERLEAVED,
    NTPDATA_RESPONSE_TIME,
    NTPDATA_TOTAL_RX,
    NTPDATA_VALID_RX,
    Peers,
    free_udp_port,
    wait_for,
)

RUN = 8  # chronyd's samples of tsyncd in a row that must all have a short response time
MAX_RESPONSE_S = 0.005  # 1 % of the poll interval (0.5 s); locked, tsyncd answers in < 1 ms


@pytest.mark.parametrize("xleave", [False, True], ids=["basic", "xleave"])
def test_lower_stratum_peer_answers_chronyd_at_once(peers: Peers, xleave: bool) -> None:
    our_port, chrony_port = free_udp_port(), free_udp_port()
    option = " xleave" if xleave else ""
    chrony = peers.chronyd(
        "chronyd-peer",
        f"port {chrony_port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\n"
        f"peer 127.0.0.1 port {our_port} minpoll -1 maxpoll -1{option}\n",
    )
    peers.tsyncd(
        "tsyncd-peer",
        "[synchronization]\nlocal-stratum = 8\nmin-sources = 2\n"
        f'[[server]]\nlisten = "127.0.0.1:{our_port}"\n'
        f'[[source]]\nmode = "peer"\naddress = "127.0.0.1:{chrony_port}"\n'
        f"local-port = {our_port}\nmin-poll = -1\nmax-poll = -1\n"
        f"xleave = {'true' if xleave else 'false'}\n",
    )
    seen: dict[int, float] = {}  # chronyd's valid RX count -> its response time of tsyncd, s
    counts: list[tuple[int, int]] = []  # (total RX, valid RX) at each new sample

    def locked() -> bool:
        row = chrony.ntpdata()
        if row is None or int(row[NTPDATA_VALID_RX]) in seen:
            return False
        if xleave and row[NTPDATA_INTERLEAVED] != "Yes":
            return False
        seen[int(row[NTPDATA_VALID_RX])] = float(row[NTPDATA_RESPONSE_TIME])
        counts.append((int(row[NTPDATA_TOTAL_RX]), int(row[NTPDATA_VALID_RX])))
        last = [seen[k] for k in sorted(seen)[-RUN:]]
        return len(last) == RUN and max(last) < MAX_RESPONSE_S

    # Locking on takes up to about 20 polls (10 s); before, the response time is whatever the
    # phase of the two timers makes it.
    try:
        wait_for(f"{RUN} samples in a row with a short response time", locked, timeout=45)
    except pytest.fail.Exception:
        pytest.fail(f"chronyd's response times of tsyncd, by valid RX count: {seen}")
    # Locked, every packet of chronyd's is valid: none crosses one of ours in flight.
    (total_0, valid_0), (total_1, valid_1) = counts[-RUN], counts[-1]
    assert total_1 - total_0 == valid_1 - valid_0, (counts, seen)
