"""Typed decode errors: every way a peer's bytes can be malformed.

A ``WireError`` always means the *peer* sent something we cannot accept: the packet path catches
it, drops the packet and bumps a counter labelled with ``reason``.  Our own bugs (e.g. asking the
encoder to emit a stratum of 300) raise plain ``ValueError``/``TypeError`` instead, so they fail
loudly rather than being counted as network noise.

``reason`` strings are stable snake_case metric labels: extend the set, never rename one.
Messages carry the offending values (lengths, offsets, field values), never whole payloads.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadExtension",
    "BadLength",
    "BadVersion",
    "Truncated",
    "WireError",
]


class WireError(ValueError):
    """A peer fault in received bytes: drop the packet and count it under ``reason``."""

    reason: ClassVar[str] = "malformed"


class Truncated(WireError):
    """Fewer bytes than the fixed part of the message needs."""

    reason = "truncated"


class BadLength(WireError):
    """The total length is impossible for this message (not a multiple of 4, stray bytes)."""

    reason = "bad_length"


class BadVersion(WireError):
    """The version number is one this codec does not speak."""

    reason = "bad_version"


class BadExtension(WireError):
    """The bytes after the header are neither a valid RFC 7822 extension-field chain nor a MAC."""

    reason = "bad_extension"
