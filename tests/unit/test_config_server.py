"""The [[server]] policy keys of issue 4: rate-limit, kod, interleaved, max-clients."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tsyncd.config import ConfigErrors, parse_config
from tsyncd.servers.clientlog import RateLimit
from tsyncd.servers.responder import ServerPolicy
from tsyncd.servers.stats import server_policy

P = Path("/etc/tsyncd.toml")
EXAMPLE = "{ interval = 3, burst = 8, leak = 2 }"


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
                "leak (e.g. { interval = 3, burst = 8, leak = 2 }), as chrony's ratelimit"
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


def test_rate_limit_texts_say_what_leak_0_means_and_give_a_real_example() -> None:
    """leak = 0 answers no limited request (QA s16 F6: "1 in 2**leak" said all of them), and
    the type error's example is a real table (F8: it was "{}")."""
    with pytest.raises(ConfigErrors) as info:
        parse_config(
            {
                "server": [
                    {"rate-limit": {"leak": 5}},
                    {"listen": "[::1]:1123", "rate-limit": "3/8"},
                ]
            },
            P,
        )
    assert str(info.value).splitlines() == [
        "/etc/tsyncd.toml: server[0].rate-limit.leak = 5: expected integer 0..4 (log2: limited "
        "requests still answered 1 in 2**leak, none with 0)",
        '/etc/tsyncd.toml: server[1].rate-limit = "3/8": expected table with optional keys '
        "interval, burst, leak (e.g. { interval = 3, burst = 8, leak = 2 }), as chrony's "
        "ratelimit",
    ]
    example = parse_config({"server": [{"rate-limit": tomllib.loads("r = " + EXAMPLE)["r"]}]}, P)
    assert example.servers[0].rate_limit == RateLimit(interval_log2=3, burst=8, leak_log2=2)
    # Where the formula is written, so is what 0 means.
    root = Path(__file__).resolve().parents[2]
    for doc in (root / "README.md", root / "etc" / "tsyncd.toml"):
        assert "leak = 0" in doc.read_text(encoding="utf-8"), doc
