"""Source names as tsyncctl selectors (``config.py``'s step 2 for ``[[source]] name``).

tsyncctl picks sources by name, by address or by an IP network holding their address
(``offline``, ``online``, ``minpoll`` ..., ``daemon_connectivity.select_associations``), and
``delete`` takes a name.  A source named after another source's address would make such a
selector pick both, or the wrong one, so a name must not pick another source by its address;
a name that is the source's own address (the default name) is always fine.  ``tsyncctl add``
checks the same against the running sources and pool members (``config.parse_source``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING, Any

from tsyncd.config_fields import Endpoint, _toml_repr, endpoint_identity, parse_endpoint

if TYPE_CHECKING:
    from tsyncd.config import SourceConfig

__all__ = ["check_selectors", "selector_clash"]

Report = Callable[[str, object, str], None]  # (key path, value, expected)
_Tables = Sequence[tuple[str, Mapping[str, object], Any]]  # config._Parsed of [[source]]


def _selects(name: str, address: Endpoint, written: str | None) -> bool:
    """Whether ``name``, as a tsyncctl selector, picks the source at ``address`` (``written``
    so in its table, if known) by that address: it is the address as written or as shown, or
    an IP address or network holding it."""
    if name in (written, str(address)):
        return True
    try:
        return ip_address(address.host) in ip_network(name.strip("[]"), strict=False)
    except ValueError:  # not an IP network, or a host name not yet resolved
        return False


def _is_own_address(source: SourceConfig) -> bool:
    """Whether ``source``'s name is its own address: its default name, or written so."""
    try:
        named = parse_endpoint(source.name, source.address.port)
    except ValueError:
        return False
    return endpoint_identity(named) == endpoint_identity(source.address)


def selector_clash(
    source: SourceConfig, other: SourceConfig | Endpoint, written: str | None = None
) -> bool:
    """Whether ``source``'s name, as a tsyncctl selector, also picks ``other`` (another source,
    or a pool member's address; ``written``: ``other``'s address as written, if known), so
    that ``tsyncctl offline NAME`` could not tell the two apart: the name is ``other``'s
    address, or an IP address or network holding it.  A name that is the source's own address
    is never a clash: an IP selector picks every source at that IP anyway.

    Ask it both ways round for a new source against the running ones (``parse_source`` does
    for ``tsyncctl add``; a reload's file sources against those added at run time are the
    daemon's to ask); equal names are a duplicate name, checked apart."""
    address = other if isinstance(other, Endpoint) else other.address
    return not _is_own_address(source) and _selects(source.name, address, written)


def name_clash_expectation(who: str) -> str:
    """What a source's name must be when, as a selector, it would pick ``who`` too: one
    wording for the config file, ``tsyncctl add`` and a reload against running sources."""
    return f"a name that is no other source's address (as a tsyncctl selector it picks {who} too)"


def name_clash_error(name: str, who: str) -> str:
    """The whole error for ``name`` picking ``who`` too, as the config check words errors."""
    return f"source.name = {_toml_repr(name)}: expected {name_clash_expectation(who)}"


def check_selectors(
    tables: _Tables, report: Report, running: Mapping[Endpoint | SourceConfig, str] | None = None
) -> None:
    """No source's name may pick another source by its address (``selector_clash``): among
    ``tables`` (key path, raw table, ``SourceConfig``), and between them and ``running`` (for
    ``tsyncctl add``: the running sources and pool members' addresses -> who)."""
    others: list[tuple[SourceConfig | Endpoint, str | None, str]] = [
        (source, str(raw["address"]), f"{where}, address = {_toml_repr(raw['address'])}")
        for where, raw, source in tables
    ]
    others += [(other, None, who) for other, who in (running or {}).items()]
    for where, raw, source in tables:
        clash = next(
            (
                who
                for other, written, who in others
                if other is not source
                # An equal name is a duplicate name, which is reported apart.
                and (isinstance(other, Endpoint) or other.name != source.name)
                and selector_clash(source, other, written)
            ),
            None,
        )
        if clash is not None:
            report(
                f"{where}.name",
                source.name,
                name_clash_expectation(clash),
            )
        for other, who in (running or {}).items():
            if not isinstance(other, Endpoint) and selector_clash(
                other, source, str(raw["address"])
            ):
                report(
                    f"{where}.address",
                    raw["address"],
                    f"an address no other source's name picks ({who} is named"
                    f" {_toml_repr(other.name)})",
                )
