"""What a failed NTS-KE says (``tsyncctl peers`` shows it): IPv6 servers bracketed as the
source is named, why a certificate was not trusted in OpenSSL's words, which names a
certificate for another host carries, a server's Error record as a refusal (not a bad
response), and a server that hangs up as one that did connect."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import types
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nts_certs import Pki, make_pki

from tsyncd.net.tls import TlsStream, server_context, verify_error_text
from tsyncd.nts.ke import error_response
from tsyncd.sources.ntske import KeFailure, run_ke
from tsyncd.wire.ntske import RecordParser

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def ke_failure(pki: Pki, handler: Handler, host: str = "127.0.0.1") -> str:
    """What ``run_ke`` says against a server on loopback that runs ``handler``, the source
    naming it ``host``."""

    async def main() -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(KeFailure) as info:
                await run_ke(host, port, pki.ca, connect_host="127.0.0.1", timeout_s=5)
            return str(info.value)
        finally:
            server.close()

    return asyncio.run(main())


def answering(pki: Pki, response: bytes) -> Handler:
    """A TLS NTS-KE server that reads the request and answers ``response``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = TlsStream(server_context(pki.chain, pki.key), reader, writer, server=True)
        await tls.handshake()
        parser = RecordParser()
        while not parser.done:
            parser.feed(await tls.recv())
        await tls.send(response)
        await tls.close()

    return handler


@pytest.mark.parametrize(
    ("response", "said"),
    [
        (error_response(1), "the NTS-KE server sent Error record 1 (Bad Request)"),
        (error_response(2), "the NTS-KE server sent Error record 2 (Internal Server Error)"),
        (error_response(0), "sent Error record 0 (Unrecognized Critical Record)"),
        (error_response(9), "sent Error record 9 (unassigned)"),
        (
            bytes.fromhex("80030002 0007 80000000"),
            "the NTS-KE server sent Warning record 7 (no warnings are defined; RFC 8915 "
            "treats unknown ones as errors)",
        ),
        (
            bytes.fromhex("80010002 0000 80040000 80000000"),  # an empty AEAD record
            "the NTS-KE server accepted none of the AEADs we offered (AES-128-GCM-SIV, "
            "AES-SIV-CMAC-256)",
        ),
    ],
    ids=["error1", "error2", "error0", "error9", "warning", "no-common-aead"],
)
def test_a_refusal_is_said_as_it_came(pki: Pki, response: bytes, said: str) -> None:
    text = ke_failure(pki, answering(pki, response))
    assert said in text and "bad response" not in text
    assert text.startswith("NTS-KE with 127.0.0.1:")


def test_bad_responses_name_records_and_aeads(pki: Pki) -> None:
    aead16 = bytes.fromhex("80010002 0000 80040002 0010 00050004 00000000 80000000")
    text = ke_failure(pki, answering(pki, aead16))
    assert text.endswith(
        "bad response: NTS-KE server chose AES-SIV-CMAC-384 (AEAD 16), which we did not "
        "offer (we offered AES-128-GCM-SIV, AES-SIV-CMAC-256)"
    )
    no_aead = bytes.fromhex("80010002 0000 00050004 00000000 80000000")
    text = ke_failure(pki, answering(pki, no_aead))
    assert text.endswith("chose NTPv4 but sent no AEAD Algorithm Negotiation record")
    server_bad = bytes.fromhex("80010002 0000 8004000200 0f 80060002 0a0d 80000000")
    text = ke_failure(pki, answering(pki, server_bad))
    assert text.endswith("Server Negotiation record (type 6): body is empty or not printable")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_server_that_hangs_up_did_accept_the_connection(pki: Pki, how: str) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if how == "fin":  # reads the ClientHello, then closes: the client reads EOF
            await reader.read(65536)
        else:  # closes at once with SO_LINGER 0: the client's next read is reset
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    text = ke_failure(pki, hang_up)
    assert "the server closed the connection during the TLS handshake" in text, text
    assert "cannot connect" not in text


@pytest.mark.parametrize(
    ("host", "alt_names", "said"),
    [
        ("localhost", True, "certificate names other.example, 127.0.0.1, ::1; not localhost"),
        ("127.0.0.2", True, "certificate names other.example, 127.0.0.1, ::1; not 127.0.0.2"),
        (
            "other.example",
            False,
            "certificate names no host name or IP address (no subjectAltName); not other.example",
        ),
    ],
    ids=["dns", "ip", "no-san"],
)
def test_a_certificate_for_another_host_says_which_names_it_carries(
    tmp_path: Path, host: str, alt_names: bool, said: str
) -> None:
    pki = make_pki(tmp_path, ("other.example",), alt_names=alt_names)
    text = ke_failure(pki, answering(pki, error_response(2)), host)
    assert text.startswith("NTS-KE with ") and text.endswith(f": {said}"), text
