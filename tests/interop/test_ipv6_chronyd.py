"""IPv6 on ::1 against real chronyd: tsyncd as client (interleaved, DSCP set) and as server,
the RFC 5905 IPv6 refid hash checked against chronyd's own, and IPV6_V6ONLY; and a link-local
server address with its interface, in a network namespace of the test's own."""

from __future__ import annotations

import ipaddress
import socket
import textwrap
from typing import Any

from netns import LINK_LOCAL, NetnsPeers
from peers import Peers, free_udp_port, wait_for

from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp, refid_for_address

LOOPBACK6_REFID = refid_for_address("::1")  # first 4 octets of MD5(::1), RFC 5905 §7.3


def free_udp6_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port: int = s.getsockname()[1]
        return port


def test_tsyncd_client_over_ipv6_interleaved(peers: Peers) -> None:
    port = free_udp6_port()
    peers.chronyd("chronyd-server6", f"port {port}\nbindaddress ::1\nlocal stratum 5\nallow ::1\n")
    client = peers.tsyncd(
        "tsyncd-client6",
        textwrap.dedent(
            f"""
            [[source]]
            mode = "server"
            address = "[::1]:{port}"
            xleave = true
            dscp = 46
            iburst = true
            min-poll = -3
            max-poll = -3
            """
        ),
    )

    def good() -> dict[str, Any] | None:
        rows = [
            r
            for r in client.ctl("peers")
            if r["state"] == "selected" and r["interleaved"] and r["reach"] & 0o17 == 0o17
        ]
        return rows[0] if rows else None

    row = wait_for("tsyncd to select chronyd over ::1, interleaved", good)
    assert row["address"] == f"[::1]:{port}" and row["stratum"] == 5
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
    status = client.ctl("status")
    assert status["stratum"] == 6
    # An IPv6 upstream is announced by the MD5 hash, not an address.
    assert status["reference_id_raw"] == LOOPBACK6_REFID
    assert status["reference_id"] == str(ipaddress.IPv4Address(LOOPBACK6_REFID))
    # ... which tsyncctl shows as chronyc does, with the address it stands for.
    assert status["reference_address"] == "::1"
    tracking = client.ctl("tracking")
    assert tracking["reference_id_raw"] == LOOPBACK6_REFID
    assert tracking["reference_address"] == "::1"
    assert tracking["selected_source"] == status["selected_source"] == f"[::1]:{port}"
    text = client.run_ctl("tracking").stdout
    assert f"Reference ID      : {LOOPBACK6_REFID:08X} (::1)\n" in text


def test_chronyd_client_of_tsyncd_over_ipv6_computes_the_same_refid(peers: Peers) -> None:
    port = free_udp6_port()
    peers.tsyncd(
        "tsyncd-server6",
        f'[synchronization]\nlocal-stratum = 7\n[[server]]\nlisten = "[::1]:{port}"\n',
    )
    chrony = peers.chronyd(
        "chronyd-client6", f"server ::1 port {port} iburst minpoll -2 maxpoll -2\nport 0\n"
    )

    def tracking() -> list[str] | None:
        fields = chrony.chronyc("tracking").split(",")
        return fields if len(fields) > 4 and fields[2] == "8" else None

    fields = wait_for("chronyd to synchronize to tsyncd over ::1", tracking, timeout=30)
    assert int(fields[0], 16) == LOOPBACK6_REFID  # chronyd's refid of its ::1 source
    assert fields[1] == "::1" and abs(float(fields[4])) < 1e-3


def _answers(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=42)), (host, port))
        try:
            return decode_ntp(s.recv(2048)).origin_ts == 42
        except TimeoutError:
            return False


def test_ipv6_only_option(peers: Peers) -> None:
    only6, dual = free_udp_port(), free_udp_port()
    peers.tsyncd(
        "tsyncd-v6only",
        textwrap.dedent(
            f"""
            [synchronization]
            local-stratum = 7
            [[server]]
            listen = "[::]:{only6}"
            ipv6-only = true
            dscp = 46
            [[server]]
            listen = "[::]:{dual}"
            ipv6-only = false
            """
        ),
    )
    assert _answers(socket.AF_INET6, "::1", only6)
    assert not _answers(socket.AF_INET, "127.0.0.1", only6)
    assert _answers(socket.AF_INET6, "::1", dual)
    assert _answers(socket.AF_INET, "127.0.0.1", dual)


def test_tsyncd_client_of_chronyd_at_a_link_local_address(netns_peers: NetnsPeers) -> None:
    """``address = "[fe80::...%v0]:port"``, as chrony's ``server fe80::...%v0``: the interface
    travels with the address (a link-local address means nothing without one)."""
    port = free_udp_port()
    assert netns_peers.far is not None  # the server is another host on v0's link
    netns_peers.far.chronyd("chronyd-ll", f"port {port}\nlocal stratum 5\nallow all\n")
    client = netns_peers.tsyncd(
        "tsyncd-ll",
        f'[[source]]\nmode = "server"\naddress = "[{LINK_LOCAL}%v0]:{port}"\n'
        "iburst = true\nmin-poll = -3\nmax-poll = -3\n",
    )

    def selected() -> dict[str, Any] | None:
        rows = client.ctl("peers")
        return rows[0] if rows and rows[0]["state"] == "selected" else None

    row = wait_for("tsyncd to select chronyd over the link-local address", selected)
    assert row["address"] == f"[{LINK_LOCAL}%v0]:{port}" and row["stratum"] == 5
    assert row["packets_dropped"] == 0
