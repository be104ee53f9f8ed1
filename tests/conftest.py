"""Fixtures shared by every test directory."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from netns import NetnsPeers, private_network
from peers import Peers

# The property tests' parsers and codecs run a few hundred examples each in the suite; a longer
# hunt for inputs that crash them: python -m pytest tests/property --hypothesis-profile=fuzz
settings.register_profile("fuzz", max_examples=30_000, deadline=None)


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
