"""Servers and pools given by name follow DNS (chronyd's replacement and ``chronyc refresh``):
names from a real DNS server (dnsmasq on a loopback port, hosts file re-read on SIGHUP), NTP
from real chronyd servers on 127.0.0.N."""

from __future__ import annotations

import signal
import time
from typing import Any

from nts_certs import make_pki, nts_source_toml
from peers import (
    Peers,
    Process,
    Tsyncd,
    ctl_fails,
    fast_sources_toml,
    free_tcp_port,
    free_udp_port,
    wait_for,
)


def named_client(peers: Peers, dns_port: int, name: str, mode: str = "server") -> Tsyncd:
    """tsyncd resolving through the test's dnsmasq, with one source ``name``."""
    resolver = f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
    extra = "count = 2\n" if mode == "pool" else ""
    return peers.tsyncd("tsyncd-client", resolver + fast_sources_toml(name, mode=mode, extra=extra))


def point(peers: Peers, dns: Process, hosts: str) -> None:
    """Change what the name resolves to, as a zone update would."""
    (peers.tmp / "pool.hosts").write_text(hosts)
    dns.popen.send_signal(signal.SIGHUP)


def row(client: Tsyncd, name: str) -> dict[str, Any] | None:
    rows = [r for r in client.ctl("peers") if r["name"] == name]
    return rows[0] if rows else None


def reached_at(client: Tsyncd, name: str, ip: str) -> dict[str, Any] | None:
    """The source's row once it polls ``ip`` and has had an answer there."""
    r = row(client, name)
    return r if r and r["address"].startswith(f"{ip}:") and r["reach"] else None


def test_an_unreachable_server_moves_to_the_new_address_of_its_name(peers: Peers) -> None:
    # Nothing serves .4; the name moves to .3 while tsyncd polls .4.
    ntp_port, dns_port, dns = peers.pool_peers("127.0.0.4 ntp.test\n", (3,))
    name = f"ntp.test:{ntp_port}"
    client = named_client(peers, dns_port, name)
    # Unreachable, but DNS still gives only .4: resolved again, and it stays.
    wait_for("a lookup for the dead server", lambda: "127.0.0.4 is bad" in client.proc.output())
    wait_for("the answer", lambda: dns.output().count("query[AAAA] ntp.test") == 2)
    assert (r := row(client, name)) is not None and r["address"] == f"127.0.0.4:{ntp_port}"
    point(peers, dns, "127.0.0.3 ntp.test\n")
    moved = wait_for(
        "the source moved to 127.0.0.3 and reached",
        lambda: reached_at(client, name, "127.0.0.3"),
        timeout=30,
    )
    assert moved["name"] == name and moved["stratum"] == 7  # chronyd on .3: local stratum 7
    assert "moving from 127.0.0.4 to 127.0.0.3, which ntp.test now resolves to" in (
        client.proc.output()
    )


def test_refresh_moves_a_good_server_only_when_its_name_moved(peers: Peers) -> None:
    ntp_port, dns_port, dns = peers.pool_peers("127.0.0.2 ntp.test\n", (2, 3))
    name = f"ntp.test:{ntp_port}"
    client = named_client(peers, dns_port, name)
    wait_for("the server reached", lambda: reached_at(client, name, "127.0.0.2"))

    # DNS unchanged: refresh asks again and stays with a good server.
    assert client.ctl("refresh") == {"sources": [name]}
    wait_for("the lookup", lambda: "ntp.test still resolves to 127.0.0.2" in client.proc.output())
    assert dns.output().count("query[A] ntp.test") == 2
    point(peers, dns, "127.0.0.3 ntp.test\n127.0.0.2 ntp.test.old\n")
    assert reached_at(client, name, "127.0.0.2")
    # The name moved: a good server is left for the name's new address, on refresh only.
    assert client.ctl("refresh") == {"sources": [name]}
    wait_for("the source moved to 127.0.0.3", lambda: reached_at(client, name, "127.0.0.3"))


def test_refresh_replaces_pool_members_no_longer_in_dns(peers: Peers) -> None:
    ntp_port, dns_port, dns = peers.pool_peers(
        "127.0.0.2 pool.test\n127.0.0.3 pool.test\n", (2, 3, 5)
    )
    client = named_client(peers, dns_port, f"pool.test:{ntp_port}", "pool")

    def addresses() -> set[str]:
        return {r["address"] for r in client.ctl("peers")}

    two, three, five = (f"127.0.0.{i}:{ntp_port}" for i in (2, 3, 5))
    wait_for("both pool members mobilized", lambda: addresses() == {two, three})
    point(peers, dns, "127.0.0.2 pool.test\n127.0.0.5 pool.test\n")
    assert client.ctl("refresh") == {"sources": [f"pool.test:{ntp_port}"]}
    wait_for("127.0.0.3 replaced by 127.0.0.5", lambda: addresses() == {two, five})
    assert "replacing 127.0.0.3: no longer in DNS" in client.proc.output()


def test_a_server_by_name_never_polls_an_address_another_source_polls(peers: Peers) -> None:
    """As chronyd's: a name's addresses another source polls are skipped; with none left the
    source waits, says why in peers, and asks DNS again later; ``tsyncctl add`` of an address
    it polls is refused."""
    hosts = "127.0.0.2 srv.test\n127.0.0.3 srv.test\n127.0.0.3 alias.test\n127.0.0.2 alias.test\n"
    ntp_port, dns_port, _dns = peers.pool_peers(hosts, (2, 3))
    two, three = f"127.0.0.2:{ntp_port}", f"127.0.0.3:{ntp_port}"
    name = f"srv.test:{ntp_port}"
    # The IP's source polls at once; the name's when DNS has answered.
    resolver = f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
    client = peers.tsyncd("tsyncd-client", resolver + fast_sources_toml(two, name))
    # srv.test's first address is the configured source's: it takes the second.
    wait_for("srv.test reached at 127.0.0.3", lambda: reached_at(client, name, "127.0.0.3"))
    error = ctl_fails(client, "add", three)
    assert f'source.address = "{three}": expected an address no other source uses' in error
    assert f"(same as source {name}, which polls it as an address of srv.test)" in error

    # A name for the same servers: every address is in use; it polls nothing and waits.
    alias = f"alias.test:{ntp_port}"
    assert client.ctl("add", alias, "--name", "again", "--min-poll", "-3") == {"name": "again"}
    why = (
        f"every address of alias.test is polled by another source ({two} by {two}, {three} by "
        f"{name}); resolving it again later"
    )
    waiting = wait_for("the second source waiting", lambda: row(client, "again"))
    assert waiting["address"] == "" and waiting["state_reason"] == why
    time.sleep(4)  # lookups again after 1 and 2 s: still in use, and not said again
    assert client.proc.output().count(why) == 1
    addresses = [r["address"] for r in client.ctl("peers") if r["address"]]
    assert sorted(addresses) == [two, three]
    assert client.ctl("activity")["unknown_address"] == 1

    # The configured source goes: the waiting one takes its address at the next lookup.
    client.ctl("delete", two)
    assert "again" in client.ctl("refresh")["sources"]
    wait_for("the second source at 127.0.0.2", lambda: reached_at(client, "again", "127.0.0.2"))
    assert "again: 127.0.0.2, an address of alias.test, is free now; polling it" in (
        client.proc.output()
    )
    assert sorted(r["address"] for r in client.ctl("peers")) == [two, three]


def test_sources_waiting_for_dns_go_offline_and_online_by_their_names(peers: Peers) -> None:
    """A server and a pool whose names do not resolve yet are selected by their configured
    names, and start as the last offline/online left them once their names resolve."""
    ntp_port, dns_port, dns = peers.pool_peers("127.0.0.9 other.test\n", (2, 3))
    resolver = f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
    pool = fast_sources_toml(f"dp.test:{ntp_port}", mode="pool", extra='name = "dp"\ncount = 1\n')
    client = peers.tsyncd("tsyncd-client", resolver + pool)
    ns = ("add", f"ns.test:{ntp_port}", "--name", "ns", "--min-poll", "-3", "--max-poll", "-3")
    assert client.ctl(*ns) == {"name": "ns"}
    wait_for("ns looked up", lambda: "cannot resolve ns.test for ns" in client.proc.output())
    assert client.ctl("activity")["unknown_address"] == 2
    assert client.ctl("offline", "ns") == {"changed": ["ns"], "selected": ["ns"]}
    assert client.ctl("offline", "dp", "ns") == {"changed": ["dp"], "selected": ["dp", "ns"]}
    assert client.ctl("online", "dp") == {"changed": ["dp"], "selected": ["dp"]}
    assert client.ctl("offline", "dp")["changed"] == ["dp"]
    # No address, so no route: onoffline leaves it offline.
    assert client.ctl("onoffline", "ns") == {"online": [], "offline": ["ns"]}

    point(peers, dns, "127.0.0.2 ns.test\n127.0.0.3 dp.test\n")
    assert client.ctl("refresh") == {"sources": ["dp", "ns"]}  # resolved at once

    def both_offline() -> list[dict[str, Any]] | None:
        rows = client.ctl("peers")
        return rows if len(rows) == 2 and not any(r["online"] for r in rows) else None

    rows = wait_for("both resolved, offline", both_offline)
    assert sorted(r["address"] for r in rows) == [f"127.0.0.{i}:{ntp_port}" for i in (2, 3)]
    time.sleep(1)  # 8 polls' time: nothing sent
    assert all(r["packets_sent"] == 0 for r in client.ctl("peers"))
    assert client.ctl("online", "ns", "dp")["changed"] == ["ns", f"127.0.0.3:{ntp_port}"]
    wait_for("ns reached", lambda: reached_at(client, "ns", "127.0.0.2"))
    member = f"127.0.0.3:{ntp_port}"
    wait_for("the pool's member reached", lambda: reached_at(client, member, "127.0.0.3"))


def test_refresh_rekeys_an_nts_source_only_when_its_ke_name_moved(peers: Peers) -> None:
    """QA s18 hunt-nts-client #7: ``tsyncctl refresh`` skipped NTS sources, and ``refresh
    NAME`` refused their NTS-KE name.  chronyd NTS servers on 127.0.0.2 and .3 with one
    certificate for nts.test: while the name gives the address the keys came from, refresh
    keeps them; once it gives only the other, refresh runs NTS-KE there at once (the NTS-KE
    name resolved through the same [resolver] as the refresh) and the source moves."""
    pki = make_pki(peers.tmp, ("nts.test",))
    ntp_port, ke_port, dns_port = free_udp_port(), free_tcp_port(), free_udp_port()
    hosts = peers.tmp / "pool.hosts"
    hosts.write_text("127.0.0.2 nts.test\n")
    dns = peers.dnsmasq("dnsmasq", dns_port, hosts)
    chronyds = {
        i: peers.chronyd(
            f"chronyd-nts-{i}",
            f"port {ntp_port}\nntsport {ke_port}\nbindaddress 127.0.0.{i}\nlocal stratum {i + 4}\n"
            f"allow 127.0.0.1\nntsserverkey {pki.key}\nntsservercert {pki.chain}\n",
        )
        for i in (2, 3)
    }
    name = f"nts.test:{ke_port}"
    resolver = f'[resolver]\nservers = ["127.0.0.1:{dns_port}"]\n'
    client = peers.tsyncd("tsyncd-client", resolver + nts_source_toml(pki, name, (-3, -3)))

    def authenticated_at(ip: str, key_exchanges: int) -> dict[str, Any] | None:
        r = row(client, name)
        ok = r and r["address"] == f"{ip}:{ntp_port}" and r["nts"]["authenticated"] >= 1
        return r if ok and r["nts"]["key_exchanges"] == key_exchanges else None

    wait_for("NTS with 127.0.0.2", lambda: authenticated_at("127.0.0.2", 1), timeout=30)

    def ke_connections(i: int) -> int:
        return int(chronyds[i].chronyc("serverstats").strip().split(",")[5])

    # Unchanged: refresh resolves nts.test again and keeps the keys.
    assert client.ctl("refresh") == {"sources": [name]}
    kept = f"{name}: nts.test still resolves to 127.0.0.2, its NTS-KE server; keeping its keys"
    wait_for("the lookup", lambda: kept in client.proc.output())
    assert (ke_connections(2), ke_connections(3)) == (1, 0)

    reread = dns.output().count("read ")
    point(peers, dns, "127.0.0.3 nts.test\n")
    wait_for("dnsmasq to re-read its hosts", lambda: dns.output().count("read ") > reread)
    # The host alone picks it (as does its address as configured, nts.test:PORT).
    done = client.run_ctl("refresh", "nts.test")
    assert done.returncode == 0 and done.stdout == f"resolving again: {name}\n", done.stderr
    # The counters carry on across the move: wait for the first answer from .3 itself (the
    # stratum of its chronyd), not just for the address and the key exchange.
    wait_for(
        "NTS with 127.0.0.3",
        lambda: (r := authenticated_at("127.0.0.3", 2)) is not None and r["stratum"] == 7,
        timeout=30,
    )
    assert (ke_connections(2), ke_connections(3)) == (1, 1)
    log = client.proc.output()
    assert (
        f"{name}: nts.test no longer resolves to 127.0.0.2, where its keys came from (now "
        "127.0.0.3); NTS-KE again now, the old keys serve until it works"
    ) in log
    assert f"{name}: NTS-KE now names 127.0.0.3:{ntp_port} for NTP; moving there" in log
    assert "no source given by name matches 127.0.0.9" in ctl_fails(client, "refresh", "127.0.0.9")
