"""A throwaway CA and server certificate for NTS-KE tests, made with ``cryptography``.

The server certificate names ``localhost`` and 127.0.0.1 so clients that connect by IP
(chronyd, tsyncd) and by name both verify it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path  # CA certificate (PEM): what clients trust
    chain: Path  # server certificate + CA (PEM)
    key: Path  # server private key (PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> Pki:
    """Write a CA, a server cert for localhost/127.0.0.1 and its key into ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("tsyncd test CA"))
        .issuer_name(_name("tsyncd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(ca=directory / "ca.pem", chain=directory / "server.pem", key=directory / "key.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.chain.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    pki.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pki.key.chmod(0o600)
    return pki


def nts_server_toml(pki: Pki, ntp_port: int, ke_port: int, keys: Path, stratum: int) -> str:
    """tsyncd config serving NTP and NTS-KE on loopback from its local clock at ``stratum``."""
    return (
        f"[synchronization]\nlocal-stratum = {stratum}\n"
        f'[[server]]\nlisten = "127.0.0.1:{ntp_port}"\n'
        f'[[nts-ke-server]]\nlisten = "127.0.0.1:{ke_port}"\n'
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
