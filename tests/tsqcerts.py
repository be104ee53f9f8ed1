"""tsyncd config for TSQ tests; the CA and certificates come from ``tests/pki.py``."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.pki import Pki, make_pki

__all__ = ["Pki", "make_pki", "tsq_servers_toml"]


def tsq_servers_toml(
    pki_dir: Path, stream: int, datagram: int, hosts: tuple[str, ...] = ("127.0.0.1",)
) -> str:
    """``hosts`` are bracketed when IPv6; each gets both transports on the same ports."""
    return "".join(
        textwrap.dedent(
            f"""
            [[tsq-server]]
            transport = "{transport}"
            listen = "{f"[{host}]" if ":" in host else host}:{port}"
            certificate-chain-path = "{pki_dir / "chain.pem"}"
            private-key-path = "{pki_dir / "key.pem"}"
            """
        )
        for host in hosts
        for transport, port in (("stream", stream), ("datagram", datagram))
    )
