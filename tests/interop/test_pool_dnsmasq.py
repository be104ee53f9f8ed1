"""``mode = "pool"``: addresses from a real DNS server (dnsmasq on a loopback port), NTP from
real chronyd servers on 127.0.0.2 and 127.0.0.3; a dead address is replaced by a new one."""

from __future__ import annotations

import signal
import textwrap

from peers import Peers, free_udp_port, wait_for


def test_pool_resolves_through_dnsmasq_and_replaces_a_dead_member(peers: Peers) -> None:
    ntp_port = free_udp_port()
    dns_port = free_udp_port()
    hosts = peers.tmp / "pool.hosts"
    hosts.write_text("127.0.0.2 pool.test\n127.0.0.4 pool.test\n")  # nothing serves .4
    dns = peers.dnsmasq("dnsmasq", dns_port, hosts)
    for i in (2, 3):
        peers.chronyd(
            f"chronyd-{i}",
            f"port {ntp_port}\nbindaddress 127.0.0.{i}\nlocal stratum {i + 4}\nallow 127.0.0.1\n",
        )
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
