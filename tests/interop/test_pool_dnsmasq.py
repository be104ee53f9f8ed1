"""``mode = "pool"``: addresses from a real DNS server (dnsmasq on a loopback port), NTP from
real chronyd servers on 127.0.0.2 and 127.0.0.3; a dead address is replaced by a new one."""

from __future__ import annotations

import signal
import textwrap

from peers import Peers, wait_for


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
