"""tsyncd's TOML configuration: parse, check, and report every mistake at once.

Theory of operation
-------------------
Loading runs in steps, the first two as ntpd-rs's, but unlike it every error names its place:

1. *Shape*: each TOML table is read against a small field table (``_Field``: kebab-case key,
   parser, expected form; the parsers live in ``config_fields.py``).  A parser turns one TOML
   value into a typed value or raises ``_Invalid``; the table walker records the error and
   carries on, so one run finds every wrong type, out-of-range number, unknown key and missing
   required key.  Each table becomes a frozen dataclass of the keys that parsed, a wrong key
   counting as unset (a table missing a required key, such as a source's mode, becomes none).
2. *Cross-field checks* run on those dataclasses, so a wrong ``dscp`` does not hide a
   ``count`` on a server: min-poll <= max-poll, ``count`` only on pools, no source listed
   twice, no two listeners overlapping on a port (``config_listen.py``).  A key that step 1
   found wrong gets no second error here (``_Report``), and "is it set?" is asked of the
   table as written, so a wrong value is not a missing one.

3. *The host* (``config_host.py``): what the file names must be there for the daemon to
   start: ``[control]`` groups, the measurement logs' directory, PEM files.  Looked at, never
   changed (no directory is made), so reloads and ``tsyncctl add`` run them too.

Every problem becomes a ``ConfigError(file, key, value, expected)``; if there are any,
``ConfigErrors`` is raised with all of them: step 1's in file order, then step 2's and 3's.
Nothing here uses ``assert`` (``python -O`` strips it) and nothing touches the network: host
names are checked for form, not resolved.

Relative paths (``control.socket``) are kept as written, so they are relative to the daemon's
working directory; the demo configs rely on that.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Final, Literal

from tsyncd.config_broadcast import check_broadcast, check_broadcast_source, is_multicast
from tsyncd.config_fields import (
    MISSING as MISSING,
)
from tsyncd.config_fields import (
    ConfigError as ConfigError,
)
from tsyncd.config_fields import (
    ConfigErrors as ConfigErrors,
)
from tsyncd.config_fields import (
    Endpoint as Endpoint,
)
from tsyncd.config_fields import (
    Network,
    _choice_field,
    _endpoint_field,
    _endpoints_field,
    _Field,
    _group_field,
    _host_field,
    _int_field,
    _Invalid,
    _listen_field,
    _name_field,
    _networks_field,
    _path_field,
    _seconds_field,
    _simple_field,
    _string_field,
    _toml_key,
)
from tsyncd.config_fields import (
    endpoint_identity as _endpoint_identity,
)
from tsyncd.config_fields import (
    parse_endpoint as parse_endpoint,
)
from tsyncd.servers.clientlog import DEFAULT_MAX_CLIENTS, RateLimit

NTP_PORT: Final = 123
METRICS_PORT: Final = 9975
NTS_KE_PORT: Final = 4460
POLL_MIN: Final = -7  # log2 s: 1/128 s, chrony's lower limit (sub-second polls for LANs)
POLL_MAX: Final = 24  # log2 s: about 194 days, chrony's upper limit
TSQ_DATAGRAM_PORT: Final = 443  # the reference's default for both TSQ servers
TSQ_STREAM_PORT: Final = 8443  # where the public reference host runs its stream server
NTS_KEY_REFRESH_S: Final = 28 * 86400  # NTS-KE again once keys are 4 weeks old (chrony 4.3)


# --- the typed configuration ------------------------------------------------------------------

ClockMode = Literal["system", "measure"]
LogLevel = Literal["debug", "info", "warning", "error"]
SourceMode = Literal["server", "pool", "peer", "broadcast", "nts", "tsq"]
TsqTransport = Literal["stream", "datagram"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockConfig:
    """[clock]: which clock we discipline."""

    mode: ClockMode = "system"  # "measure": never adjust the clock, only measure and serve
    drift_file: Path | None = None  # frequency estimate kept across restarts (atomic writes)


@dataclass(frozen=True, slots=True, kw_only=True)
class SynchronizationConfig:
    """[synchronization]: how sources turn into a system time."""

    local_stratum: int | None = None  # 1..15: serve our own clock at this stratum while unsynced
    min_sources: int = 1  # 1..16 agreeing sources needed before we trust any
    max_distance: float = 1.0  # s: sources with a larger root distance are not selectable
    step_threshold: float = 0.128  # s: step (not slew) offsets above this ...
    step_limit: int = 3  # ... in the first N clock updates only (-1: always; 0: never)
    panic_threshold: float | None = 1000.0  # s: refuse larger offsets after the first update
    leap_seconds_file: Path | None = None  # leap-seconds.list: leaps to announce (chrony's
    # leapseclist); read with the config (Config.leap_table)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceConfig:
    """One [[source]]: an NTP server, or a pool name that expands to several."""

    mode: SourceMode
    address: Endpoint  # default port 123
    iburst: bool = False  # send a quick burst of requests at start
    min_poll: int = 6  # log2 s
    max_poll: int = 10  # log2 s
    count: int = 4  # pool only: how many of its addresses to use
    name: str  # the name key, else the address text as written; unique; how control and
    # metrics refer to the source
    xleave: bool = False  # ask for interleaved mode (RFC 9769); falls back to basic; not tsq
    dscp: int = 0  # DSCP code point of our requests (0..63; 46 = EF); tsq: its QUIC packets
    local_port: int = NTP_PORT  # peer only: our UDP port, where the peer sends its packets
    broadcast_delay: float = 0.004  # broadcast only: assumed round trip to the server, s
    transport: TsqTransport = "datagram"  # tsq only: the variant (the port decides, no fallback)
    certificate_authority: Path | None = None  # tsq/nts: PEM CA file (default: system store)
    broadcast_calibrate: bool = False  # broadcast only: measure the round trip (client volley)
    broadcast_server: Endpoint | None = None  # broadcast only: the sender and its unicast port
    broadcast_interface: str | None = None  # multicast only: join the group on this interface
    key: int | None = None  # server/pool/peer: sign with, and demand, this [keys] key (RFC 5905)
    noselect: bool = False  # measured and shown, never selected nor combined (chrony's noselect)
    offline: bool = False  # start offline: no polls until tsyncctl online (chrony's offline)
    prefer: bool = False  # preferred in selection over sources without it (chrony's prefer)
    trust: bool = False  # always true unless other trust sources disagree (chrony's trust)
    require: bool = False  # no clock update unless a require source is selectable (chrony's)
    max_delay: float = 3.0  # s: samples with a longer round trip are dropped (chrony's maxdelay)
    offset: float = 0.0  # s added to every measured offset: a known asymmetry (chrony's offset)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """One [[server]]: an NTP server socket and who may use it."""

    listen: Endpoint = Endpoint("::", NTP_PORT)
    allow: tuple[Network, ...] = ()  # empty: everybody not denied
    deny: tuple[Network, ...] = ()
    rate_limit: RateLimit | None = None  # None: no rate limiting (chrony's default too)
    kod: bool = False  # KoD RATE/DENY/RSTR instead of silence for limited or denied clients
    interleaved: bool = True  # RFC 9769 interleaved mode for clients that ask for it
    max_clients: int = DEFAULT_MAX_CLIENTS  # client log bound (per worker)
    workers: int | None = None  # receive worker processes; 0: the event loop; None: per CPU
    dscp: int = 0  # DSCP code point of our responses (0..63)
    ipv6_only: bool | None = None  # IPV6_V6ONLY; None: only "::" is dual-stack
    symmetric_passive: bool = False  # answer symmetric active peers in mode 2


@dataclass(frozen=True, slots=True, kw_only=True)
class TsqServerConfig:
    """One [[tsq-server]]: a TSQ (time over QUIC) server of one variant on one port."""

    transport: TsqTransport
    listen: Endpoint = Endpoint("::", TSQ_DATAGRAM_PORT)
    certificate_chain_path: Path
    private_key_path: Path
    max_connections_per_client: int = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class NtsKeServerConfig:
    """One [[nts-ke-server]]: an NTS-KE (RFC 8915) TLS listener handing out cookies."""

    listen: Endpoint = Endpoint("::", NTS_KE_PORT)
    certificate_chain_path: Path  # PEM: our certificate, then intermediates
    private_key_path: Path  # PEM
    ntp_server: str | None = None  # sent to clients (Server Negotiation); None: this host
    ntp_port: int | None = None  # sent to clients; None: our first [[server]]'s port, else 123
    rate_limit: RateLimit | None = None  # NTS-KE connections per client IP (chrony's ntsratelimit)
    # Clients allowed to connect, as [[server]]'s lists; both None (neither key written): the
    # rules of the [[server]] each client's NTP will reach (``servers.keaccess``).
    allow: tuple[Network, ...] | None = None
    deny: tuple[Network, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysetConfig:
    """[keyset]: NTS cookie master keys (rotating; one file can serve a fleet of servers)."""

    key_storage_path: Path | None = None  # None: random keys kept in memory only
    key_rotation_interval: int = 86400  # s between key rotations


@dataclass(frozen=True, slots=True, kw_only=True)
class NtsClientConfig:
    """[nts-client]: what NTS sources keep across restarts (chrony's ``ntsdumpdir``), and how
    long they use one NTS-KE's keys (chrony's ``ntsrefresh``)."""

    cookie_storage_path: Path | None = None  # directory: one file per NTS-KE server; None: none
    key_refresh_interval: int = NTS_KEY_REFRESH_S  # s: NTS-KE again once the keys are this old


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    """[control]: the JSON-RPC Unix socket."""

    socket: Path = Path("/run/tsyncd/tsyncd.sock")  # relative: to the working directory
    group: str | None = None  # may use read-only methods (the socket file's group)
    admin_group: str | None = None  # may use changing methods, besides uid 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """[metrics]: the Prometheus exporter."""

    listen: Endpoint | None = None  # None: exporter off; default port 9975


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastConfig:
    """One [[broadcast]]: send our time to a broadcast address (RFC 8633: trusted LANs only)."""

    address: Endpoint  # IPv4 broadcast address or multicast group, port 123 by default
    interval: float = 64.0  # s between packets
    dscp: int = 0
    interface: str | None = None  # multicast: send on this interface (default: by route)
    ttl: int = 1  # multicast: IP TTL / IPv6 hop limit (1: this link only)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysConfig:
    """[keys]: symmetric keys (RFC 5905 MAC) for sources' ``key`` and for clients that sign."""

    file: Path | None = None  # chrony's keyfile format (tsyncd/symkey.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverConfig:
    """[resolver]: how source names are resolved."""

    servers: tuple[Endpoint, ...] = ()  # DNS servers to ask directly; empty: getaddrinfo


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """[log]: the message log, and the measurement logs (chrony's logdir and log)."""

    level: LogLevel = "info"
    directory: Path | None = None  # where the measurement logs go (made if missing)
    measurements: bool = False  # measurements.log: every sample of every source
    statistics: bool = False  # statistics.log: each source's clock filter after a sample
    tracking: bool = False  # tracking.log: every clock update


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A whole, checked configuration file."""

    path: Path
    clock: ClockConfig = ClockConfig()
    synchronization: SynchronizationConfig = SynchronizationConfig()
    sources: tuple[SourceConfig, ...] = ()
    servers: tuple[ServerConfig, ...] = ()
    control: ControlConfig = ControlConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    tsq_servers: tuple[TsqServerConfig, ...] = ()
    nts_ke_servers: tuple[NtsKeServerConfig, ...] = ()
    keyset: KeysetConfig = KeysetConfig()
    resolver: ResolverConfig = ResolverConfig()
    nts_client: NtsClientConfig = NtsClientConfig()
    broadcasts: tuple[BroadcastConfig, ...] = ()
    keys: KeysConfig = KeysConfig()
    # The keys of [keys] file, read when the config is checked: key ID -> SymmetricKey.
    symmetric_keys: Mapping[int, Any] = field(default_factory=dict, compare=False, repr=False)
    # [synchronization] leap-seconds-file, read when the config is checked (a LeapTable).
    leap_table: Any = field(default=None, compare=False, repr=False)


# --- step 1: field tables ---------------------------------------------------------------------
_MAX_SOCKET_PATH: Final = 107  # bytes of a Unix socket's path (sun_path, NUL excluded)
_RATE_LIMIT_KEYS: Final = (
    ("interval", "interval_log2", -4, 12, "log2 seconds between requests on average"),
    ("burst", "burst", 1, 255, "requests a client may send at once"),
    ("leak", "leak_log2", 0, 4, "log2: limited requests still answered 1 in 2**leak, none with 0"),
)
_RATE_LIMIT_EXPECTED: Final = (
    "table with optional keys interval, burst, leak (e.g. { interval = 3, burst = 8, leak = 2 "
    "}), as chrony's ratelimit"
)


def _rate_limit_field(key: str) -> _Field:
    def parse(value: object) -> RateLimit:
        if not isinstance(value, Mapping):
            raise _Invalid()
        known = {k: (attr, lo, hi, unit) for k, attr, lo, hi, unit in _RATE_LIMIT_KEYS}
        values: dict[str, int] = {}
        bad: list[tuple[str, object, str]] = []
        for sub, v in value.items():
            spec = known.get(sub)
            if spec is None:
                bad.append((f".{_toml_key(sub)}", v, "key to be one of: " + ", ".join(known)))
                continue
            attr, lo, hi, unit = spec
            if type(v) is not int or not lo <= v <= hi:
                bad.append((f".{sub}", v, f"integer {lo}..{hi} ({unit})"))
                continue
            values[attr] = v
        if bad:
            raise _Invalid(*bad)
        return RateLimit(**values)

    return _Field(key, parse, _RATE_LIMIT_EXPECTED)


_CLOCK: Final = (_choice_field("mode", "system", "measure"), _string_field("drift-file", Path))
_SYNCHRONIZATION: Final = (
    _int_field("local-stratum", 1, 15),
    _int_field("min-sources", 1, 16),
    _seconds_field("max-distance", 0.001, 16.0),
    _seconds_field("step-threshold", 0.0, 1e6),
    _int_field("step-limit", -1, 1_000_000, "clock updates; -1: always"),
    _seconds_field("panic-threshold", 0.0, 1e9),
    _string_field("leap-seconds-file", Path),
)
_SOURCE: Final = (
    _choice_field("mode", "server", "pool", "peer", "broadcast", "nts", "tsq", required=True),
    _endpoint_field("address", NTP_PORT, ip_only=False, min_port=1, required=True),
    _simple_field("iburst", "true or false", lambda v: isinstance(v, bool)),
    _int_field("min-poll", POLL_MIN, POLL_MAX, "log2 seconds"),
    _int_field("max-poll", POLL_MIN, POLL_MAX, "log2 seconds"),
    _int_field("count", 1, 16, "addresses to use from the pool"),
    _simple_field("xleave", "true or false", lambda v: isinstance(v, bool)),
    _int_field("dscp", 0, 63, "DSCP code point"),
    _int_field("local-port", 1, 65535, "UDP port"),
    _seconds_field("broadcast-delay", 0.0, 1.0),
    _choice_field("transport", "stream", "datagram"),
    _string_field("certificate-authority", Path),
    _simple_field("broadcast-calibrate", "true or false", lambda v: isinstance(v, bool)),
    _endpoint_field("broadcast-server", 0, ip_only=True),
    _string_field("broadcast-interface"),
    _simple_field("noselect", "true or false", lambda v: isinstance(v, bool)),
    _simple_field("prefer", "true or false", lambda v: isinstance(v, bool)),
    _simple_field("trust", "true or false", lambda v: isinstance(v, bool)),
    _simple_field("require", "true or false", lambda v: isinstance(v, bool)),
    _int_field("key", 1, 0xFFFFFFFF, "a key ID of [keys] file"),
    _simple_field("offline", "true or false", lambda v: isinstance(v, bool)),
    _name_field("name"),
    _seconds_field("max-delay", 1e-9, 1000.0),
    _seconds_field("offset", -1.0, 1.0),
)
_SERVER: Final = (
    _listen_field("listen", NTP_PORT),
    _networks_field("allow"),
    _networks_field("deny"),
    _rate_limit_field("rate-limit"),
    _simple_field("kod", "true or false", lambda v: isinstance(v, bool)),
    _simple_field("interleaved", "true or false", lambda v: isinstance(v, bool)),
    _int_field("max-clients", 1, 16_777_216, "clients remembered per worker"),
    _int_field("workers", 0, 64, "receive processes; 0: serve from the main event loop"),
    _int_field("dscp", 0, 63, "DSCP code point"),
    _simple_field("ipv6-only", "true or false", lambda v: isinstance(v, bool)),
    _simple_field("symmetric-passive", "true or false", lambda v: isinstance(v, bool)),
)
_TSQ_SERVER: Final = (
    _choice_field("transport", "stream", "datagram", required=True),
    _listen_field("listen", TSQ_DATAGRAM_PORT),
    _path_field("certificate-chain-path", "PEM file: the certificate, then its chain"),
    _path_field("private-key-path", "PEM file"),
    _int_field("max-connections-per-client", 1, 4096),
)
_NTS_KE_SERVER: Final = (
    _listen_field("listen", NTS_KE_PORT),
    _string_field("certificate-chain-path", Path, required=True),
    _string_field("private-key-path", Path, required=True),
    _host_field("ntp-server"),
    _int_field("ntp-port", 1, 65535),
    _rate_limit_field("rate-limit"),
    _networks_field("allow"),
    _networks_field("deny"),
)
_KEYSET: Final = (
    _string_field("key-storage-path", Path),
    _int_field("key-rotation-interval", 60, 365 * 86400, "seconds"),
)
_NTS_CLIENT: Final = (
    _string_field("cookie-storage-path", Path),
    _int_field("key-refresh-interval", 60, 2**31 - 1, "seconds"),  # at most chrony's maximum
)
_CONTROL: Final = (
    _string_field("socket", Path),
    _group_field("group"),
    _group_field("admin-group"),
)
_METRICS: Final = (_listen_field("listen", METRICS_PORT),)
_LOG: Final = (
    _choice_field("level", "debug", "info", "warning", "error"),
    _string_field("directory", Path),
    _simple_field("measurements", "true or false", lambda v: isinstance(v, bool)),
    _simple_field("statistics", "true or false", lambda v: isinstance(v, bool)),
    _simple_field("tracking", "true or false", lambda v: isinstance(v, bool)),
)


_RESOLVER: Final = (_endpoints_field("servers", 53),)
_KEYS: Final = (_string_field("file", Path),)
_BROADCAST: Final = (
    _endpoint_field("address", NTP_PORT, ip_only=True, min_port=1, required=True),
    _seconds_field("interval", 1 / 128, 86400.0),
    _int_field("dscp", 0, 63, "DSCP code point"),
    _string_field("interface"),
    _int_field("ttl", 1, 255, "multicast hops"),
)


def _build_nts_ke_server(values: dict[str, Any], raw: Mapping[str, object]) -> NtsKeServerConfig:
    # One list written makes the listener's own rules, the other list empty ([[server]]'s
    # defaults); none written leaves both None: the rules of the server its clients go to.
    if "allow" in raw or "deny" in raw:
        values.setdefault("allow", ())
        values.setdefault("deny", ())
    return NtsKeServerConfig(**values)


def _build_source(values: dict[str, Any], raw: Mapping[str, object]) -> SourceConfig:
    # An explicit min-poll above the default max-poll (or max-poll below the default min-poll)
    # moves the other, unset bound along, as chrony does; two explicit bounds are checked later.
    if "max-poll" not in raw:
        values["max_poll"] = max(values.get("min_poll", 6), 10)
    if "min-poll" not in raw:
        values["min_poll"] = min(values.get("max_poll", 10), 6)
    if values.get("mode") == "tsq" and parse_endpoint(str(raw["address"]), 0).port == 0:
        # No port written: the reference's convention for the variant (shared/specs/tsq.md §1).
        port = TSQ_STREAM_PORT if values.get("transport") == "stream" else TSQ_DATAGRAM_PORT
        values["address"] = Endpoint(values["address"].host, port)
    if values.get("mode") == "nts":
        # An NTS source names its NTS-KE server, whose default port is 4460, not 123.
        values["address"] = parse_endpoint(str(raw["address"]), NTS_KE_PORT)
    server = values.get("broadcast_server")
    if server is not None and server.port == 0:  # no port written: the broadcasts' port
        values["broadcast_server"] = Endpoint(server.host, values["address"].port)
    return SourceConfig(name=values.pop("name", None) or str(raw["address"]), **values)


@dataclass(frozen=True, slots=True)
class _Section:
    fields: tuple[_Field, ...]
    build: Callable[[dict[str, Any], Mapping[str, object]], Any]
    array: bool = False  # [[name]], an array of tables


def _plain(cls: Callable[..., Any]) -> Callable[[dict[str, Any], Mapping[str, object]], Any]:
    return lambda values, _raw: cls(**values)


_SECTIONS: Final = {
    "clock": _Section(_CLOCK, _plain(ClockConfig)),
    "synchronization": _Section(_SYNCHRONIZATION, _plain(SynchronizationConfig)),
    "source": _Section(_SOURCE, _build_source, array=True),
    "server": _Section(_SERVER, _plain(ServerConfig), array=True),
    "tsq-server": _Section(_TSQ_SERVER, _plain(TsqServerConfig), array=True),
    "control": _Section(_CONTROL, _plain(ControlConfig)),
    "metrics": _Section(_METRICS, _plain(MetricsConfig)),
    "log": _Section(_LOG, _plain(LogConfig)),
    "nts-ke-server": _Section(_NTS_KE_SERVER, _build_nts_ke_server, array=True),
    "keyset": _Section(_KEYSET, _plain(KeysetConfig)),
    "resolver": _Section(_RESOLVER, _plain(ResolverConfig)),
    "broadcast": _Section(_BROADCAST, _plain(BroadcastConfig), array=True),
    "nts-client": _Section(_NTS_CLIENT, _plain(NtsClientConfig)),
    "keys": _Section(_KEYS, _plain(KeysConfig)),
}


class _Report(list[tuple[str, object, str]]):
    """(key path, value, expected) of each error found so far, in file order.

    ``invalid`` holds the key paths step 1 found wrong ("source[0].count"): a later check that
    blames one of them again adds nothing, as the key's own error says what to fix first."""

    def __init__(self) -> None:
        super().__init__()
        self.invalid: set[str] = set()

    def add(self, key: str, value: object, expected: str) -> None:
        if key not in self.invalid:
            self.append((key, value, expected))


def _join(where: str, key: str) -> str:
    return f"{where}.{_toml_key(key)}" if where else _toml_key(key)


def _parse_table(
    raw: Mapping[str, object], where: str, section: _Section, report: _Report
) -> Any | None:
    """Step 1 for one table, each problem reported: its dataclass, built from the keys that
    parsed as if the wrong ones were not there, so that step 2 still checks what is right (one
    run finds every mistake); None when a required key is wrong or missing, as the table then
    has nothing to check against (no mode, no address)."""
    known = {f.key: f for f in section.fields}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spec = known.get(key)
        if spec is None:
            report.add(_join(where, key), value, "key to be one of: " + ", ".join(known))
        else:
            try:
                values[spec.key.replace("-", "_")] = spec.parse(value)
                continue
            except _Invalid as e:
                for suffix, bad, expected in e.items or (("", value, spec.expected),):
                    report.add(_join(where, key) + suffix, bad, expected)
        report.invalid.add(_join(where, key))
    complete = True
    for spec in section.fields:
        if spec.required and spec.key not in raw:
            report.add(_join(where, spec.key), MISSING, spec.expected)
        if spec.required and spec.key.replace("-", "_") not in values:
            complete = False
    if not complete:
        return None
    valid = {key: value for key, value in raw.items() if _join(where, key) not in report.invalid}
    return section.build(values, valid)


# --- step 2: cross-field checks ---------------------------------------------------------------

# (key path, raw table as written, dataclass): the raw table keeps the keys step 1 found wrong,
# so that "is it set?" is answered as written ("count" in raw); their values are the defaults.
_Parsed = list[tuple[str, Mapping[str, object], Any]]


def _source_identity(source: SourceConfig) -> tuple[object, ...]:
    """What makes two sources the same: their address, and for a source on a multicast group
    also the server it listens to (several servers may send to one group)."""
    identity: tuple[object, ...] = _endpoint_identity(source.address)
    if source.broadcast_server is not None and is_multicast(source.address.host):
        identity += _endpoint_identity(source.broadcast_server)
    return identity


def _check_sources(
    parsed: _Parsed,
    report: _Report,
    in_use: Mapping[tuple[object, ...], str] | None = None,
    keys: Mapping[int, object] | None = None,
) -> None:
    """``in_use``: addresses already taken (identity -> who), for sources added at run time;
    ``keys``: the symmetric keys a source's ``key`` may name (None: no [keys] file)."""
    first_use: dict[tuple[object, ...], str] = dict(in_use or {})
    names: dict[str, str] = {}  # source name -> where it was first given
    for where, raw, source in parsed:
        if source.key is not None:
            if source.mode not in ("server", "pool", "peer"):
                report.add(
                    f"{where}.key", source.key, 'no key unless mode = "server", "pool" or "peer"'
                )
            elif keys is None:
                report.add(f"{where}.key", source.key, "a key ID of a [keys] file (none is set)")
            elif keys is not _keys_unreadable() and source.key not in keys:
                known = ", ".join(map(str, sorted(keys))) or "it has none"
                report.add(f"{where}.key", source.key, f"a key ID of the [keys] file ({known})")
        if source.min_poll > source.max_poll:  # both were set explicitly (see _build_source)
            report.add(
                f"{where}.max-poll",
                source.max_poll,
                f"integer {source.min_poll}..{POLL_MAX} (log2 seconds, at least min-poll)",
            )
        for option in ("prefer", "trust", "require"):
            if source.noselect and getattr(source, option):
                report.add(f"{where}.{option}", True, "not with noselect = true (never selected)")
        if "count" in raw and source.mode != "pool":
            report.add(f"{where}.count", source.count, 'no count unless mode = "pool"')
        if "transport" in raw and source.mode != "tsq":
            report.add(f"{where}.transport", raw["transport"], 'no transport unless mode = "tsq"')
        if "xleave" in raw and source.mode == "tsq":
            # TSQ carries T2 and T3 of the same exchange: there is nothing to interleave.
            report.add(f"{where}.xleave", source.xleave, 'no xleave with mode = "tsq"')
        if "certificate-authority" in raw and source.mode not in ("tsq", "nts"):
            report.add(
                f"{where}.certificate-authority",
                raw["certificate-authority"],
                'no certificate-authority unless mode = "tsq" or "nts"',
            )
        if "broadcast-delay" in raw and source.mode != "broadcast":
            report.add(
                f"{where}.broadcast-delay",
                source.broadcast_delay,
                'no broadcast-delay unless mode = "broadcast"',
            )
        host = source.address.host
        if source.mode == "broadcast" and not _is_ipv4(host) and not is_multicast(host):
            report.add(
                f"{where}.address",
                source.name,
                "the broadcast server's IPv4 address, or a multicast group "
                "(IPv6 ff0X::101, IPv4 224.0.1.1)",
            )
        check_broadcast_source(where, raw, source, report.add)
        if "local-port" in raw and source.mode != "peer":
            report.add(
                f"{where}.local-port", source.local_port, 'no local-port unless mode = "peer"'
            )
        identity = _source_identity(source)
        if identity in first_use:
            report.add(
                f"{where}.address",
                str(raw["address"]),
                f"an address no other source uses (same as {first_use[identity]})",
            )
        else:
            first_use[identity] = f"{where}.address"
            if source.name in names:
                report.add(
                    f"{where}.name" if "name" in raw else f"{where}.address",
                    source.name,
                    f"a name no other source has (same as {names[source.name]}; give each its"
                    " own name = ...)",
                )
            names.setdefault(source.name, f"{where}")


def _is_ipv4(host: str) -> bool:
    try:
        return ip_address(host).version == 4
    except ValueError:
        return False


# --- entry points -----------------------------------------------------------------------------


def parse_config(data: Mapping[str, object], path: Path) -> Config:
    """Check decoded TOML ``data`` read from ``path``; raise ``ConfigErrors`` with every error."""
    report = _Report()
    parsed: dict[str, _Parsed] = {name: [] for name in _SECTIONS}
    for name, raw in data.items():
        section = _SECTIONS.get(name)
        if section is None:
            report.add(_toml_key(name), raw, "key to be one of: " + ", ".join(_SECTIONS))
            continue
        if section.array:
            if not isinstance(raw, list):
                report.add(name, raw, f"array of tables (write [[{name}]], once per {name})")
                continue
            tables = [(f"{name}[{i}]", item) for i, item in enumerate(raw)]
        else:
            tables = [(name, raw)]
        for where, table in tables:
            if not isinstance(table, Mapping):
                form = f"[[{name}]]" if section.array else f"[{name}]"
                report.add(where, table, f"table (write {form})")
                continue
            result = _parse_table(table, where, section, report)
            if result is not None:
                parsed[name].append((where, table, result))
    # Imported here, not at the top: only reading a config needs them, and the daemon forgets
    # them once it has (startup_imports.TRANSIENT).
    from tsyncd.config_host import check_host, load_keys, load_leap_table
    from tsyncd.config_listen import (
        check_listeners,
        check_nts_ke_cookies,
        check_nts_ke_ntp_address,
    )
    from tsyncd.config_names import check_selectors

    symmetric_keys = load_keys(parsed["keys"], report.add)
    leap_table = load_leap_table(parsed["synchronization"], report.add)
    _check_sources(parsed["source"], report, keys=symmetric_keys)
    check_selectors(parsed["source"], report.add)
    check_listeners(parsed, report.add, report.invalid)
    check_nts_ke_cookies(data, parsed, report.add)
    check_nts_ke_ntp_address(parsed, report.add, report.invalid)
    for where, raw, bcast in parsed["broadcast"]:
        check_broadcast(where, raw, bcast, report.add)
    for where, raw, log in parsed["log"]:
        for kind in ("measurements", "statistics", "tracking"):
            if getattr(log, kind) and "directory" not in raw:  # a wrong one is reported already
                report.add(
                    f"{where}.{kind}", True, f"{where}.directory set (where {kind}.log goes)"
                )
    for where, raw, control in parsed["control"]:
        # sun_path holds 108 bytes with the terminating NUL: a longer path fails at bind.
        if "socket" in raw and len(os.fsencode(str(control.socket))) > _MAX_SOCKET_PATH:
            report.add(
                f"{where}.socket",
                raw["socket"],
                f"a path of at most {_MAX_SOCKET_PATH} bytes (a Unix socket's address limit)",
            )
    check_host(parsed, report.add)
    if report:
        raise ConfigErrors(
            ConfigError(path, key, value, expected) for key, value, expected in report
        )

    singles = (
        "clock",
        "synchronization",
        "control",
        "metrics",
        "log",
        "resolver",
        "keyset",
        "nts-client",
        "keys",
    )
    return Config(
        symmetric_keys=symmetric_keys or {},
        leap_table=leap_table,
        path=path,
        sources=tuple(obj for _, _, obj in parsed["source"]),
        servers=tuple(obj for _, _, obj in parsed["server"]),
        tsq_servers=tuple(obj for _, _, obj in parsed["tsq-server"]),
        nts_ke_servers=tuple(obj for _, _, obj in parsed["nts-ke-server"]),
        broadcasts=tuple(obj for _, _, obj in parsed["broadcast"]),
        **{name.replace("-", "_"): parsed[name][0][2] for name in singles if parsed[name]},
    )


def load_config(path: Path) -> Config:
    """Read and check the TOML file at ``path``; raise ``ConfigErrors`` with every error.

    The TOML parser is imported here, not with this module: the daemon needs it only while it
    reads the file and forgets it afterwards (``startup_imports.TRANSIENT``)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - tomli is the fallback pyproject declares
        import tomli as tomllib
    else:
        import tomllib
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        message = f"cannot read config file: {e.strerror or e}"
        raise ConfigErrors([ConfigError(path, "", message, "")]) from e
    except UnicodeDecodeError as e:
        message = f"invalid TOML: not UTF-8 ({e.reason} at byte {e.start})"
        raise ConfigErrors([ConfigError(path, "", message, "")]) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigErrors([ConfigError(path, "", f"invalid TOML: {e}", "")]) from e
    return parse_config(data, path)


def parse_source_value(key: str, value: object) -> Any:
    """One ``[[source]]`` key's value, checked as the config file checks it, for settings
    changed at run time (tsyncctl minpoll, maxpoll, maxdelay); ValueError says what was
    expected, in the config file's words."""
    field = next((f for f in _SOURCE if f.key == key), None)
    if field is None:
        raise ValueError(f"source.{key}: no such key")
    try:
        return field.parse(value)
    except _Invalid:
        raise ValueError(f"source.{key} = {value!r}: expected {field.expected}") from None


def address_user(source: SourceConfig, in_use: Mapping[Endpoint | SourceConfig, str]) -> str | None:
    """Who of ``in_use`` (as ``parse_source`` takes it) uses ``source``'s address, or None:
    addresses compared as the config file compares its sources'."""
    return _address_users(in_use).get(_source_identity(source))


def _address_users(in_use: Mapping[Endpoint | SourceConfig, str]) -> dict[tuple[object, ...], str]:
    return {
        _source_identity(e) if isinstance(e, SourceConfig) else _endpoint_identity(e): who
        for e, who in in_use.items()
    }


def parse_source(
    table: object,
    in_use: Mapping[Endpoint | SourceConfig, str] | None = None,
    origin: Path = Path("add_source"),
    keys: Mapping[int, object] | None = None,
) -> SourceConfig:
    """Check one ``[[source]]`` table given at run time (``tsyncctl add``) by the config file's
    own rules, and that its address is none of ``in_use`` (a running source, or an address
    such as a pool member's -> who uses it, e.g. ``"source ntp.example"``) and that no
    selector would pick both it and one of them (``selector_clash``, both ways round); raise
    ``ConfigErrors`` naming ``origin`` and keys ``source.*``."""
    from tsyncd.config_host import check_source_files  # as parse_config: not for life
    from tsyncd.config_names import check_selectors

    report = _Report()
    source: SourceConfig | None = None
    if not isinstance(table, Mapping):
        report.add("source", table, "table (the keys of a [[source]])")
    else:
        source = _parse_table(table, "source", _SECTIONS["source"], report)
        if source is not None:
            taken = _address_users(in_use or {})
            _check_sources([("source", table, source)], report, taken, keys)
            check_selectors([("source", table, source)], report.add, in_use)
            check_source_files("source", source, report.add)
    if report or source is None:
        raise ConfigErrors(
            ConfigError(origin, key, value, expected) for key, value, expected in report
        )
    return source


def _keys_unreadable() -> Mapping[int, Any]:
    """``config_host.KEYS_UNREADABLE`` (imported while a config is read, as there)."""
    from tsyncd.config_host import KEYS_UNREADABLE

    return KEYS_UNREADABLE
