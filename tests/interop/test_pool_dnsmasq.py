"""``mode = "pool"``: addresses from a real DNS server (dnsmasq on a loopback port), NTP from
real chronyd servers on 127.0.0.2 and 127.0.0.3; a dead address is replaced by a new one."""

from __future__ import annotations

import signal
import textwrap
import time

from nts_certs import make_pki, nts_source_toml
from peers import Peers, chronyd_nts_server, free_udp_port, wait_for


def test_pool_resolves_through_dnsmasq_and_replaces_a_dead_member(peers: Peers) -> None:
    # Nothing serves .4.
    ntp_port, dns_port, dns = peers.pool_peers("127.0.0.2 pool.test\n127.0.0.4 pool.test\n", (2, 3))
    hosts = peers.tmp / "pool.hosts"
    client = peers.tsyncd(
        "tsyncd-client",
        textwrap.dedent(
            f"""
            [resolver]
            servers = ["127.0.0.1:{dns_port}"]
            [[source]]
            mode = "pool"
            address = "pool.test:{ntp_port}"
            count = 2
            iburst = true
            min-poll = -3
            max-poll = -3
            """
        ),
    )

    def addresses() -> set[str]:
        return {r["address"] for r in client.ctl("peers")}

    dead, new = f"127.0.0.4:{ntp_port}", f"127.0.0.3:{ntp_port}"
    wait_for(
        "both pool addresses mobilized", lambda: {f"127.0.0.2:{ntp_port}", dead} <= addresses()
    )
    assert "query[A] pool.test" in dns.output()
    # The pool name now also has a live address; the dead one must make way for it.
    hosts.write_text("127.0.0.2 pool.test\n127.0.0.3 pool.test\n127.0.0.4 pool.test\n")
    dns.popen.send_signal(signal.SIGHUP)

    def replaced() -> list[dict[str, object]] | None:
        rows = client.ctl("peers")
        live = {r["address"]: r for r in rows}
        if dead in live or new not in live or not live[new]["reach"]:
            return None
        return rows

    rows = wait_for("the dead member replaced by 127.0.0.3", replaced, timeout=30)
    assert len(rows) == 2 and all(r["mode"] == "pool" for r in rows)
    assert {r["stratum"] for r in rows if r["stratum"] is not None} <= {6, 7}
    assert "replacing 127.0.0.4" in client.proc.output()
    status = wait_for("synchronized to the pool", lambda: client.ctl("status")["synchronized"])
    assert status is True


def test_a_pool_never_polls_an_address_another_source_polls(peers: Peers) -> None:
    """A server, and a pool whose name also resolves to that server's address: the address is
    polled once, by the server (whichever of the two resolved first), never by the pool too."""
    hosts = "127.0.0.2 srv.test\n127.0.0.2 pool.test\n127.0.0.3 pool.test\n"
    ntp_port, dns_port, _dns = peers.pool_peers(hosts, (2, 3))
    poll = "iburst = true\nmin-poll = -3\nmax-poll = -3\n"
    client = peers.tsyncd(
        "tsyncd-client",
        f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
        f'[[source]]\nmode = "pool"\naddress = "pool.test:{ntp_port}"\ncount = 2\n{poll}'
        f'[[source]]\nmode = "server"\naddress = "srv.test:{ntp_port}"\n{poll}',
    )
    # The pool has only one address of its own to take: it says so once it has tried both.
    wait_for(
        "the pool short of addresses",
        lambda: (
            "pool.test:" in client.proc.output()
            and "1 of 2 addresses usable" in client.proc.output()
        ),
    )

    def all_reached() -> list[dict[str, object]] | None:
        rows = client.ctl("peers")
        return rows if all(r["reach"] for r in rows) else None

    rows = wait_for("both addresses polled", all_reached)
    modes = sorted((str(r["address"]), r["mode"]) for r in rows)
    assert modes == [(f"127.0.0.2:{ntp_port}", "server"), (f"127.0.0.3:{ntp_port}", "pool")]


def test_a_pool_whose_every_address_is_polled_says_so_not_resolving(peers: Peers) -> None:
    """The pool resolved, but its one address is a server's: its row says why it polls
    nothing, as a server by name's does, not "resolving" as if DNS had not answered (QA s19)."""
    hosts = "127.0.0.2 srv.test\n127.0.0.2 pool.test\n"
    ntp_port, dns_port, _dns = peers.pool_peers(hosts, (2,))
    poll = "iburst = true\nmin-poll = -3\nmax-poll = -3\n"
    client = peers.tsyncd(
        "tsyncd-client",
        f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
        f'[[source]]\nmode = "server"\naddress = "srv.test:{ntp_port}"\n{poll}'
        f'[[source]]\nmode = "pool"\nname = "p"\naddress = "pool.test:{ntp_port}"\ncount = 2\n'
        f"{poll}",
    )

    def pool_row() -> dict[str, object] | None:
        rows = [r for r in client.ctl("peers") if r["name"] == "p"]
        return rows[0] if rows and "polls it already" in str(rows[0]["state_reason"]) else None

    row = wait_for("the pool's row to say why it polls nothing", pool_row, timeout=30)
    note = str(row["state_reason"])
    assert "resolving" not in note and "0 of 2 addresses usable" in note, note
    assert f"127.0.0.2 not used: srv.test:{ntp_port} polls it already" in note, note


def test_a_pool_short_of_addresses_asks_dns_less_and_less_often(peers: Peers) -> None:
    """DNS gives one address for a pool of two: each lookup that leaves it short doubles the
    wait before the next (from 8 min-polls: 1 s here), the shortfall is said once at INFO,
    and ``tsyncctl refresh`` asks at once and starts again from the interval."""
    ntp_port, dns_port, dns = peers.pool_peers("127.0.0.2 pool.test\n", (2,))
    client = peers.tsyncd(
        "tsyncd-client",
        f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
        f'[[source]]\nmode = "pool"\naddress = "pool.test:{ntp_port}"\ncount = 2\n'
        "min-poll = -3\nmax-poll = -3\n",
    )

    def lookups() -> int:
        return dns.output().count("query[A] pool.test")

    wait_for("a pool short", lambda: "1 of 2 addresses usable" in client.proc.output())
    time.sleep(8.5)
    # Lookups at about 0, 1, 3 and 7 s; every second (9 or more) without the back-off.
    assert 3 <= lookups() <= 5, dns.output()
    shortfalls = [line for line in client.proc.output().splitlines() if "addresses usable" in line]
    assert len(shortfalls) == 1 and " INFO " in shortfalls[0], shortfalls
    assert "asking DNS again in 1 s" in shortfalls[0]

    before = lookups()
    assert client.ctl("refresh") == {"sources": [f"pool.test:{ntp_port}"]}
    # At once, then 1 s and 2 s later: the back-off starts again from the interval (without
    # the reset the next lookup would come 16 s or more after the refresh).
    wait_for("three lookups after the refresh", lambda: lookups() >= before + 3, timeout=6)


def test_a_member_refresh_drops_as_no_longer_in_dns_comes_back_with_dns(peers: Peers) -> None:
    """QA s19 hunt-client F2: ``tsyncctl refresh`` replaces a member the name no longer gives,
    but that member was not bad: once DNS gives it again, the next refresh takes it back (it
    used to be held out for an hour, as a bad member is, leaving the pool short)."""
    both = "127.0.0.2 pool.test\n127.0.0.3 pool.test\n"
    ntp_port, dns_port, dns = peers.pool_peers(both, (2, 3))
    hosts = peers.tmp / "pool.hosts"
    client = peers.tsyncd(
        "tsyncd-client",
        f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
        f'[[source]]\nmode = "pool"\naddress = "pool.test:{ntp_port}"\ncount = 2\n'
        "iburst = true\nmin-poll = -2\nmax-poll = -2\n",
    )
    second = f"127.0.0.3:{ntp_port}"

    def reached() -> set[str]:
        return {r["address"] for r in client.ctl("peers") if r["reach"]}

    wait_for("both members reached", lambda: {f"127.0.0.2:{ntp_port}", second} <= reached())

    def dns_gives(text: str) -> None:
        reads = dns.output().count(f"read {hosts}")
        hosts.write_text(text)
        dns.popen.send_signal(signal.SIGHUP)
        wait_for("dnsmasq to re-read", lambda: dns.output().count(f"read {hosts}") > reads)

    dns_gives("127.0.0.2 pool.test\n")
    client.ctl("refresh")
    wait_for("the member DNS no longer gives dropped", lambda: second not in reached())
    assert "replacing 127.0.0.3: no longer in DNS" in client.proc.output()
    dns_gives(both)
    client.ctl("refresh")
    wait_for("the member back once DNS gives it", lambda: second in reached(), timeout=10)


def test_pool_log_lines_say_why_a_member_goes_and_write_mapped_addresses_dotted(
    peers: Peers,
) -> None:
    """QA s19 hunt-client F8: a member answering every request unsynchronized (a tsyncd server
    with no source) was logged as "8 requests unanswered"; an IPv4-mapped AAAA record of a
    member in use as "::ffff:7f00:2 not used (in use or no socket)"."""
    hosts = "127.0.0.2 pool.test\n127.0.0.5 pool.test\n::ffff:127.0.0.2 pool.test\n"
    ntp_port, dns_port, _dns = peers.pool_peers(hosts, (2,))
    peers.tsyncd("unsynchronized", f'[[server]]\nlisten = "127.0.0.5:{ntp_port}"\nworkers = 0\n')
    client = peers.tsyncd(
        "tsyncd-client",
        f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
        f'[[source]]\nmode = "pool"\naddress = "pool.test:{ntp_port}"\ncount = 3\n'
        "min-poll = -3\nmax-poll = -3\n",
    )
    wait_for("the member replaced", lambda: "replacing 127.0.0.5" in client.proc.output())
    log = client.proc.output()
    assert (
        "replacing 127.0.0.5: server unsynchronized (it answers with stratum 0 or 16, or a leap"
        " alarm)" in log
    ), log
    assert f"::ffff:127.0.0.2 not used: 127.0.0.2:{ntp_port} polls it already" in log, log


def test_a_member_an_nts_source_takes_over_comes_back_once_it_is_gone(peers: Peers) -> None:
    """QA s21 hunt-nts #4: an NTS source whose NTS-KE (chronyd's) names the pool's member
    takes it over; the address was then held out for an hour as "bad" (after the NTS source
    was deleted and tsyncctl refresh too), and status said "waiting for name resolution".  Now
    it is left out only while the NTS source polls it, saying so, and back at the refresh."""
    pki = make_pki(peers.tmp)
    _chrony, ntp_port, ke_port = chronyd_nts_server(peers, "chronyd-nts", pki.key, pki.chain)
    hosts = peers.tmp / "pool.hosts"
    hosts.write_text("127.0.0.1 pool.test\n")
    dns_port = free_udp_port()
    peers.dnsmasq("dnsmasq", dns_port, hosts)
    member = f"127.0.0.1:{ntp_port}"
    client = peers.tsyncd(
        "tsyncd-client",
        f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
        f'[[source]]\nmode = "pool"\nname = "p"\naddress = "pool.test:{ntp_port}"\ncount = 2\n'
        "iburst = true\nmin-poll = -2\nmax-poll = -2\n"
        # Offline: its NTS-KE waits until the pool polls the address.
        + nts_source_toml(pki, f"127.0.0.1:{ke_port}", (-2, -2))
        + 'name = "chr"\noffline = true\n',
    )

    def polled_by() -> str | None:
        rows = [r for r in client.ctl("peers") if r["address"] == member and r["reach"]]
        return str(rows[0]["mode"]) if rows else None

    wait_for("the pool polling chronyd", lambda: polled_by() == "pool")
    client.ctl("online", "chr")
    wait_for("the NTS source polling it instead", lambda: polled_by() == "nts", timeout=30)

    def pool_row() -> dict[str, object] | None:
        rows = [r for r in client.ctl("peers") if r["name"] == "p"]
        return rows[0] if rows and "polls it already" in str(rows[0]["state_reason"]) else None

    note = str(wait_for("the pool saying why it is short", pool_row, timeout=30)["state_reason"])
    assert "127.0.0.1 not used: chr polls it already" in note and "bad" not in note, note
    log = client.proc.output()
    assert "pool p: 127.0.0.1 is polled by chr now; replacing it" in log, log

    client.ctl("delete", "chr")
    wait_for("chr gone", lambda: polled_by() is None)
    status = client.ctl("status")
    assert "name resolution" not in str(status["unsynchronized_reason"]), status
    assert "not polling yet" in str(status["unsynchronized_reason"]), status
    client.ctl("refresh")
    wait_for("the pool polling it again", lambda: polled_by() == "pool", timeout=10)
    assert "no source selected: no sources configured" not in client.proc.output()
