"""NTS (RFC 8915) between tsyncd and real chronyd, both ways, on loopback with a test CA.

chronyd always runs with ``-x`` (never touches the clock); tsyncd in measure mode.
"""

from __future__ import annotations

import socket
import textwrap

from nts_certs import make_pki
from peers import Peers, free_udp_port, wait_for


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_chronyd_is_nts_client_of_tsyncd(peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    keys = peers.tmp / "nts-keys.json"
    server = peers.tsyncd(
        "tsyncd-nts-server",
        textwrap.dedent(
            f"""
            [synchronization]
            local-stratum = 8
            [[server]]
            listen = "127.0.0.1:{ntp_port}"
            [[nts-ke-server]]
            listen = "127.0.0.1:{ke_port}"
            certificate-chain-path = "{pki.chain}"
            private-key-path = "{pki.key}"
            [keyset]
            key-storage-path = "{keys}"
            """
        ),
    )
    chrony = peers.chronyd(
        "chronyd-nts-client",
        f"server 127.0.0.1 port {ntp_port} nts ntsport {ke_port} iburst minpoll -2 maxpoll -2\n"
        f"ntstrustedcerts {pki.ca}\nport 0\n",
    )

    def authdata() -> list[str] | None:
        # Name/IP, Mode, KeyID, Type, KLen, Last, Atmp, NAK, Cook, CLen
        rows = [r.split(",") for r in chrony.chronyc("authdata").splitlines() if r]
        good = [r for r in rows if r[1] == "NTS" and int(r[8]) >= 1 and r[7] == "0"]
        return good[0] if good else None

    row = wait_for("chronyd to hold NTS cookies from tsyncd", authdata, timeout=30)
    assert row[3] == "15"  # AEAD_AES_SIV_CMAC_256: all chrony 4.3 offers
    assert row[4] == "256"  # key length in bits
    assert row[9] == "104"  # our cookie length

    def selected() -> list[str] | None:
        rows = [r for r in chrony.sources() if r[2] == "127.0.0.1"]
        return rows[0] if rows and rows[0][1] == "*" and int(rows[0][5], 8) >= 0o17 else None

    source = wait_for("chronyd to select tsyncd over NTS", selected, timeout=30)
    assert source[3] == "8"
    row = authdata()
    assert row is not None and int(row[8]) == 8  # every response refilled the cookie jar
    stats = server.ctl("serverstats")
    assert stats["nts_ke_connections"] >= 1 and stats["nts_ke_completed"] >= 1
    assert stats["nts_requests"] >= 4
    assert stats["nts_cookies_issued"] >= 8 + 4
    assert stats["nts_naks"] == 0
    assert stats["nts_ke_group"]  # the TLS group was recorded
    assert keys.exists() and oct(keys.stat().st_mode & 0o777) == "0o600"
    # rekey with the same key file keeps the keys: chronyd's cookies keep working.
    assert server.ctl("rekey")["key_file"] == str(keys)
