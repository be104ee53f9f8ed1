"""The send-path warm-up: one datagram to a private loopback sink after a quiet spell, none
while replies keep the path warm, and the sink drained after each reply."""

from __future__ import annotations

import socket

import pytest

from tsyncd.servers.warmsend import SendWarmer

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
