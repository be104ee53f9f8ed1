"""Symmetric mode against real chronyd on loopback: ``mode = "peer"`` (active) with chronyd's
``peer`` directive, each measuring the other; and tsyncd's server answering chronyd's symmetric
active packets in passive mode."""

from __future__ import annotations

import socket
from typing import Any

from peers import (
    NTPDATA_AUTHENTICATED,
    NTPDATA_DELAY,
    NTPDATA_INTERLEAVED,
    NTPDATA_MODE,
    NTPDATA_OFFSET,
    NTPDATA_TOTAL_TX,
    NTPDATA_VALID_RX,
    Chronyd,
    Peers,
    Tsyncd,
    free_udp_port,
    peer_source_toml,
    wait_for,
)

from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp


def _peer_row(chrony: Chronyd, port: int) -> list[str] | None:
    """chronyd's row for its peer (mode '='), once it has heard from it 3 times."""
    rows = [r for r in chrony.sources() if r[0] == "=" and r[2] == "127.0.0.1"]
    return rows[0] if rows and int(rows[0][5], 8) & 0o7 == 0o7 else None


def test_symmetric_peers_measure_each_other(peers: Peers) -> None:
    chrony_port, our_port = free_udp_port(), free_udp_port()
    chrony = peers.chronyd(
        "chronyd-peer",
        f"port {chrony_port}\nbindaddress 127.0.0.1\nlocal stratum 10\nallow 127.0.0.1\n"
        f"peer 127.0.0.1 port {our_port} minpoll -2 maxpoll -2 noselect\n",
    )
    tsyncd = peers.tsyncd("tsyncd-peer", peer_source_toml(our_port, chrony_port))

    def measured() -> dict[str, Any] | None:
        rows = [r for r in tsyncd.ctl("peers") if r["reach"] & 0o17 == 0o17]
        return rows[0] if rows else None

    row = wait_for("tsyncd to measure chronyd as its peer", measured, timeout=30)
    assert row["mode"] == "peer" and row["address"] == f"127.0.0.1:{chrony_port}"
    assert row["stratum"] in (10, 11)
    assert isinstance(row["offset"], float) and abs(row["offset"]) < 1e-3
    assert isinstance(row["delay"], float) and 0 < row["delay"] < 1e-3

    theirs = wait_for("chronyd to hear tsyncd as its peer", lambda: _peer_row(chrony, our_port))
    assert theirs[3] == "9"  # the stratum tsyncd announces from its local clock

    def chrony_samples() -> list[str] | None:
        for line in chrony.chronyc("sourcestats").splitlines():
            fields = line.split(",")
            if fields[0] == "127.0.0.1" and int(fields[1]) >= 3:
                return fields
        return None

    stats = wait_for("chronyd to collect samples of tsyncd", chrony_samples, timeout=30)
    assert abs(float(stats[6])) < 1e-3  # chronyd's estimated offset of tsyncd, s
    # The peer's socket shares its port with a server: clients still get answers there.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=77)), ("127.0.0.1", our_port))
        answer = decode_ntp(s.recv(2048))
    assert answer.mode == Mode.SERVER and answer.origin_ts == 77 and answer.stratum == 9


def _passive_server_and_active_chronyd(
    peers: Peers, peer_options: str, server_toml: str = ""
) -> tuple[Tsyncd, Chronyd]:
    """A tsyncd server answering symmetric active packets, and a chronyd ``peer`` of it with
    ``peer_options`` (and ``server_toml`` in tsyncd's config)."""
    server_port = free_udp_port()
    server = peers.tsyncd(
        "tsyncd-server",
        f"[synchronization]\nlocal-stratum = 8\n{server_toml}[[server]]\n"
        f'listen = "127.0.0.1:{server_port}"\nsymmetric-passive = true\n',
    )
    chrony = peers.chronyd(
        "chronyd-active",
        f"port {free_udp_port()}\nbindaddress 127.0.0.1\nallow 127.0.0.1\n"
        f"peer 127.0.0.1 port {server_port} minpoll -2 maxpoll -2{peer_options}\n",
    )
    return server, chrony


def _selected_passive(chrony: Chronyd) -> list[str]:
    """chronyd's row for the tsyncd it polls in symmetric active mode, once selected."""

    def selected() -> list[str] | None:
        rows = [r for r in chrony.sources() if r[0] == "=" and r[1] == "*"]
        return rows[0] if rows else None

    return wait_for("chronyd to select tsyncd's passive answers", selected, timeout=30)


def test_server_answers_symmetric_active_in_passive_mode(peers: Peers) -> None:
    _server, chrony = _passive_server_and_active_chronyd(peers, "")
    row = _selected_passive(chrony)
    assert row[3] == "8"
    tracking = chrony.chronyc("tracking").split(",")
    assert tracking[2] == "9" and abs(float(tracking[4])) < 1e-3


def test_passive_answers_to_a_signed_peer_are_signed(peers: Peers) -> None:
    """chronyd's ``peer ... key 2`` (SHA256: NTPv3, whole digest) gets signed mode 2 answers
    from a tsyncd with that key."""
    keys = peers.tmp / "passive.keys"
    keys.write_text("2 SHA256 HEX:" + "2a" * 32 + "\n")
    server, chrony = _passive_server_and_active_chronyd(
        peers, f" key 2\nkeyfile {keys}", f'[keys]\nfile = "{keys}"\n'
    )
    assert _selected_passive(chrony)[3] == "8"
    row = chrony.ntpdata()
    assert row is not None and row[NTPDATA_AUTHENTICATED] == "Yes"
    assert server.ctl("serverstats")["dropped_by_reason"] == {}


def test_passive_answers_to_an_interleaving_peer_carry_kernel_tx_stamps(peers: Peers) -> None:
    server, chrony = _passive_server_and_active_chronyd(peers, " xleave")
    samples: dict[int, tuple[float, float]] = {}  # chronyd's valid RX count -> (offset, delay)

    def six_interleaved() -> bool:
        row = chrony.ntpdata()
        if row is not None and row[NTPDATA_INTERLEAVED] == "Yes":
            assert row[NTPDATA_MODE] == "Symmetric passive"
            offset, delay = float(row[NTPDATA_OFFSET]), float(row[NTPDATA_DELAY])
            samples[int(row[NTPDATA_VALID_RX])] = (offset, delay)
        return len(samples) >= 6

    wait_for("six interleaved samples of chronyd's", six_interleaved, timeout=30)
    # With both sides' kernel stamps the loopback round trip is a few µs; answers carrying the
    # clock read from before the responder ran (as before this test) measured about 55 µs.
    best_offset, best_delay = min(samples.values(), key=lambda s: s[1])
    assert 0 < best_delay < 15e-6 and abs(best_offset) < 5e-6, samples
    assert server.ctl("serverstats")["interleaved_answered"] >= 5


def test_peer_sharing_a_servers_address_is_heard_there(peers: Peers) -> None:
    """A peer on the port of a [[server]] that listens on a specific address sends from that
    address, where the remote peer sends its own packets (chronyd's ``peer 127.0.0.30``), so
    both sides hear each other; sent from the routed 127.0.0.1, chronyd took our packets for a
    stranger's and its own landed on the server socket (QA s16 hunt-sync F3)."""
    our_port, chrony_port = free_udp_port(), free_udp_port()
    chrony = peers.chronyd(
        "chronyd-peer",
        f"port {chrony_port}\nbindaddress 127.0.0.31\nlocal stratum 6\nallow 127.0.0.0/8\n"
        f"peer 127.0.0.30 port {our_port} minpoll -2 maxpoll -2 noselect\n",
    )
    tsyncd = peers.tsyncd(
        "tsyncd-peer",
        "[synchronization]\nlocal-stratum = 8\nmin-sources = 2\n"
        f'[[server]]\nlisten = "127.0.0.30:{our_port}"\n'
        f'[[source]]\nmode = "peer"\naddress = "127.0.0.31:{chrony_port}"\n'
        f"local-port = {our_port}\nmin-poll = -2\nmax-poll = -2\n",
    )

    def chronyd_hears_its_peer() -> list[str] | None:
        rows = [r for r in chrony.sources() if r[0] == "=" and r[2] == "127.0.0.30"]
        return rows[0] if rows and int(rows[0][5], 8) & 0o17 == 0o17 else None

    theirs = wait_for("chronyd to hear tsyncd as its peer", chronyd_hears_its_peer, timeout=30)
    assert theirs[3] == "8"  # the stratum tsyncd announces from its local clock
    ntpdata = chrony.ntpdata("127.0.0.30")
    assert ntpdata is not None and ntpdata[NTPDATA_MODE] == "Symmetric active"

    def tsyncd_hears_its_peer() -> dict[str, Any] | None:
        rows = [r for r in tsyncd.ctl("peers") if r["reach"] & 0o17 == 0o17]
        return rows[0] if rows else None

    row = wait_for("tsyncd to measure chronyd as its peer", tsyncd_hears_its_peer, timeout=30)
    assert row["stratum"] == 6 and isinstance(row["offset"], float)
    assert abs(row["offset"]) < 1e-3

    # chronyd's packets reach the peer's association, none the server socket.  One may have
    # landed there before the peer's socket was open (tsyncd binds its server first), so the
    # count is taken now and must not grow over chronyd's next four packets.
    def server_drops() -> int:
        return int(tsyncd.ctl("serverstats")["dropped_by_reason"].get("not_client_mode", 0))

    def chronyd_sent() -> int:
        data = chrony.ntpdata("127.0.0.30")
        return int(data[NTPDATA_TOTAL_TX]) if data is not None else 0

    drops, sent = server_drops(), chronyd_sent()
    wait_for("chronyd to send 4 more packets", lambda: chronyd_sent() >= sent + 4 or None)
    assert server_drops() == drops
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # clients still get answers
        s.settimeout(2)
        s.sendto(encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=78)), ("127.0.0.30", our_port))
        answer = decode_ntp(s.recv(2048))
    assert answer.mode == Mode.SERVER and answer.origin_ts == 78 and answer.stratum == 8
