"""A pool bound without forking (the daemon forks its workers last, for memory): the socket
holds what comes meanwhile, ``start`` forks the workers once, and they answer it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

from tsyncd.clock.measure import MeasureClock
from tsyncd.config import Endpoint, load_config
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.servers.workers import WorkerPool, start_server
from tsyncd.wire.ntp import Mode, NtpPacket, decode_ntp, encode_ntp


def test_requests_before_the_fork_are_answered_after_it(tmp_path: Path) -> None:
    conf = tmp_path / "tsyncd.toml"
    conf.write_text('[[server]]\nlisten = "127.0.0.1:1123"\nworkers = 2\n')
    # Bound to a free port instead, which the config file cannot ask for (port 0).
    server = dataclasses.replace(load_config(conf).servers[0], listen=Endpoint("127.0.0.1", 0))

    async def scenario() -> None:
        pool = start_server(server, MeasureClock(), ResponseTemplate(stratum=10), fork=False)
        assert isinstance(pool, WorkerPool)
        try:
            assert pool.pids == []  # bound, not forked
            port = int(pool.listen.rsplit(":", 1)[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                request = encode_ntp(NtpPacket(mode=Mode.CLIENT, transmit_ts=0x1234_5678_9ABC))
                client.sendto(request, ("127.0.0.1", port))  # waits in the worker's socket
                pool.start()
                pids = pool.pids
                assert len(pids) == 2
                pool.start()  # once only
                assert pool.pids == pids
                reply = decode_ntp(await asyncio.to_thread(client.recv, 512))
            assert reply.mode == Mode.SERVER
            assert reply.stratum == 10
            assert reply.origin_ts == 0x1234_5678_9ABC
        finally:
            pool.close()

    asyncio.run(scenario())
