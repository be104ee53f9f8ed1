"""A throwaway CA and server certificate for TLS tests (NTS-KE, TSQ), made with ``cryptography``.

The server certificate names ``localhost`` (or the names given), 127.0.0.1 and ::1, so clients
that connect by IP (chronyd, tsyncd) and by name both verify it.
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


def make_pki(
    directory: Path,
    names: tuple[str, ...] = ("localhost",),
    *,
    valid_days: tuple[float, float] = (-1, 30),
    alt_names: bool = True,
    addresses: tuple[str, ...] = (),
) -> Pki:
    """Write a CA, a server certificate for ``names``, 127.0.0.1, ::1 and ``addresses`` (the
    IPs clients reach it at elsewhere, e.g. in a test's own network namespace), and its key; the
    server certificate is valid from ``valid_days[0]`` to ``valid_days[1]`` days from now
    (e.g. ``(-30, -1)``: expired).  ``alt_names=False``: no subjectAltName, the first name in
    the subject's CN only (as certificates before RFC 6125)."""
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
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid_days[0]))
        .not_valid_after(now + datetime.timedelta(days=valid_days[1]))
    )
    if alt_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]
                + [
                    x509.IPAddress(ipaddress.ip_address(a))
                    for a in ("127.0.0.1", "::1", *addresses)
                ]
            ),
            critical=False,
        )
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(ca=directory / "ca.pem", chain=directory / "chain.pem", key=directory / "key.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.chain.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    pki.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pki.key.chmod(0o600)
    return pki
