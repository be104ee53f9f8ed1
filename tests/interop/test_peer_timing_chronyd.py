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

from collections.abc import Callable

import pytest
from peers import (
    NTPDATA_INTERLEAVED,
    NTPDATA_RESPONSE_TIME,
    NTPDATA_TOTAL_RX,
    NTPDATA_VALID_RX,
    Chronyd,
    Peers,
    free_udp_port,
    wait_for,
)

RUN = 8  # chronyd's samples of tsyncd in a row that must all have a short response time
MAX_RESPONSE_S = 0.005  # 1 % of the poll interval (0.5 s); locked, tsyncd answers in ~0.5 ms


def start_pair(peers: Peers, max_poll: int, *, xleave: bool) -> Chronyd:
    """tsyncd at local stratum 8 and a chronyd peer of it with no other source (so it is above
    tsyncd's stratum), both polling within -1 .. ``max_poll``; chronyd's handle."""
    our_port, chrony_port = free_udp_port(), free_udp_port()
    option = " xleave" if xleave else ""
    chrony = peers.chronyd(
        "chronyd-peer",
        f"port {chrony_port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\n"
        f"peer 127.0.0.1 port {our_port} minpoll -1 maxpoll {max_poll}{option}\n",
    )
    peers.tsyncd(
        "tsyncd-peer",
        "[synchronization]\nlocal-stratum = 8\nmin-sources = 2\n"
        f'[[server]]\nlisten = "127.0.0.1:{our_port}"\n'
        f'[[source]]\nmode = "peer"\naddress = "127.0.0.1:{chrony_port}"\n'
        f"local-port = {our_port}\nmin-poll = -1\nmax-poll = {max_poll}\n"
        f"xleave = {'true' if xleave else 'false'}\n",
    )
    return chrony


def wait_locked(locked: Callable[[], bool], seen: dict[int, float], timeout: float) -> None:
    """Wait for ``locked``; a failure shows chronyd's response times ``seen`` so far."""
    try:
        wait_for(f"{RUN} samples in a row with a short response time", locked, timeout=timeout)
    except pytest.fail.Exception:
        pytest.fail(f"chronyd's response times of tsyncd, by valid RX count: {seen}")


@pytest.mark.parametrize("xleave", [False, True], ids=["basic", "xleave"])
def test_lower_stratum_peer_answers_chronyd_at_once(peers: Peers, xleave: bool) -> None:
    chrony = start_pair(peers, -1, xleave=xleave)
    seen: dict[int, float] = {}  # chronyd's valid RX count -> its response time of tsyncd, s
    counts: list[tuple[int, int]] = []  # (total RX, valid RX) at each new sample

    def locked() -> bool:
        row = chrony.ntpdata()
        # Valid RX 0: chronyd has not measured us yet (its start-up packets cross ours).
        if row is None or int(row[NTPDATA_VALID_RX]) in seen or row[NTPDATA_VALID_RX] == "0":
            return False
        if xleave and row[NTPDATA_INTERLEAVED] != "Yes":
            return False
        seen[int(row[NTPDATA_VALID_RX])] = float(row[NTPDATA_RESPONSE_TIME])
        counts.append((int(row[NTPDATA_TOTAL_RX]), int(row[NTPDATA_VALID_RX])))
        last = [seen[k] for k in sorted(seen)[-RUN:]]
        return len(last) == RUN and max(last) < MAX_RESPONSE_S

    # Locking on takes one or two exchanges after chronyd's first valid packet (chronyd in
    # tsyncd's place: about 20 polls); before, the response time is whatever the phase of
    # the two timers makes it.
    wait_locked(locked, seen, timeout=45)
    # Locked, every packet of chronyd's is valid: none crosses one of ours in flight.
    (total_0, valid_0), (total_1, valid_1) = counts[-RUN], counts[-1]
    assert total_1 - total_0 == valid_1 - valid_0, (counts, seen)


def test_lower_stratum_peer_keeps_answering_chronyd_when_polls_change(peers: Peers) -> None:
    """Both sides may poll at -1 or 0 (QA s19 hunt-new #1: chronyd's poll wandered between
    them and tsyncd lost its lock for 15-20 s, chronyd's response times of it up to a whole
    interval).  chronyd's poll is forced from 0.5 s to 1 s and back (chronyc minpoll/maxpoll)
    once tsyncd has locked on; every sample chronyd takes after each change stays short."""
    chrony = start_pair(peers, 0, xleave=False)
    seen: dict[int, float] = {}  # chronyd's valid RX count -> its response time of tsyncd, s

    def sample() -> None:
        row = chrony.ntpdata()
        if row is not None and int(row[NTPDATA_VALID_RX]) > 0:
            seen.setdefault(int(row[NTPDATA_VALID_RX]), float(row[NTPDATA_RESPONSE_TIME]))

    def short_run(after: int, poll: str) -> bool:
        """RUN samples after valid RX ``after``, all short, the last ones at chronyd's
        ``poll``; False until there are RUN (fails at once on a long one)."""
        sample()
        later = [seen[k] for k in sorted(seen) if k > after]
        if later and max(later) >= MAX_RESPONSE_S:
            pytest.fail(f"chronyd's response times of tsyncd, by valid RX count: {seen}")
        rows = [r for r in chrony.sources() if len(r) > 4 and r[2] == "127.0.0.1"]
        return len(later) >= RUN and bool(rows) and rows[0][4] == poll

    def locked() -> bool:
        sample()
        last = [seen[k] for k in sorted(seen)[-RUN:]]
        return len(last) == RUN and max(last) < MAX_RESPONSE_S

    wait_locked(locked, seen, timeout=20)
    for command, poll in ((("minpoll", "0"), "0"), (("maxpoll", "-1"), "-1")):
        if command[0] == "maxpoll":
            chrony.chronyc("minpoll", "127.0.0.1", "-1")
        chrony.chronyc(command[0], "127.0.0.1", command[1])
        after = max(seen)
        wait_for(
            f"{RUN} short samples at chronyd poll {poll}",
            lambda after=after, poll=poll: short_run(after, poll),
            timeout=15,
        )
