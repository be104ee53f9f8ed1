"""Which addresses of a pool we use, which proved bad, and when to ask DNS again; sans-IO.

Theory of operation
-------------------
A ``mode = "pool"`` source is a name that resolves to many servers, of which we use up to
``count`` (RFC 8633 §3.2: several diverse sources, names re-resolved rather than addresses kept
forever).  As chrony does, a member that turns out bad is dropped and replaced by a fresh
address from a new resolution:

* *demobilized*: it sent KoD DENY/RSTR, so it is polled no more (another address may answer);
* *unreachable*: eight polls in a row went unanswered (the reach register is 0 after at least
  ``_UNREACHABLE_POLLS`` requests);
* *falseticker*: selection called it a falseticker in ``_FALSETICKER_CHECKS`` checks in a row.

A dropped address is not picked again for ``_BAD_HOLD_NS`` (it may still be in DNS).  A member
``tsyncctl refresh`` drops because DNS no longer gives it (``stale``) did nothing wrong: it is
dropped without that hold, so it is used again as soon as DNS gives it back (chrony keeps no
hold at all; pool.ntp.org's answers rotate, and each refresh would otherwise bar the members
that happened not to be in its answer).  Nor is an address another source polls (a configured
server, or an NTS source whose NTS-KE named it, took a member over, or polled it first): it is
held out only while that source polls it (``choose``'s ``taken``), then used again at the next
resolution (QA s21 hunt-nts #4: an hour's hold made the pool look bad and short).  When the
pool has fewer members than ``count`` it asks for a resolution, ``resolve_interval_ns`` after the
last one; ``choose`` then picks new addresses in DNS order.  A resolution that leaves the pool
short (DNS gives too few usable addresses, or fails) doubles the wait before the next, up to
``MAX_RESOLVE_INTERVAL_NS`` (``backed_off``, as a server given by name waits in
``named_server``), so a name with too few addresses costs little DNS traffic; a complete pool,
a dropped member (it is replaced soon) and ``tsyncctl refresh`` (``reset_backoff``) start again
from ``resolve_interval_ns``.  ``tsyncctl refresh`` resolves at once and replaces the members
DNS no longer gives (``stale``).  The IO adapter (``tsyncd.sources.pool``) calls ``check`` once
a second and carries out what it returns.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Final

from tsyncd.sync.association import NtpAssociation

_UNREACHABLE_POLLS: Final = 8
_FALSETICKER_CHECKS: Final = 8
_BAD_HOLD_NS: Final = 3600 * 1_000_000_000  # an address we dropped stays out for an hour
MAX_RESOLVE_INTERVAL_NS: Final = 3600 * 1_000_000_000  # the longest back-off between resolutions


def backed_off(wait_ns: int, base_ns: int) -> int:
    """The wait before the next resolution of a name after one more that gave nothing (more)
    to use, the last wait having been ``wait_ns`` (0: none yet): ``base_ns`` at first, then
    doubling up to ``MAX_RESOLVE_INTERVAL_NS``."""
    return min(MAX_RESOLVE_INTERVAL_NS, max(base_ns, 2 * wait_ns))


@dataclass(slots=True)
class PoolMembers:
    """The addresses in use for one pool source, and the bad ones kept out."""

    count: int  # how many members we want
    resolve_interval_ns: int  # least time between two resolutions
    members: list[str] = field(default_factory=list)  # IP addresses in use
    bad_until_ns: dict[str, int] = field(default_factory=dict)  # dropped address -> hold end
    replaced: int = 0  # members dropped so far
    _next_resolve_ns: int = 0
    _wait_ns: int = 0  # the back-off after the last resolution that left the pool short
    _wait_before_ns: int = 0  # the back-off before the last resolution
    _falseticker_checks: dict[str, int] = field(default_factory=dict)

    def wants_resolution(self, now_ns: int) -> bool:
        """True if DNS should be asked now (too few members, and not asked too recently)."""
        return len(self.members) < self.count and now_ns >= self._next_resolve_ns

    @property
    def next_resolution_ns(self) -> int:
        """When the pool, if short, asks DNS again."""
        return self._next_resolve_ns

    def choose(self, resolved: list[str], now_ns: int, taken: Container[str] = ()) -> list[str]:
        """Addresses from a fresh resolution to add now (the caller mobilizes them, and
        ``refuse``s those it cannot); never those in ``taken`` (another source polls them)."""
        new: list[str] = []
        for ip in resolved:
            if len(self.members) >= self.count:
                break
            if ip in self.members or ip in taken or self.bad_until_ns.get(ip, 0) > now_ns:
                continue
            self.members.append(ip)
            new.append(ip)
        self._wait_before_ns = self._wait_ns
        self._schedule(now_ns)
        return new

    def _schedule(self, now_ns: int) -> None:
        """The next resolution after one at ``now_ns``: ``resolve_interval_ns`` on if that made
        the pool complete, else backing off from the wait before it."""
        short = len(self.members) < self.count
        self._wait_ns = backed_off(self._wait_before_ns, self.resolve_interval_ns) if short else 0
        self._next_resolve_ns = now_ns + (self._wait_ns or self.resolve_interval_ns)

    def resolution_failed(self, now_ns: int) -> None:
        """DNS gave nothing: try again later, backing off."""
        self._wait_ns = backed_off(self._wait_ns, self.resolve_interval_ns)
        self._next_resolve_ns = now_ns + self._wait_ns

    def reset_backoff(self) -> None:
        """The next short resolution waits ``resolve_interval_ns`` again (tsyncctl refresh)."""
        self._wait_ns = 0

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

    def drop(self, member: str, now_ns: int, *, bad: bool = True) -> None:
        """Stop using ``member``; ``bad``: keep it out for a while (not for a ``stale`` one,
        which DNS may give back, nor for one another source took over)."""
        if member in self.members:
            self.replaced += 1
        self._forget(member, now_ns, hold=bad)
        # Replace it soon, but never resolve in a tight loop.
        self._next_resolve_ns = min(self._next_resolve_ns, now_ns + self.resolve_interval_ns)

    def refuse(self, ip: str, now_ns: int) -> None:
        """``ip``, just chosen, cannot be used (it has no socket, or it is a member's address
        in another form): keep it out as a dropped member, and count that resolution as
        short of it."""
        self._forget(ip, now_ns)
        self._schedule(now_ns)

    def _forget(self, ip: str, now_ns: int, *, hold: bool = True) -> None:
        if ip in self.members:
            self.members.remove(ip)
        self._falseticker_checks.pop(ip, None)
        if hold:
            self.bad_until_ns[ip] = now_ns + _BAD_HOLD_NS


def bad_reason(
    association: NtpAssociation, selection_state: str, falseticker_checks: int
) -> tuple[str | None, int]:
    """(Why a source is bad and should be replaced, or None; the falseticker checks in a row
    counting this one).  Shared by pools and sources named by host name (``named_server``)."""
    if association.stopped:
        return association.unusable_reason or "demobilized", 0
    if (
        association.online  # offline, its reach is cleared, but nothing was learnt
        and association.reach == 0
        and association.stats.packets_sent >= _UNREACHABLE_POLLS
    ):
        return _no_valid_reply(association), 0
    if selection_state != "falseticker":
        return None, 0
    seen = falseticker_checks + 1
    return ("falseticker" if seen >= _FALSETICKER_CHECKS else None), seen


def _no_valid_reply(association: NtpAssociation) -> str:
    """Why the last ``_UNREACHABLE_POLLS`` polls gave no valid reply, as the log says it: a
    server that answered every time but is unsynchronized is not "unanswered" (QA s19
    hunt-client F8); replies dropped for other reasons are named with their counts."""
    if association.server_unsynchronized:
        return "server unsynchronized (it answers with stratum 0 or 16, or a leap alarm)"
    drops = association.stats.drops_since_reply
    if drops:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(drops.items()))
        return f"no valid reply to the last {_UNREACHABLE_POLLS} requests (dropped: {counts})"
    return f"unreachable (the last {_UNREACHABLE_POLLS} requests unanswered)"
