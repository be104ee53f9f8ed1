"""The worker pipe: whole objects both ways, poll without blocking, EOF when the peer closes."""

from __future__ import annotations

import os
import threading

import pytest

from tsyncd.servers.pipe import pipe
from tsyncd.servers.responder import ResponseTemplate
from tsyncd.servers.worker import ClockMap


def test_objects_cross_whole_in_order() -> None:
    a, b = pipe()
    try:
        assert not b.poll()
        a.send(("template", ResponseTemplate(stratum=3)))
        a.send(("clock", ClockMap(1, 2, 3)))
        assert b.poll()
        assert b.recv() == ("template", ResponseTemplate(stratum=3))
        assert b.recv() == ("clock", ClockMap(1, 2, 3))
        assert not b.poll()
        b.send(("stats", {"received": 7}, [], 1))  # duplex
        assert a.recv() == ("stats", {"received": 7}, [], 1)
    finally:
        a.close()
        b.close()


def test_a_message_larger_than_the_socket_buffer() -> None:
    a, b = pipe()
    big = os.urandom(4 << 20)
    sender = threading.Thread(target=a.send, args=(("blob", big),))
    sender.start()
    try:
        assert b.recv() == ("blob", big)
    finally:
        sender.join(10)
        a.close()
        b.close()


def test_eof_when_the_peer_closes() -> None:
    a, b = pipe()
    a.send(("last", 1))
    a.close()
    assert b.poll()
    assert b.recv() == ("last", 1)  # what was sent before the close still arrives
    assert b.poll()  # the end of the pipe is readable too: recv says what it is
    with pytest.raises(EOFError):
        b.recv()
    b.close()


def test_send_to_a_closed_peer_is_an_oserror() -> None:
    a, b = pipe()
    b.close()
    with pytest.raises(OSError):
        a.send(("push", 1))
    a.close()
