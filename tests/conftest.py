"""Fixtures shared by every test directory."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import NetnsPeers, private_network
from peers import Peers


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    """Start real peer processes; all are stopped (and their logs shown) after the test."""
    p = Peers(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()
        with contextlib.suppress(OSError):
            for proc in p.procs:
                sys.stderr.write(f"--- {proc.name} ---\n{proc.output()[-4000:]}\n")


@pytest.fixture
def netns_peers(tmp_path: Path) -> Iterator[NetnsPeers]:
    """Peers in a network namespace of the test's own (tests/netns.py), gone afterwards."""
    with private_network(tmp_path) as p:
        yield p
