"""tsyncd configs for NTS tests; the CA and certificates come from ``tests/pki.py``."""

from __future__ import annotations

from pathlib import Path

from tests.pki import Pki, make_pki

__all__ = ["Pki", "make_pki", "nts_server_toml", "nts_source_toml"]


def nts_server_toml(
    pki: Pki, ntp_port: int, ke_port: int, keys: Path, stratum: int, send_to: int | None = None
) -> str:
    """tsyncd config serving NTP and NTS-KE on loopback from its local clock at ``stratum``;
    with ``send_to``, NTP on that port too, and NTS-KE sends clients there (Port Negotiation)."""
    more = f'[[server]]\nlisten = "127.0.0.1:{send_to}"\n' if send_to else ""
    told = f"ntp-port = {send_to}\n" if send_to else ""
    return (
        f"[synchronization]\nlocal-stratum = {stratum}\n"
        f'[[server]]\nlisten = "127.0.0.1:{ntp_port}"\n{more}'
        f'[[nts-ke-server]]\nlisten = "127.0.0.1:{ke_port}"\n{told}'
        f'certificate-chain-path = "{pki.chain}"\nprivate-key-path = "{pki.key}"\n'
        f'[keyset]\nkey-storage-path = "{keys}"\n'
    )


def nts_source_toml(pki: Pki, ke_address: str, poll: tuple[int, int]) -> str:
    """tsyncd config with one NTS source trusting the test CA."""
    return (
        f'[[source]]\nmode = "nts"\naddress = "{ke_address}"\n'
        f'certificate-authority = "{pki.ca}"\niburst = true\n'
        f"min-poll = {poll[0]}\nmax-poll = {poll[1]}\n"
    )
