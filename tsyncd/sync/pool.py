"""Which addresses of a pool we use, which proved bad, and when to ask DNS again; sans-IO.

Theory of operation
-------------------
A ``mode = "pool"`` source is a name that resolves to many servers, of which we use up to
``count`` (RFC 8633 §3.2: several diverse sources, names re-resolved rather than addresses kept
forever).  As chrony does, a member that turns out bad is dropped and replaced by a fresh
address from a new resolution:

* *demobilized*: it sent KoD DENY/RSTR, so it will never answer again;
* *unreachable*: eight polls in a row went unanswered (the reach register is 0 after at least
  ``_UNREACHABLE_POLLS`` requests);
* *falseticker*: selection called it a falseticker in ``_FALSETICKER_CHECKS`` checks in a row.

A dropped address is not picked again for ``_BAD_HOLD_NS`` (it may still be in DNS).  When the
pool has fewer members than ``count`` it asks for a resolution, at most once per
``resolve_interval_ns``; ``choose`` then picks new addresses in DNS order.  ``tsyncctl refresh``
resolves at once and replaces the members DNS no longer gives (``stale``).  The IO adapter
(``tsyncd.sources.pool``) calls ``check`` once a second and carries out what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from tsyncd.sync.association import AssociationState, NtpAssociation

_UNREACHABLE_POLLS: Final = 8
_FALSETICKER_CHECKS: Final = 8
_BAD_HOLD_NS: Final = 3600 * 1_000_000_000  # an address we dropped stays out for an hour


@dataclass(slots=True)
class PoolMembers:
    """The addresses in use for one pool source, and the bad ones kept out."""

    count: int  # how many members we want
    resolve_interval_ns: int  # least time between two resolutions
    members: list[str] = field(default_factory=list)  # IP addresses in use
    bad_until_ns: dict[str, int] = field(default_factory=dict)  # dropped address -> hold end
    replaced: int = 0  # members dropped so far
    _next_resolve_ns: int = 0
    _falseticker_checks: dict[str, int] = field(default_factory=dict)

    def wants_resolution(self, now_ns: int) -> bool:
        """True if DNS should be asked now (too few members, and not asked too recently)."""
        return len(self.members) < self.count and now_ns >= self._next_resolve_ns

    def choose(self, resolved: list[str], now_ns: int) -> list[str]:
        """Addresses from a fresh resolution to add now (the caller mobilizes them)."""
        self._next_resolve_ns = now_ns + self.resolve_interval_ns
        new: list[str] = []
        for ip in resolved:
            if len(self.members) >= self.count:
                break
            if ip in self.members or self.bad_until_ns.get(ip, 0) > now_ns:
                continue
            self.members.append(ip)
            new.append(ip)
        return new

    def resolution_failed(self, now_ns: int) -> None:
        """DNS gave nothing usable: try again after the interval."""
        self._next_resolve_ns = now_ns + self.resolve_interval_ns

    def check(
        self, member: str, association: NtpAssociation, selection_state: str, now_ns: int
    ) -> str | None:
        """Why ``member`` must be replaced now (and drop it), or None to keep it."""
        seen = self._falseticker_checks.pop(member, 0)
        reason, seen = bad_reason(association, selection_state, seen)
        if seen:
            self._falseticker_checks[member] = seen
        if reason is not None:
            self.drop(member, now_ns)
        return reason

    def stale(self, resolved: list[str]) -> list[str]:
        """Members a fresh resolution no longer gives (tsyncctl refresh replaces them)."""
        return [ip for ip in self.members if ip not in resolved]

    def drop(self, member: str, now_ns: int) -> None:
        """Stop using ``member`` and keep it out for a while."""
        if member in self.members:
            self.members.remove(member)
            self.replaced += 1
        self._falseticker_checks.pop(member, None)
        self.bad_until_ns[member] = now_ns + _BAD_HOLD_NS
        # Replace it soon, but never resolve in a tight loop.
        self._next_resolve_ns = min(self._next_resolve_ns, now_ns + self.resolve_interval_ns)


def bad_reason(
    association: NtpAssociation, selection_state: str, falseticker_checks: int
) -> tuple[str | None, int]:
    """(Why a source is bad and should be replaced, or None; the falseticker checks in a row
    counting this one).  Shared by pools and sources named by host name (``named_server``)."""
    if association.state is AssociationState.DEMOBILIZED:
        return association.unusable_reason or "demobilized", 0
    if association.reach == 0 and association.stats.packets_sent >= _UNREACHABLE_POLLS:
        return f"unreachable ({association.stats.packets_sent} requests unanswered)", 0
    if selection_state != "falseticker":
        return None, 0
    seen = falseticker_checks + 1
    return ("falseticker" if seen >= _FALSETICKER_CHECKS else None), seen
