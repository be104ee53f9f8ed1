"""A server on a wildcard address answers from the address each request was sent to (QA s18
hunt-server-policy F1): loopback's 127.0.0.77 is one of the host's addresses, not the one the
kernel routes replies from (127.0.0.1), so without the request's destination echoed as
``IP_PKTINFO`` the reply comes from 127.0.0.1 and a client that checks its source (chronyd)
drops it.  Every send path: basic replies, interleaved ones (sent asking for a kernel TX
stamp), KoDs, on the event loop and in worker processes."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import pytest

from tsyncd.clock.measure import MeasureClock
from tsyncd.config import Endpoint, load_config
from tsyncd.net.udp import receives_pktinfo
from tsyncd.servers import mmsg
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.servers.workers import WorkerPool, start_server
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp

_KOD = "rate-limit = { interval = 0, burst = 2, leak = 0 }\nkod = true\n"


def _replies(
    path: Path, listen: str, workers: int, extra: str, asks: list[tuple[str, int]], count: int
) -> list[tuple[tuple[str, int], NtpPacket]]:
    """Serve ``[[server]]`` on ``listen`` port 0; send ``count`` requests to each (address,
    receive field) of ``asks``, each from a socket of its own; (reply source, reply) of each
    answered (with ``extra``, a request may go unanswered: rate-limited with no KoD)."""
    conf = path / "tsyncd.toml"
    conf.write_text(f'[[server]]\nlisten = "{listen}:1123"\nworkers = {workers}\n{extra}')
    host = listen.strip("[]")
    cfg = dataclasses.replace(load_config(conf).servers[0], listen=Endpoint(host, 0))

    def ask(port: int) -> list[tuple[tuple[str, int], NtpPacket]]:
        out = []
        for address, receive in asks:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as client:
                client.settimeout(0.5 if extra else 5)
                for n in range(count):
                    transmit = 0x1234_5678_0000 + n
                    request = NtpPacket(mode=Mode.CLIENT, transmit_ts=transmit, receive_ts=receive)
                    client.sendto(encode_ntp(request), (address, port))
                    try:
                        data, source = client.recvfrom(512)
                    except TimeoutError:
                        if extra:
                            continue
                        raise
                    reply = decode_ntp(data)
                    assert reply.origin_ts == transmit or reply.stratum == 0  # or a KoD
                    out.append(((source[0], source[1]), reply))
        return out

    async def scenario() -> list[tuple[tuple[str, int], NtpPacket]]:
        server = start_server(cfg, MeasureClock(), ResponseTemplate(stratum=10))
        try:
            port = int(server.listen.rsplit(":", 1)[1])
            if isinstance(server, WorkerPool):
                assert len(server.pids) == workers
            return await asyncio.to_thread(ask, port)
        finally:
            server.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("listen", ["0.0.0.0", "[::]"])
@pytest.mark.parametrize("receive", [0, 1], ids=["basic", "interleaved"])
def test_replies_leave_from_the_requests_destination(
    tmp_path: Path, workers: int, listen: str, receive: int
) -> None:
    """Basic replies (the lone-reply and batch paths) and the stamped path an interleaving
    client's request takes (a Receive field that is neither zero nor its Transmit)."""
    asks = [("127.0.0.77", receive), ("127.0.0.1", receive), ("127.0.0.77", receive)]
    if listen == "[::]":
        asks.append(("::1", receive))
    got = _replies(tmp_path, listen, workers, "", asks, 3)
    port = got[0][0][1]
    sources = [source for source, _reply in got]
    want = [(address, port) for address, _r in asks for _ in range(3)]
    assert sources == want
    assert all(reply.stratum == 10 for _source, reply in got)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("listen", ["0.0.0.0", "[::]"])
def test_kods_leave_from_the_requests_destination(
    tmp_path: Path, workers: int, listen: str
) -> None:
    got = _replies(tmp_path, listen, workers, _KOD, [("127.0.0.77", 0)], 6)
    port = got[0][0][1]
    assert len(got) >= 3 and {source for source, _reply in got} == {("127.0.0.77", port)}
    assert any(reply.stratum == 0 for _source, reply in got)  # KoD RATE after the burst


def test_only_a_wildcard_socket_asks_for_destinations(tmp_path: Path) -> None:
    """A socket bound to one address needs no destination and pays nothing for one."""
    from tsyncd.net.udp import bind_udp

    for host, wildcard in (("127.0.0.1", False), ("0.0.0.0", True), ("::", True), ("::1", False)):
        with bind_udp(host, 0, pktinfo=True) as sock:
            assert receives_pktinfo(sock) is wildcard
            assert mmsg.MessageBatch(sock).pktinfo is wildcard
            assert mmsg.SingleMessage(sock).pktinfo is wildcard
    with bind_udp("0.0.0.0", 0) as sock:
        assert not receives_pktinfo(sock)  # a client's socket: never asked


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_batch_and_single_messages_answer_from_each_destination(host: str) -> None:
    """The worker's IO below the loop: a batch's replies in one ``sendmmsg`` (several queued
    requests, to different addresses of ours), a lone stamped reply (``LoneSend``), and the
    one-datagram fallback (``SingleMessage``, ``SocketLoneSend``)."""
    from tsyncd.net.udp import bind_udp, enable_rx_timestamps
    from tsyncd.servers.lonesend import LoneSend, SocketLoneSend

    targets = ["127.0.0.77", "127.0.0.1", "127.0.0.78"] + (["::1"] if host == "::" else [])
    with bind_udp(host, 0, pktinfo=True) as sock:
        enable_rx_timestamps(sock)
        port = sock.getsockname()[1]
        clients = [
            socket.socket(socket.AF_INET6 if ":" in t else socket.AF_INET, socket.SOCK_DGRAM)
            for t in targets
        ]
        try:

            def ask(which: list[int]) -> None:
                for k in which:
                    clients[k].settimeout(5)
                    clients[k].sendto(bytes(48), (targets[k], port))

            def source(k: int) -> str:
                return str(clients[k].recvfrom(64)[1][0])

            everyone = list(range(len(targets)))
            ask(everyone)
            batch = mmsg.MessageBatch(sock)
            assert len(batch.receive()) == len(targets)  # queued already: one batch
            assert batch.send([(i, bytes(48), True) for i in everyone], 5) == len(targets)
            assert [source(k) for k in everyone] == targets
            single = mmsg.SingleMessage(sock)
            lones = (LoneSend(sock.fileno(), batch), SocketLoneSend(sock, single))
            for io, lone in zip((batch, single), lones, strict=True):
                for k in everyone:
                    for stamped in (False, True):
                        ask([k])
                        assert len(io.receive()) == 1
                        lone.stage(0, bytes(48), stamped)
                        assert lone.send(7)
                        assert source(k) == targets[k]
        finally:
            for client in clients:
                client.close()
