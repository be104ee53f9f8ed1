"""The [[server]] policy keys of issue 4: rate-limit, kod, interleaved, max-clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsyncd.config import ConfigErrors, parse_config
from tsyncd.servers.clientlog import RateLimit
from tsyncd.servers.responder import ServerPolicy
from tsyncd.servers.stats import server_policy

P = Path("/etc/tsyncd.toml")


def test_policy_keys_and_defaults() -> None:
    config = parse_config(
        {
            "server": [
                {},
                {
                    "listen": "127.0.0.1:1123",
                    "rate-limit": {"interval": 1, "burst": 4, "leak": 0},
                    "kod": True,
                    "interleaved": False,
                    "max-clients": 100,
                },
                {"listen": "127.0.0.1:1124", "rate-limit": {}},
            ]
        },
        P,
    )
    default, custom, chrony_like = config.servers
    assert server_policy(default) == ServerPolicy()
    assert default.rate_limit is None and not default.kod and default.interleaved
    assert server_policy(custom) == ServerPolicy(
        rate_limit=RateLimit(interval_log2=1, burst=4, leak_log2=0),
        kod=True,
        interleaved=False,
        max_clients=100,
    )
    assert chrony_like.rate_limit == RateLimit(interval_log2=3, burst=8, leak_log2=2)


@pytest.mark.parametrize(
    ("server", "messages"),
    [
        (
            {"rate-limit": {"interval": 20, "burst": 0, "leek": 1}},
            [
                "server[0].rate-limit.interval = 20: expected integer -4..12 "
                "(log2 seconds between requests on average)",
                "server[0].rate-limit.burst = 0: expected integer 1..255 "
                "(requests a client may send at once)",
                "server[0].rate-limit.leek = 1: expected key to be one of: interval, burst, leak",
            ],
        ),
        (
            {"rate-limit": 8},
            [
                "server[0].rate-limit = 8: expected table with optional keys interval, burst, "
                "leak (e.g. {}), as chrony's ratelimit"
            ],
        ),
        ({"kod": "yes"}, ['server[0].kod = "yes": expected true or false']),
        (
            {"max-clients": 0},
            [
                "server[0].max-clients = 0: expected integer 1..16777216 "
                "(clients remembered per worker)"
            ],
        ),
    ],
)
def test_policy_key_errors(server: dict[str, object], messages: list[str]) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config({"server": [server]}, P)
    assert str(info.value).splitlines() == [f"/etc/tsyncd.toml: {m}" for m in messages]
