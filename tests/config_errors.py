"""The errors a config gives, for the tests of ``tsyncd.config``'s rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from tsyncd.config import ConfigErrors, parse_config

__all__ = ["P", "errors"]

P = Path("/etc/tsyncd.toml")


def errors(data: Mapping[str, object]) -> list[str]:
    """Every error ``data`` gives, as read from ``P``, without the ``P: `` each starts with."""
    with pytest.raises(ConfigErrors) as e:
        parse_config(data, P)
    return [str(x).removeprefix(f"{P}: ") for x in e.value.errors]
