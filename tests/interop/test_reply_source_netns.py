"""A wildcard server answers from the address each request was sent to, on every send path,
against real chronyd on another host (QA s18 hunt-server-policy F1; the loopback
test, test_reply_source_chronyd.py, covers plain and interleaved replies at 127.0.0.77).

A private network (tests/netns.py): tsyncd runs in the near namespace, whose ``v0`` gets second
addresses (``fd00:5905::1N``, ``192.0.2.1N``) besides its own (``fd00:5905::1``,
``192.0.2.1``); the clients run in the far one (``fd00:5905::9``, ``192.0.2.9`` on ``v1``),
another host on the link.  The kernel would answer them from ``v0``'s first addresses: the
IPv4 ones are secondary, the IPv6 ones deprecated (``preferred_lft 0``: never a source the
kernel picks), so a reply from a second address is one tsyncd sent from it on purpose.
chronyd's client sockets are connected to the server's address and its peers' packets are
checked against it, so chronyd hears only replies from the address it asked (reach stays 0
otherwise); ``reply_burst.py`` reports the source of each reply it gets.

Each path: basic and interleaved replies, a lone NTS request (the late-Transmit seal,
``sealtx.LateTransmit``, stamped now and then and sent plainly otherwise), interleaved NTS, NTS
and plain requests in a batch, KoD RATE replies, NTS NAKs, symmetric passive replies to
chronyd's ``peer`` (basic and interleaved); on a dual-stack ``[::]`` (IPv6 and IPv4 clients),
``0.0.0.0`` and an IPv6-only ``[::]``; with the default workers and with ``workers = 0``.

chronyd runs with ``-x``; tsyncd in measure mode; nothing leaves the namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netns import NetnsPeers
from nts_certs import make_pki
from peers import (
    NTPDATA_AUTHENTICATED,
    NTPDATA_INTERLEAVED,
    Chronyd,
    free_tcp_port,
    free_udp_port,
    require,
    wait_for,
)

FAR6, FAR4 = "fd00:5905::9", "192.0.2.9"  # the clients' host
SECOND = 9  # second addresses of the server's host: a6(1..9), b4(1..9)
BURST = Path(__file__).parent.parent / "reply_burst.py"


def a6(n: int) -> str:
    """The server host's n-th second IPv6 address."""
    return f"fd00:5905::1{n}"


def b4(n: int) -> str:
    """The server host's n-th second IPv4 address."""
    return f"192.0.2.1{n}"


def _ip_batch(enter: tuple[str, ...], commands: list[str]) -> None:
    done = subprocess.run(
        [*enter, require("ip"), "-batch", "-"],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _second_addresses(net: NetnsPeers) -> NetnsPeers:
    """Give the near host its second addresses and the far one its own; the far peers."""
    assert net.far is not None
    _ip_batch(
        net.enter,
        [f"addr add {a6(n)}/64 dev v0 nodad preferred_lft 0" for n in range(1, SECOND + 1)]
        + [f"addr add {b4(n)}/24 dev v0" for n in range(1, SECOND + 1)],
    )
    _ip_batch(net.far.enter, [f"addr add {FAR6}/64 dev v1 nodad", f"addr add {FAR4}/24 dev v1"])
    return net.far


def _tsyncd_toml(ports: dict[str, int], workers: str, pki_dir: Path) -> str:
    """Five wildcard servers (dual stack, IPv4, IPv6-only, a rate-limiting one with KoD, one
    answering peers) and an NTS-KE server for each of the first three."""
    pki = make_pki(pki_dir, addresses=(*(a6(n) for n in range(1, 10)), b4(3)))
    servers = "".join(
        f'[[server]]\nlisten = "{listen}:{ports[name]}"\n{workers}{extra}'
        for name, listen, extra in (
            ("dual", "[::]", ""),
            ("v4", "0.0.0.0", ""),
            ("v6only", "[::]", "ipv6-only = true\n"),
            ("kod", "[::]", "rate-limit = { interval = -1, burst = 1, leak = 0 }\nkod = true\n"),
            ("passive", "[::]", "symmetric-passive = true\n"),
        )
    )
    # NTS-KE where each server takes clients (an IPv6-only [::] takes no IPv4 ones).
    ke = "".join(
        f'[[nts-ke-server]]\nlisten = "{listen}:{ports["ke-" + name]}"\n'
        f'ntp-port = {ports[name]}\ncertificate-chain-path = "{pki.chain}"\n'
        f'private-key-path = "{pki.key}"\n'
        for name, listen in (("dual", "[::]"), ("v4", "0.0.0.0"), ("v6only", f"[{a6(6)}]"))
    )
    keys = f'[keyset]\nkey-storage-path = "{pki_dir / "keys.json"}"\n'
    return f"[synchronization]\nlocal-stratum = 8\n{servers}{ke}{keys}"


def _chronyd_conf(ports: dict[str, int], ca: Path) -> str:
    """chronyd's sources: (address, line) for each; what each covers is in its comment."""
    fast = "minpoll -2 maxpoll -2 iburst"

    def nts(name: str) -> str:
        return f"port {ports[name]} nts ntsport {ports['ke-' + name]}"

    lines = [
        f"server {a6(1)} port {ports['dual']} {fast}",  # basic, IPv6 on [::]
        f"server {a6(2)} port {ports['dual']} {fast} xleave",  # interleaved, IPv6 on [::]
        f"server {b4(1)} port {ports['dual']} {fast} xleave",  # IPv4 on a dual-stack [::]
        f"server {a6(3)} {nts('dual')} {fast}",  # lone NTS (the late-Transmit seal)
        f"server {a6(4)} {nts('dual')} {fast} xleave",  # interleaved NTS
        f"server {b4(2)} port {ports['v4']} {fast} xleave",  # 0.0.0.0
        f"server {b4(3)} {nts('v4')} {fast} xleave",  # NTS on 0.0.0.0
        f"server {a6(5)} port {ports['v6only']} {fast} xleave",  # IPv6-only [::]
        f"server {a6(6)} {nts('v6only')} {fast}",  # NTS on an IPv6-only [::]
        f"server {a6(7)} port {ports['kod']} {fast}",  # KoD RATE, IPv6
        f"server {b4(4)} port {ports['kod']} {fast}",  # KoD RATE, IPv4
        f"peer {a6(8)} port {ports['passive']} minpoll -2 maxpoll -2 xleave",  # passive
        f"peer {b4(5)} port {ports['passive']} minpoll -2 maxpoll -2",
    ]
    return "\n".join(lines) + f"\nport {free_udp_port()}\nntstrustedcerts {ca}\n"


def _reached(chrony: Chronyd) -> dict[str, list[str]]:
    """chronyd's ``sources`` rows by address, of those that heard three replies in a row."""
    return {r[2]: r for r in chrony.sources() if int(r[5], 8) & 0o7 == 0o7}


@pytest.mark.parametrize("workers", ["", "workers = 0\n"], ids=["default-workers", "workers-0"])
def test_every_reply_leaves_from_the_address_asked(netns_peers: NetnsPeers, workers: str) -> None:
    far = _second_addresses(netns_peers)
    names = ("dual", "v4", "v6only", "kod", "passive")
    ports = {name: free_udp_port() for name in names}
    ports.update({f"ke-{name}": free_tcp_port() for name in names[:3]})
    pki_dir = netns_peers.tmp / "pki"
    server = netns_peers.tsyncd("tsyncd-server", _tsyncd_toml(ports, workers, pki_dir))
    chrony = far.chronyd("chronyd-far", _chronyd_conf(ports, pki_dir / "ca.pem"))

    # Plain and NTS requests sent at once from one socket: a worker takes them as one batch
    # (recvmmsg) and answers with one sendmmsg; a KoD server's excess gets KoDs or nothing.
    bursts = [
        (a6(1), "dual", "plain"),
        (b4(1), "dual", "nts"),
        (a6(3), "dual", "nts"),
        (b4(2), "v4", "nts"),
        (a6(5), "v6only", "nts"),
        (a6(7), "kod", "plain"),
        (a6(3), "dual", "nak"),
        (b4(2), "v4", "nak"),
    ]
    done = subprocess.run(
        [*far.enter, sys.executable, str(BURST), str(pki_dir / "keys.json")]
        + [f"{address},{ports[name]},{kind},6" for address, name, kind in bursts],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for (address, name, kind), replies in zip(bursts, json.loads(done.stdout), strict=True):
        assert replies, (address, name, kind)
        assert {source for source, _stratum, _length in replies} == {address}, replies
        if kind == "nts":
            assert all(stratum == 8 and length > 48 for _s, stratum, length in replies), replies
        elif kind == "nak":
            assert [stratum for _s, stratum, _length in replies] == [0] * 6, replies
        elif name != "kod":
            assert len(replies) == 6, replies

    clients = [a6(n) for n in (1, 2, 3, 4, 5, 6)] + [b4(n) for n in (1, 2, 3)]
    peers_ = [a6(8), b4(5)]
    try:
        wait_for(
            "chronyd to reach every server address (3 replies in a row)",
            lambda: set(clients + peers_) <= set(_reached(chrony)),
            timeout=30,
        )
    except pytest.fail.Exception:
        pytest.fail(
            f"chronyd never reached {sorted(set(clients + peers_) - set(_reached(chrony)))}"
        )
    for address in (a6(7), b4(4)):
        wait_for(
            f"chronyd to take a KoD RATE from {address}",
            lambda a=address: f"Received KoD RATE from {a}" in chrony.proc.output(),
        )
    rows = _reached(chrony)
    assert all(rows[a][0] == "^" and rows[a][3] == "8" for a in clients), rows
    assert all(rows[a][0] == "=" for a in peers_), rows
    for address, interleaved, authenticated in (
        (a6(2), "Yes", "No"),
        (b4(1), "Yes", "No"),
        (a6(3), None, "Yes"),
        (a6(4), "Yes", "Yes"),
        (b4(3), "Yes", "Yes"),
        (a6(5), "Yes", "No"),
        (a6(6), None, "Yes"),
        (a6(8), "Yes", "No"),
    ):
        row = wait_for(
            f"chronyd's ntpdata for {address}",
            lambda a=address, i=interleaved: (
                (r := chrony.ntpdata(a)) and (i is None or r[NTPDATA_INTERLEAVED] == i) and r
            ),
        )
        assert row[NTPDATA_AUTHENTICATED] == authenticated, (address, row)
    stats = server.ctl("serverstats")
    assert stats["nts_naks"] == 12 and stats["interleaved_answered"] > 0
    assert (stats["workers"] >= 4) is not bool(workers)  # 1+ for each server but the passive one
