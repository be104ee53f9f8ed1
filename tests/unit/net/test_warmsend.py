"""The send-path warm-up: one datagram to a private loopback sink after a quiet spell, none
while replies keep the path warm, and the sink drained after each reply."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tsyncd.net.warmsend import SendWarmer, client_warmer

MS = 1_000_000


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_warm_up_only_after_a_quiet_spell(family: int, host: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as server:
        server.bind((host, 0))
        warmer = SendWarmer(server)
        sink = warmer._sink
        assert sink is not None and sink.family == family
        warmer.warm(10 * MS)  # never sent before: cold
        assert sink.recv(64, socket.MSG_PEEK) == bytes(48)  # from the server socket itself
        warmer.sent(10 * MS)  # the reply went out: the warm-up datagram is drained
        with pytest.raises(BlockingIOError):
            sink.recv(64)
        warmer.warm(10 * MS + MS // 2)  # 0.5 ms after a send: still warm, nothing sent
        with pytest.raises(BlockingIOError):
            sink.recv(64)
        warmer.sent(10 * MS + MS // 2)
        warmer.warm(12 * MS)  # 1.5 ms of quiet: cold again
        assert sink.recv(64) == bytes(48)
        warmer.close()
        assert warmer._sink is None
        warmer.warm(100 * MS)  # closed: a no-op


class _Recorder:
    """A SendWarmer stand-in that logs its calls beside the request's send."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def warm(self, _now_ns: int) -> None:
        self.log.append("warm")

    def sent(self, _now_ns: int) -> None:
        self.log.append("drain")


@pytest.mark.parametrize(
    ("xleave", "order"),
    [(False, ["send", "warm", "drain"]), (True, ["warm", "send", "drain"])],
)
def test_a_sources_request_warms_after_it_in_basic_mode_before_it_interleaved(
    monkeypatch: pytest.MonkeyPatch, xleave: bool, order: list[str]
) -> None:
    """Basic mode warms the path for the server's reply, interleaved mode for our request
    (warmsend.py's figures: warming before a basic request would unbalance the legs)."""
    from tsyncd.net import udp as udp_module
    from tsyncd.sources.ntp import NtpSourceSocket

    log: list[str] = []
    real_send = udp_module.send_with

    def send_with(*args: object) -> None:
        log.append("send")
        real_send(*args)  # type: ignore[arg-type]

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("127.0.0.1", 0))
            port = server.getsockname()[1]
            sock = NtpSourceSocket(
                name="s", mode="server", ip="127.0.0.1", port=port, xleave=xleave
            )
            sock.open(lambda *_: None, lambda *_: None, lambda *_: None)
            udp = sock._udp
            assert udp is not None and udp.warmer is client_warmer(socket.AF_INET)
            assert udp.warmer is not None and udp.warmer.ready and udp.warm_before is xleave
            udp.warmer = _Recorder(log)  # type: ignore[assignment]
            monkeypatch.setattr(udp_module, "send_with", send_with)
            assert sock.send(bytes(48))
            sock.close()
            assert server.recv(64) == bytes(48)  # the request itself reached the server

    asyncio.run(main())
    assert log == order


def test_the_client_warm_up_goes_through_a_loopback_sink_of_its_own() -> None:
    warmer = client_warmer(socket.AF_INET)
    assert warmer is not None and warmer is client_warmer(socket.AF_INET)  # one per process
    sink = warmer._sink
    assert sink is not None and sink.getsockname()[0] == "127.0.0.1"
    warmer.warm(10**15)  # a quiet spell long past
    assert sink.recv(64, socket.MSG_PEEK) == bytes(48)
    warmer.sent(10**15)
    with pytest.raises(BlockingIOError):
        sink.recv(64)
