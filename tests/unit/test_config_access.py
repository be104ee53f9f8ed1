"""The [[server]] allow and deny entries as the config takes them (QA s19 hunt-new #4, #5):
chrony's syntax, and what is refused with the reason (the IPv4-mapped entries:
tests/unit/test_config_listen.py)."""

from __future__ import annotations

from tests.config_errors import errors

ZONE = (
    "expected an address without a zone ID (a rule holds an address on every interface, so the "
    "zone would be ignored): write"
)


def test_a_zone_id_is_refused_not_ignored() -> None:
    # The rule would hold fe80::1 on every interface, a wider rule than the one written.
    assert errors(
        {
            "server": [
                {"allow": ["fe80::1%lo", "2001:db8::/32"]},
                {"listen": "[::]:1123", "deny": "fe80::1%eth0/64"},
            ]
        }
    ) == [
        f'server[0].allow[0] = "fe80::1%lo": {ZONE} "fe80::1"',
        f'server[1].deny = "fe80::1%eth0/64": {ZONE} "fe80::1/64"',
    ]
