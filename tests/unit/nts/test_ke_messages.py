"""What a failed NTS-KE says (``tsyncctl peers`` shows it): IPv6 servers bracketed as the
source is named, and why a certificate was not trusted in OpenSSL's words."""

from __future__ import annotations

import asyncio
import socket
import sys
import types

import pytest

from tsyncd.net.tls import verify_error_text
from tsyncd.sources.ntske import KeFailure, run_ke


def closed_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


def test_an_ipv6_ke_server_is_bracketed() -> None:
    port = closed_port(socket.AF_INET6, "::1")
    with pytest.raises(KeFailure) as info:
        asyncio.run(run_ke("::1", port, None))
    assert str(info.value).startswith(f"cannot connect to NTS-KE server [::1]:{port}: ")


def test_verify_errors_in_openssls_words(monkeypatch: pytest.MonkeyPatch) -> None:
    assert verify_error_text(10) == "certificate has expired"
    assert verify_error_text(20) == "unable to get local issuer certificate"
    # Bindings without X509_verify_cert_error_string: the number, not a crash.
    monkeypatch.setitem(sys.modules, "OpenSSL._util", types.ModuleType("OpenSSL._util"))
    assert verify_error_text(10) == "X509 verify error 10"
