"""Read-only snapshots of the daemon's parts, for control and metrics.

Control and metrics never reach into live objects; each part offers ``snapshot()`` returning one
of these frozen dataclasses, and ``as_json`` turns it into the JSON object that ``tsyncctl
--json`` prints.  Field names are an interface contract (issue 2): extend, never rename.
All times are seconds (float) unless the name says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

from tsyncd.sync.regression import WORST_CASE_SKEW_PPM


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemSnapshot:
    """The system process's view: what we serve and how far we think our clock is off."""

    synchronized: bool  # a source is selected and the clock's offset is known
    unsynchronized_reason: str | None  # why not, in words a person can act on; None if synced
    clock_mode: str  # "system" | "measure" | "simulated"
    stratum: int  # 16 when unsynchronized
    reference_id: str  # dotted quad, or 4 ASCII chars for stratum 1 / local
    reference_id_raw: int
    reference_time: float | None  # Unix seconds of the last clock update, None if never
    offset: float  # s, selected source minus our clock (RFC 5905 theta): add it to the clock
    root_delay: float  # s
    root_dispersion: float  # s
    leap: str  # "none" | "insert" | "delete" | "unsynchronized"
    poll: int  # log2 s, the system poll interval
    precision: int  # log2 s
    selected_source: str | None  # name of the system peer
    uptime: float  # s since the daemon started
    # The system peer's IP address when reference_id stands for it (RFC 5905 §7.3): for an
    # IPv6 one, reference_id is the first 4 bytes of its MD5, which reads as an IPv4 address.
    reference_address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NtsSourceSnapshot:
    """NTS (RFC 8915) state of one source."""

    ke_server: str  # the NTS-KE server as configured (host:port)
    cookies: int  # unused cookies held (at most 8)
    aead: str | None  # "AES-SIV-CMAC-256" | "AES-128-GCM-SIV"; None before the first KE
    last_ke: float | None  # s since the NTS-KE that made the keys in use (a resumed one's too)
    tls_group: str | None  # key-exchange group of that TLS session, e.g. "X25519MLKEM768"
    # Counters for the daemon's life, per source name (a reload restarting it keeps them):
    key_exchanges: int  # successful NTS-KE sessions
    ke_failures: int
    last_error: str | None  # why the last NTS-KE failed, if it did
    authenticated: int  # authenticated responses
    naks: int  # NTS NAKs received
    next_ke: float | None = None  # s until the next NTS-KE, while one waits out a back-off
    ke_backoff: str | None = None  # why it waits: "NAKed after NTS-KE", "NTS-KE failed", ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSnapshot:
    """One association: where it is, what it told us, how we judge it."""

    name: str  # as configured (host:port), unique
    address: str  # resolved address "ip:port" ("[ip6]:port"), or "" when unresolved
    mode: str  # "server" | "pool" | "peer" | "broadcast"
    state: str  # "selected" | "candidate" | "outlier" | "falseticker" | "unreachable" |
    # "unusable" | "noselect" | "init"
    state_reason: str | None  # why unusable/unreachable, if known
    offset: float | None  # s, positive means the source is ahead of our clock
    delay: float | None  # s, round trip
    jitter: float | None  # s
    dispersion: float | None  # s
    root_delay: float | None  # s, as the source reported
    root_dispersion: float | None  # s, as the source reported
    stratum: int | None
    reference_id: str | None
    leap: str | None
    reach: int  # 8-bit reachability register
    poll: int  # log2 s, current poll interval
    last_rx: float | None  # s ago that the last valid reply arrived
    packets_sent: int
    packets_received: int  # valid replies
    packets_dropped: int  # replies failing a check
    kiss_code: str | None  # last KoD code received, if any
    nts: NtsSourceSnapshot | None = None  # mode "nts" only
    interleaved: bool = False  # the last valid reply was interleaved (RFC 9769)
    broadcast_delay: float | None = None  # s, mode "broadcast": round trip in use (or measured)
    interleaved_replies: int = 0  # valid replies (peer packets) in interleaved mode (RFC 9769)
    online: bool = True  # False after tsyncctl offline: not polled until tsyncctl online
    key_id: int | None = None  # the [keys] key its packets are signed with (RFC 5905 MAC)
    key_type: str | None = None  # that key's type: MD5, SHA1, SHA256, ..., AES128, AES256
    options: tuple[str, ...] = ()  # selection options set: "noselect", "prefer", "trust", "require"
    # The last selection, as chronyc selectdata shows it (tsyncd.sync.system.SelectData): its
    # letter, [low, high] (s, source minus our clock) where the truth was expected to be, and
    # how old the measurement it used was (s); None before the first selection or measurement.
    select_code: str | None = None
    select_interval: tuple[float, float] | None = None
    select_age: float | None = None
    # packets_dropped by reason (the reply checks' names: "bogus", "bad_mac", "loop",
    # "wrong_address", "kiss_of_death", "max_delay", ...), since the association started
    drops_by_reason: dict[str, int] = field(default_factory=dict)
    # The [[source]] (or tsyncctl add) that made it: its own name, a pool's for its members;
    # what tsyncctl selects sources by besides their names and addresses.
    source: str = ""
    # chronyc ntpdata's fields (NTP sources; None where a kind has none, or before a reply):
    local_address: str | None = None  # IP our packets to it leave from (or its packets reach)
    version: int | None = None  # NTP version of the last valid reply
    precision: int | None = None  # log2 s, the sender's precision in the last valid reply
    reference_time: float | None = None  # Unix s, the last valid reply's reference timestamp
    response_time: float | None = None  # s, T3 - T2 of the exchange the last valid reply
    # measured: how long the server held it (a broadcast answers nothing: None)
    tx_timestamping: str | None = None  # "kernel" | "daemon": who stamped our request's send
    rx_timestamping: str | None = None  # "kernel" | "daemon": who stamped the reply's arrival
    packets_received_total: int = 0  # every datagram from it, valid or not (chronyc Total RX)


def pending_source_snapshot(
    name: str, mode: str, reason: str, poll: int, *, select_code: str = "M", **more: Any
) -> SourceSnapshot:
    """A ``peers`` row for a source that has no association yet (no address to poll), with
    ``reason`` saying why it waits; ``more``: other fields (``nts``, ``online``).
    ``select_code``: selectdata's letter, "M" (nothing measured yet) or "?" (out for a reason
    of its own: a failed NTS-KE, every address taken by other sources)."""
    return SourceSnapshot(
        name=name,
        source=name,
        address="",
        mode=mode,
        state="init",
        state_reason=reason,
        offset=None,
        delay=None,
        jitter=None,
        dispersion=None,
        root_delay=None,
        root_dispersion=None,
        stratum=None,
        reference_id=None,
        leap=None,
        reach=0,
        poll=poll,
        last_rx=None,
        packets_sent=0,
        packets_received=0,
        packets_dropped=0,
        kiss_code=None,
        select_code=select_code,
        **more,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TsqServerStatsSnapshot:
    """Counters of one TSQ (time over QUIC) server."""

    listen: str
    transport: str  # "stream" | "datagram"
    connections: int  # open now
    connections_accepted: int
    connections_refused: int  # over the per-client limit
    received: int  # requests (streams or datagrams)
    sent: int  # time responses
    errors_sent: int  # Error TLV responses (stream)
    dropped: int  # requests answered with no time
    dropped_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatsSnapshot:
    """Counters of one NTP server (or the sum over all of them)."""

    listen: list[str]
    received: int  # datagrams read
    sent: int  # responses sent
    dropped: int  # requests answered with nothing
    dropped_by_reason: dict[str, int] = field(default_factory=dict)  # reason -> count
    kod_sent: int = 0
    tsq: list[TsqServerStatsSnapshot] = field(default_factory=list)  # one per [[tsq-server]]
    # NTS (RFC 8915): NTS-KE listeners and the NTS share of the NTP traffic above
    nts_ke_listen: list[str] = field(default_factory=list)
    nts_ke_connections: int = 0  # TCP connections accepted by the NTS-KE listeners
    nts_ke_completed: int = 0  # KE sessions that ended with cookies
    nts_ke_failures: int = 0  # KE sessions that failed (TLS, timeout, bad request, ...)
    # ... by reason: "tls", "alpn", "timeout", "rate_limited", "too_many_connections", ...
    nts_ke_failures_by_reason: dict[str, int] = field(default_factory=dict)
    nts_ke_group: str | None = None  # TLS key-exchange group of the last KE session
    nts_ke_groups: dict[str, int] = field(default_factory=dict)  # KE sessions per TLS group
    nts_cookies_issued: int = 0  # by NTS-KE and in NTS responses
    nts_requests: int = 0  # NTS requests answered with an authenticated response
    nts_naks: int = 0  # NTS NAKs sent (cookie or authenticator we could not open)
    nts_key_epoch: int | None = None  # key id of the current cookie master key
    nts_key_id: str | None = None  # its fingerprint (8 hex digits of SHA-256): same in a fleet
    answered: int = 0  # responses carrying time (basic or interleaved), i.e. sent minus KoDs
    interleaved_answered: int = 0  # of which in interleaved mode (RFC 9769)
    clients: int = 0  # client log entries (summed over workers)
    clients_evicted: int = 0  # entries forgotten to make room (chrony's "records dropped")
    workers: int = 0  # receive worker processes (0: served on the main event loop)
    worker_restarts: int = 0  # workers that died and were started again


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSnapshot:
    """One client of the NTP server, as ``chronyc clients`` shows it."""

    address: str  # IPv4-mapped addresses shown as IPv4
    received: int  # requests
    answered: int  # responses with time
    interleaved: int  # of which interleaved
    dropped: int  # requests left unanswered (denied, rate limited, malformed)
    kod_sent: int
    last_rx: float  # s since the last request
    interval: float | None  # s, average interval between its requests


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackingSnapshot:
    """The clock discipline's view, as ``chronyc tracking`` shows chrony's."""

    synchronized: bool
    unsynchronized_reason: str | None
    clock_mode: str  # "system" | "measure" | "simulated"
    reference_id: str
    stratum: int
    reference_time: float | None  # Unix s of the last clock update
    system_offset: float  # s, true time minus our (disciplined) clock, as last measured
    last_offset: float  # s, the offset of the last clock update
    rms_offset: float  # s, long-term RMS of clock-update offsets
    residual_offset: float  # s, phase still being slewed out
    frequency_ppm: float  # drift estimate: positive means the clock is made to run faster
    skew_ppm: float  # error bound of the frequency (99.9 %, chronyc's): the combined sources'
    # sourcestats skew_ppm (chronyd's combination; one source: its own); 0.0 unsynchronized
    applied_frequency_ppm: float  # rate correction in force now (drift plus phase slewing)
    host_clock_offset: float  # s, true time minus the host's CLOCK_REALTIME (measure mode: the
    # host clock's error; system mode: equals system_offset)
    root_delay: float  # s
    root_dispersion: float  # s
    update_interval: float | None  # s between the last two clock updates
    clock_updates: int
    discipline_state: str
    leap: str
    poll: int  # log2 s
    reference_id_raw: int = 0  # as SystemSnapshot's
    selected_source: str | None = None
    reference_address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceStatsSnapshot:
    """Per-source sample statistics, as ``chronyc sourcestats`` shows them."""

    name: str
    address: str
    samples: int  # samples held in the clock filter
    span: float | None  # s between the oldest and the newest sample
    offset: float | None  # s, of the chosen (lowest-delay) sample
    std_dev: float | None  # s, the filter's jitter
    delay_min: float | None  # s
    delay_max: float | None  # s
    # chronyc's columns, from a weighted regression of offset against time over the source's
    # sample history (up to 64 samples, beside the filter's 8; tsyncd/sync/regression.py):
    regression_samples: int = 0  # NP: samples the line goes through
    regression_span: float | None = None  # s between the oldest and the newest of them
    runs: int = 0  # NR: runs of residuals with the same sign (0 with fewer than 3 samples)
    frequency_ppm: float = 0.0  # the source's rate relative to our clock, + it runs fast
    # (chronyc's Frequency has the opposite sign); 0 with fewer than 3 samples
    skew_ppm: float = WORST_CASE_SKEW_PPM  # error bound of frequency_ppm (99.9 %, as chrony's)
    estimated_offset: float | None = None  # s, the line now (RFC 5905 sign, as offset); the
    # newest sample's offset with fewer than 3 samples
    estimated_std_dev: float | None = None  # s, of the residuals; None with fewer than 3


def as_json(snapshot: Any) -> Any:
    """Return a JSON-serialisable form of a snapshot (or a list of them)."""
    if isinstance(snapshot, list | tuple):
        return [as_json(s) for s in snapshot]
    if dataclasses.is_dataclass(snapshot) and not isinstance(snapshot, type):
        return dataclasses.asdict(snapshot)
    return snapshot


class SnapshotProvider(Protocol):
    """What control and metrics read from the daemon (each call returns a fresh snapshot)."""

    def system_snapshot(self) -> SystemSnapshot: ...

    def source_snapshots(self) -> list[SourceSnapshot]: ...

    def server_snapshot(self) -> ServerStatsSnapshot: ...
