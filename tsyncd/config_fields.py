"""The building blocks of tsyncd's config checking: errors that name their place, endpoint
parsing, and field parsers (one TOML value in, a typed value or ``_Invalid`` out).

``tsyncd/config.py`` assembles them into the per-section field tables and the two-step check
(see its theory of operation); this module knows nothing of tsyncd's sections.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Final

Network = IPv4Network | IPv6Network

# --- errors -----------------------------------------------------------------------------------


class _Missing(enum.Enum):
    """Marker for ``ConfigError.value`` when a required key is absent."""

    MISSING = "MISSING"


MISSING: Final = _Missing.MISSING

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_VALUE_TEXT_MAX = 100  # characters; long tables in an error are cut, the key path says where


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _toml_repr(value: object) -> str:
    """Show a value as it would be written in TOML, so users recognise what they typed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        inner = ", ".join(f"{_toml_key(str(k))} = {_toml_repr(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_repr(v) for v in value) + "]"
    return str(value)  # numbers, inf, nan and dates print as TOML writes them


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in a config file.

    ``key`` is the TOML path ("source[1].min-poll", 0-based index); ``""`` means the file as a
    whole (unreadable, bad TOML), and then ``value`` is the message.  ``value`` is ``MISSING``
    when a required key is absent.
    """

    file: Path
    key: str
    value: object
    expected: str

    def __str__(self) -> str:
        if not self.key:
            text = f"{self.file}: {self.value}"
            return f"{text}: expected {self.expected}" if self.expected else text
        if self.value is MISSING:
            return f"{self.file}: {self.key} is missing: expected {self.expected}"
        shown = _toml_repr(self.value)
        if len(shown) > _VALUE_TEXT_MAX:
            shown = shown[: _VALUE_TEXT_MAX - 3] + "..."
        return f"{self.file}: {self.key} = {shown}: expected {self.expected}"


class ConfigErrors(Exception):
    """Every problem found in one config file; ``str()`` gives one per line."""

    errors: tuple[ConfigError, ...]

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = tuple(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


# --- endpoints --------------------------------------------------------------------------------

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host (name or IP literal, without brackets) and a port."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("[") or not 0 <= self.port <= 65535:
            raise ValueError(f"bad endpoint host {self.host!r} or port {self.port}")

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def endpoint_identity(endpoint: Endpoint) -> tuple[str, int]:
    """What makes two endpoints the same: case-insensitive names, canonical IP literals."""
    try:
        host = str(ip_address(endpoint.host))
    except ValueError:
        host = endpoint.host.lower().removesuffix(".")
    return host, endpoint.port


def receives_at(
    bound: IPv4Address | IPv6Address, dual_stack: bool, to: IPv4Address | IPv6Address
) -> bool:
    """Whether a socket bound to ``bound`` (``dual_stack``: the IPv6 wildcard taking IPv4
    too) gets what is sent to ``to``; a wildcard ``to`` stands for every address of its
    family.  Existence only: where a wildcard and an exact address both match, the kernel
    hands the exact one the datagram or connection (``servers.keaccess`` picks it first).
    IPv4-mapped addresses must be given as IPv4 (``servers.responder.client_ip``)."""
    if bound == to:
        return True
    return bound.is_unspecified and (
        bound.version == to.version or (to.version == 4 and dual_stack)
    )


def _check_host(host: str) -> None:
    """Accept an IPv4 literal or an RFC 1123 host name (optional trailing dot)."""
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdigit():  # all-digit last label: only an IPv4 address makes sense
        try:
            IPv4Address(host)
        except ValueError:
            raise ValueError(f"{_toml_repr(host)} is not a valid IPv4 address") from None
        return
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{_toml_repr(host)} is not a valid host name")


def _parse_port(text: str) -> int:
    if not text:
        raise ValueError("missing port after ':'")
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"port {_toml_repr(text)} is not a number")
    port = int(text)
    if port > 65535:
        raise ValueError(f"port {port} is greater than 65535")
    return port


def parse_endpoint(text: str, default_port: int) -> Endpoint:
    """Parse "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 literal like "::1".

    A bare IPv6 literal cannot carry a port (its colons would be ambiguous); write "[::1]:123".
    Raises ``ValueError`` saying what is wrong.  Host names are checked for form only.
    """
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        try:
            IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_toml_repr(host)} in brackets is not an IPv6 address") from None
        if not rest:
            return Endpoint(host, default_port)
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {_toml_repr(rest)} after ']'")
        return Endpoint(host, _parse_port(rest[1:]))
    if text.count(":") > 1:
        try:
            IPv6Address(text)
        except ValueError:
            raise ValueError(
                f"{_toml_repr(text)} is not an IPv6 address (write [IPv6]:port to give a port)"
            ) from None
        return Endpoint(text, default_port)
    host, colon, port_text = text.partition(":")
    if not host:
        raise ValueError("missing host before ':'")
    _check_host(host)
    return Endpoint(host, _parse_port(port_text) if colon else default_port)


# --- field parsers ----------------------------------------------------------------------------


class _Invalid(Exception):
    """Raised by a field parser: no items if the whole value is wrong (the field's expected
    form says why), else one (key suffix, value, expected) per bad part, e.g. ("[2]", 5, ...)."""

    def __init__(self, *items: tuple[str, object, str]) -> None:
        super().__init__(items)
        self.items = items


@dataclass(frozen=True, slots=True)
class _Field:
    key: str  # kebab-case TOML key; the dataclass attribute is the snake_case of it
    parse: Callable[[object], Any]
    expected: str
    required: bool = False


def _simple_field(
    key: str,
    expected: str,
    valid: Callable[[Any], bool],
    convert: Callable[[Any], Any] = lambda value: value,
    required: bool = False,
) -> _Field:
    def parse(value: object) -> Any:
        if not valid(value):
            raise _Invalid()
        return convert(value)

    return _Field(key, parse, expected, required)


def _int_field(key: str, lo: int, hi: int, unit: str = "") -> _Field:
    # `type(...) is int`: bool is an int subclass, and TOML true must not pass as a number.
    expected = f"integer {lo}..{hi}" + (f" ({unit})" if unit else "")
    return _simple_field(key, expected, lambda v: type(v) is int and lo <= v <= hi)


def _seconds_field(key: str, lo: float, hi: float) -> _Field:
    expected = f"number of seconds {lo:g}..{hi:g}"

    def valid(v: object) -> bool:
        return type(v) in (int, float) and lo <= v <= hi  # type: ignore[operator]

    return _simple_field(key, expected, valid, float)


def _choice_field(key: str, *choices: str, required: bool = False) -> _Field:
    expected = "one of: " + ", ".join(map(_toml_repr, choices))
    return _simple_field(
        key, expected, lambda v: isinstance(v, str) and v in choices, required=required
    )


def _string_field(key: str, convert: Callable[[str], Any] = str, required: bool = False) -> _Field:
    def valid(v: object) -> bool:
        return isinstance(v, str) and v != "" and "\0" not in v

    return _simple_field(key, "non-empty string", valid, convert, required)


def _group_field(key: str) -> _Field:
    """A group: its name, or its GID as a number or a string (``0`` and ``"0"`` alike)."""

    def valid(v: object) -> bool:
        if type(v) is int:
            return 0 <= v < 2**32 - 1
        return isinstance(v, str) and v != "" and "\0" not in v

    return _simple_field(key, "group name or GID", valid, str)


def _name_field(key: str) -> _Field:
    """A name shown in tables and typed as a tsyncctl argument: printable (no newline, tab or
    other control character to break a table row) and not only spaces (nothing to type)."""

    def valid(v: object) -> bool:
        return isinstance(v, str) and v.strip() != "" and v.isprintable()

    return _simple_field(key, "non-empty string of printable characters, not only spaces", valid)


def _path_field(key: str, what: str) -> _Field:
    """A required file path (a non-empty string); existence is checked when it is opened."""
    field = _string_field(key, Path)
    return _Field(key, field.parse, f"{field.expected} ({what})", required=True)


def _endpoint_field(
    key: str,
    default_port: int,
    *,
    ip_only: bool,
    min_port: int = 0,
    required: bool = False,
    listen: bool = False,
) -> _Field:
    host = "IPv4" if ip_only else "host"
    ports = f"port {min_port}..65535, default {default_port}"
    expected = f"{host}[:port], IPv6 or [IPv6][:port] ({ports})"
    port_zero = "port 0 would bind a random port" if listen else "port 0 cannot be used"

    def parse(value: object) -> Endpoint:
        if not isinstance(value, str):
            raise _Invalid()
        try:
            endpoint = parse_endpoint(value, default_port)
        except ValueError as e:
            raise _Invalid(("", value, f"{expected}; {e}")) from None
        try:
            if ip_only:
                ip_address(endpoint.host)
        except ValueError:
            # Name the key this is for: listen, servers, broadcast-server all need an IP.
            reason = (
                f"{_toml_repr(endpoint.host)} is not an IP address "
                f"({key} takes an IP address, not a name)"
            )
            raise _Invalid(("", value, f"{expected}; {reason}")) from None
        if endpoint.port < min_port:
            raise _Invalid(("", value, f"{expected}; {port_zero}"))
        mapped = _ipv4_mapped(endpoint.host) if listen else None
        if mapped is not None:
            # An IPv6 socket bound to ::ffff:a.b.c.d is refused (EINVAL) unless it is
            # dual-stack, and then it only takes IPv4 to a.b.c.d: the IPv4 form says just that.
            written = Endpoint(mapped, endpoint.port) if "]:" in value else mapped
            reason = f"{_toml_repr(endpoint.host)} is an IPv4-mapped IPv6 address: write it as IPv4"
            raise _Invalid(("", value, f"{expected}; {reason}, {_toml_repr(str(written))}"))
        if listen:
            ip = ip_address(endpoint.host)
            kind = "multicast" if ip.is_multicast else "broadcast" if ip == _BROADCAST else ""
            if kind:  # no unicast client sends there, no TCP client connects there
                reason = (
                    f"{_toml_repr(endpoint.host)} is a {kind} address: {key} takes an address "
                    "of this host (or the wildcard)"
                )
                raise _Invalid(("", value, f"{expected}; {reason}"))
        return endpoint

    return _Field(key, parse, expected, required)


_BROADCAST: Final = IPv4Address("255.255.255.255")


def _listen_field(key: str, default_port: int) -> _Field:
    """An address of ours to bind: an IP literal and a port 1..65535 (port 0 would bind a
    random port), not IPv4-mapped IPv6 (refused for its IPv4 form)."""
    return _endpoint_field(key, default_port, ip_only=True, min_port=1, listen=True)


def _host_field(key: str) -> _Field:
    """A host name or IP literal (no port, no brackets), as NTS Server Negotiation sends it."""
    expected = "host name, IPv4 or IPv6 address (no port)"

    def parse(value: object) -> str:
        if not isinstance(value, str) or not value.isascii():
            raise _Invalid()
        try:
            ip = IPv6Address(value)
        except ValueError:
            pass
        else:
            # RFC 8915 §4.1.7: the Server record is an address a client can use as is: a
            # zone ID means nothing off this host, and an IPv4-mapped one is an IPv4 address.
            if ip.scope_id is not None:
                reason = f"{_toml_repr(value)} has a zone ID, which RFC 8915 leaves out"
                raise _Invalid(("", value, f"{expected}; {reason}"))
            if ip.ipv4_mapped is not None:
                reason = (
                    f"{_toml_repr(value)} is IPv4-mapped: write {_toml_repr(str(ip.ipv4_mapped))}"
                )
                raise _Invalid(("", value, f"{expected}; {reason}"))
            return value
        try:
            _check_host(value)
        except ValueError as e:
            raise _Invalid(("", value, f"{expected}; {e}")) from None
        return value

    return _Field(key, parse, expected)


def _ipv4_mapped(host: str) -> str | None:
    """The IPv4 address an IPv4-mapped IPv6 literal (``::ffff:a.b.c.d``) stands for, else
    None."""
    try:
        ip = ip_address(host)
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, IPv6Address) else None
    return None if mapped is None else str(mapped)


# Every address of both families: "all", an empty ``allow`` and chronyc's ``allow``/``deny``
# alone (``servers.responder.AccessList``).
ALL_NETWORKS: Final[tuple[Network, ...]] = (IPv4Network("0.0.0.0/0"), IPv6Network("::/0"))
_MAPPED: Final = IPv6Network("::ffff:0:0/96")
NETWORK: Final = (
    'IP address or CIDR network (e.g. "192.0.2.0/24", "2001:db8::/32"; as in chrony, "192.0.2" '
    'is 192.0.2.0/24 and "0/0" every IPv4 address)'
)
# chrony's short IPv4 network (chrony.conf(5), allow): 1 to 3 numbers, the network's leading
# octets, and /BITS or else 8 bits per number: "10" is 10.0.0.0/8, "0/0" 0.0.0.0/0.
_SHORT_IPV4: Final = re.compile(r"(?P<octets>[0-9]+(?:\.[0-9]+){0,2})(?:/(?P<bits>[0-9]+))?")
_NETWORK_ENTRY: Final = f'{NETWORK} or "all"'
_NAME_IN_CONFIG: Final = (
    "write its address (tsyncd would resolve it in the loop that serves time, at start and at "
    "every reload; tsyncctl allow and deny take host names, as chronyc does)"
)


class HostName(ValueError):
    """An allow/deny entry that is a host name, which chrony takes for its address.  Only
    ``tsyncctl`` resolves it (as chronyc does): tsyncd reads its config, and answers
    ``allow``/``deny``, in the event loop that serves time, where a slow DNS answer would
    stall the NTP server and every source, at start and at each reload."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{_toml_repr(name)} is a host name")
        self.name = name


def is_host_name(text: str) -> bool:
    """Whether ``text`` is an RFC 1123 host name (not an IP address or a network)."""
    if "/" in text:
        return False
    try:
        _check_host(text)
    except ValueError:
        return False
    return not text.removesuffix(".").split(".")[-1].isdigit()  # "10.2.3.4.5": no name


def parse_network(entry: object) -> Network:
    """One allow/deny network as chrony writes it: an IP address, a CIDR network, or
    chrony's short IPv4 network ("10.2" = 10.2.0.0/16, "0/0"; host bits ignored, as chrony
    does), never inside ::ffff:0:0/96 and without a zone ID; ValueError if not, whose text
    says what to write instead for an IPv4-mapped or zoned one (empty for any other: the
    caller says ``NETWORK``), and ``HostName`` for a host name (never resolved here).  The
    config's entries and ``tsyncctl allow``/``deny`` alike, so a chronyc user's words work
    in both."""
    if not isinstance(entry, str):
        raise ValueError()
    try:
        network: Network = ip_network(entry, strict=False)
    except ValueError:
        try:
            network = _short_ipv4_network(entry)
        except ValueError:
            if is_host_name(entry):
                raise HostName(entry) from None
            raise
    if "%" in entry:  # a zone ID: ip_network keeps it, or drops it when it masks host bits
        raise ValueError(without_zone(entry))
    if isinstance(network, IPv6Network) and network.subnet_of(_MAPPED):
        raise ValueError(_ipv4_form(network))
    return network


def _short_ipv4_network(entry: str) -> IPv4Network:
    """chrony's short IPv4 network (``_SHORT_IPV4``); ValueError if ``entry`` is not one."""
    short = _SHORT_IPV4.fullmatch(entry)
    if short is None:
        raise ValueError()
    octets = [int(text) for text in short["octets"].split(".")]
    if max(octets) > 255:
        raise ValueError()
    bits = 8 * len(octets) if short["bits"] is None else int(short["bits"])
    address = IPv4Address(bytes(octets + [0] * (4 - len(octets))))
    try:
        return IPv4Network((address, bits), strict=False)
    except ValueError:  # above 32 bits: the caller says what is expected
        raise ValueError() from None


def without_zone(entry: str) -> str:
    """What an allow/deny entry or accheck address with a zone ID (``fe80::1%eth0``) expected:
    a client is matched by its address alone, on every interface, so a rule cannot keep to
    one zone, and ignoring the zone would give a wider rule than was written (chronyc
    refuses it too)."""
    address, _, rest = entry.partition("%")
    _, slash, bits = rest.partition("/")
    return (
        "an address without a zone ID (a rule holds an address on every interface, so the zone "
        f"would be ignored): write {_toml_repr(address + slash + bits)}"
    )


def _networks_field(key: str) -> _Field:
    def parse(value: object) -> tuple[Network, ...]:
        # A single string is accepted as a one-entry list, so `allow = "all"` reads naturally.
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, list):
            raise _Invalid()
        networks: list[Network] = []
        bad: list[tuple[str, object, str]] = []
        for i, entry in enumerate(entries):
            suffix = "" if isinstance(value, str) else f"[{i}]"
            if entry == "all":
                networks.extend(ALL_NETWORKS)
                continue
            try:
                networks.append(parse_network(entry))
            except HostName as exc:
                bad.append((suffix, entry, f"{_NETWORK_ENTRY}; {exc}: {_NAME_IN_CONFIG}"))
            except ValueError as exc:
                bad.append((suffix, entry, str(exc) or _NETWORK_ENTRY))
        if bad:
            raise _Invalid(*bad)
        return tuple(networks)

    return _Field(key, parse, f"array of strings, each an {_NETWORK_ENTRY}")


def _ipv4_form(network: IPv6Network) -> str:
    """What an allow/deny entry inside ::ffff:0:0/96 expected: clients are matched as IPv4
    (a dual-stack socket's ::ffff:a.b.c.d too), so such an entry would never match."""
    ipv4 = IPv4Network((network.network_address.ipv4_mapped, network.prefixlen - 96))
    text = str(ipv4.network_address) if ipv4.prefixlen == 32 else str(ipv4)
    return (
        "an IPv4 network for IPv4 clients (they are matched as IPv4, so an IPv4-mapped entry "
        f"never matches): write {_toml_repr(text)}"
    )


def _endpoints_field(key: str, default_port: int) -> _Field:
    one = _endpoint_field(key, default_port, ip_only=True, min_port=1)

    def parse(value: object) -> tuple[Endpoint, ...]:
        if not isinstance(value, list):
            raise _Invalid()
        endpoints: list[Endpoint] = []
        bad: list[tuple[str, object, str]] = []
        for i, entry in enumerate(value):
            try:
                endpoints.append(one.parse(entry))
            except _Invalid as e:
                bad.extend((f"[{i}]", v, x) for _, v, x in e.items or (("", entry, one.expected),))
        if bad:
            raise _Invalid(*bad)
        return tuple(endpoints)

    return _Field(key, parse, f"array of strings, each an {one.expected}")
