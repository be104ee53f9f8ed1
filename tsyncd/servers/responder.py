"""The NTP server's per-packet decision, sans-IO: request bytes in, (reason, response) out.

Every request ends as exactly one ``(reason, response)`` pair: ``response`` is None when we stay
silent, and ``reason`` is a stable snake_case label the counters and tests use
(STYLE.md §3).  The response is filled from a ``ResponseTemplate`` that the system process keeps
current, so the per-packet work is parse, check, fill, pack: this module is the whole fast path,
run as is by the asyncio server and by the multi-core workers (``servers/workers.py``).

Rules (RFC 5905 §9.2, RFC 8633, RFC 9769):
* only client-mode (3) requests are answered, and NTPv1 ones (version 1, mode field 0, as
  ntpd takes them); symmetric, broadcast and the amplification-prone control (6) and
  private (7) modes are dropped;
* the reply (mode 4) echoes the request's version and poll, and its transmit timestamp as
  our origin;
* the reply is never longer than the request (no amplification): we answer with a bare 48-byte
  header, and requests are at least that long;
* access control applies to the client's IP, IPv4-mapped IPv6 addresses compared as IPv4: the
  most specific matching allow/deny network decides, as in chrony (``AccessList``); it is
  decided once per client (``ClientLog``), not per packet, and again for every known client
  when the rules change at run time (``set_access``);
* rate limiting (``RateLimit``) drops, or with ``kod`` answers RATE; denied clients get DENY
  (a deny rule decides) or RSTR (no rule holds them) when ``kod`` is on.  KoDs are rate
  limited too: at most one per client per rate-limit interval, so they cannot be used to
  reflect traffic either;
* interleaved mode (RFC 9769 §3, spec §10): a request whose receive field is set and differs
  from its transmit field comes from a client able to interleave; we keep the (RX, TX) pair of
  our response to it, TX replaced by the kernel's stamp when it comes.  If such a request's
  origin names a kept RX stamp of a response to the same address, it is answered with
  origin = its receive field and transmit = that precise TX (the pair is used once).
  Otherwise basic mode.  Basic-only clients cost no pair and no TX stamp.

* a request no reply can reach is dropped as ``bad_source``, never answered or counted as
  served: source port 0 (ntpd drops these first too; the IO edge passes the port, one integer
  test per packet), or a multicast or broadcast source address (decided once per client with
  the access verdict: ``unanswerable``, and the directed broadcasts the IO edge finds in the
  kernel's routes, ``broadcast_routes``).  Real networks drop such sources as martians;
  spoofed ones reach us on loopback, or wherever the kernel lets them in.

Outcome reasons: ``answered`` and ``interleaved`` (time served), ``answered_nts`` and
``answered_mac`` (sealed with NTS, signed with a symmetric key), ``interleaved_nts`` and
``interleaved_mac`` (both), ``kod_rate``, ``kod_deny``, ``kod_rstr``, ``nts_nak`` (KoD sent),
and drops: ``denied``, ``restricted``, ``rate_limited``, ``not_client_mode``, ``bad_source``,
``malformed_<WireError.reason>``, and the NTS and MAC checks' own.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from tsyncd.config_fields import ALL_NETWORKS
from tsyncd.servers.clientlog import (
    DEFAULT_MAX_CLIENTS,
    ClientLog,
    ClientRecord,
    RateLimit,
    client_rows,
    refill,
    take_token,
)
from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import (
    MAX_PACKET_LEN,
    KissCode,
    Leap,
    Mode,
    decode_ntp,
    mac_lengths,
    refid_from_ascii,
)
from tsyncd.wire.timestamps import NTP_UNIX_OFFSET_S, ntp64_from_unix_ns

if TYPE_CHECKING:
    from tsyncd.symkey import SymmetricKey

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ANSWERED: Final = "answered"
INTERLEAVED: Final = "interleaved"
KOD_RATE: Final = "kod_rate"
KOD_DENY: Final = "kod_deny"
KOD_RSTR: Final = "kod_rstr"
DENIED: Final = "denied"  # the most specific matching rule denies
RESTRICTED: Final = "restricted"  # no rule holds it
RATE_LIMITED: Final = "rate_limited"
NOT_CLIENT_MODE: Final = "not_client_mode"
BAD_SOURCE: Final = "bad_source"  # source port 0, or a multicast/broadcast source address
ANSWERED_NTS: Final = "answered_nts"  # an authenticated NTS response (RFC 8915 §5.7)
NTS_NAK: Final = "nts_nak"  # the NTS NAK is a KoD ("NTSN", RFC 8915 §5.7)
ANSWERED_MAC: Final = "answered_mac"  # signed with the client's symmetric key (RFC 5905)
# Interleaved replies, sealed with NTS or signed: both kinds at once, so that serverstats and
# the metrics count them as interleaved, as the client log does (QA s21 hunt-nts F2).
INTERLEAVED_NTS: Final = "interleaved_nts"
INTERLEAVED_MAC: Final = "interleaved_mac"
_AS_INTERLEAVED: Final = {ANSWERED_NTS: INTERLEAVED_NTS, ANSWERED_MAC: INTERLEAVED_MAC}
INTERLEAVED_SERVED: Final = frozenset({INTERLEAVED, INTERLEAVED_NTS, INTERLEAVED_MAC})
SERVED: Final = frozenset({ANSWERED, ANSWERED_NTS, ANSWERED_MAC}) | INTERLEAVED_SERVED
KODS: Final = frozenset({KOD_RATE, KOD_DENY, KOD_RSTR, NTS_NAK})

_HEADER_LEN: Final = 48
_MODE_CLIENT: Final = int(Mode.CLIENT)  # a plain int: comparing with the enum costs 50 ns
# NTPv1 (RFC 1059) has no mode field: its requests carry version 1 and mode bits 0.  ntpd
# takes "mode 0 in version 1 as client mode" (ntp_proto.c receive()), and chronyd answers
# them too; so do we.  The reply is a server's (mode 4) with the request's version, as for
# every request: RFC 5905 Appendix A.5.3 fast_xmit() copies the version "for backward
# compatibility".  Version 1 with mode 3 is answered as any client request.
_MODE_CONTROL: Final = int(Mode.CONTROL)  # 6, and 7 (private) above it
_V1_REQUEST: Final = 1 << 3  # LI/VN/mode & 0x3F of an NTPv1 request: VN 1, mode 0
# Request: LI/VN/mode, (stratum), poll, (precision ... reference ts), origin, receive, transmit.
_REQUEST: Final = struct.Struct("!Bxc21xQQQ")
# Response: LI/VN/mode, stratum, poll (echoed raw), precision, 20 fixed bytes, 3 timestamps.
_RESPONSE: Final = struct.Struct("!BBcb20sQQQ")
# A time reply as the template leaves it: LI/VN/mode and stratum (per version), the client's
# poll, then precision and the body (per template), origin, receive, transmit.  Fewer
# arguments than _RESPONSE: this is packed for every request.
_REPLY: Final = struct.Struct("!2sc21sQQQ")
_pack_reply: Final = _REPLY.pack
_unpack_request: Final = _REQUEST.unpack_from
_BODY: Final = struct.Struct("!IIIQ")  # root delay, root dispersion, refid, reference ts
_RECEIVE_AT: Final = 32  # offset of the receive timestamp in a response
_MASK64: Final = (1 << 64) - 1
_NS_PER_S: Final = 1_000_000_000
_HALF_S_NS: Final = _NS_PER_S // 2
_NTP_UNIX_NS: Final = NTP_UNIX_OFFSET_S * _NS_PER_S
_PAIRS_MIN: Final = 1024  # RX/TX pairs kept for interleaved mode (the RFC's example keeps 1000)
_PAIRS_PER_ADDRESS: Final = 16  # of which one address holds (several clients behind a NAT)
_KOD_REFIDS: Final = {
    KOD_RATE: refid_from_ascii(KissCode.RATE),
    KOD_DENY: refid_from_ascii(KissCode.DENY),
    KOD_RSTR: refid_from_ascii(KissCode.RSTR),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseTemplate:
    """The system variables a reply carries; replaced whole when the system state changes."""

    leap: Leap = Leap.UNSYNCHRONIZED
    stratum: int = 0  # 0 on the wire means unspecified (16, unsynchronized)
    precision: int = -20  # log2 s
    root_delay: int = 0  # raw NTP short
    root_dispersion: int = 0  # raw NTP short
    reference_id: int = 0
    reference_ts: int = 0  # raw NTP64


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerPolicy:
    """How one server socket treats its clients (``[[server]]`` in the config)."""

    rate_limit: RateLimit | None = None  # None: no rate limiting
    kod: bool = False  # answer limited/denied clients with KoD RATE/DENY/RSTR instead of silence
    interleaved: bool = True  # RFC 9769 interleaved responses for clients that ask
    max_clients: int = DEFAULT_MAX_CLIENTS  # client log bound
    # [keys]: requests signed with one of these are answered signed (RFC 5905 MAC), others
    # that carry a MAC are dropped; None: MACs are ignored (tsyncd/symkey.py).
    symmetric_keys: Mapping[int, SymmetricKey] | None = None


class ExtensionResponder(Protocol):
    """Answers requests that carry extension fields (NTS, RFC 8915); see tsyncd/nts/server.py.

    Gets the request bytes and the plain response we would send, checks the extension fields'
    framing itself, and returns the (reason, response) pair instead; it must never answer with
    more bytes than it received.
    """

    def respond_raw(
        self, data: bytes, plain: bytes, restamp: Callable[[bytes], bytes] | None = None
    ) -> tuple[str, bytes | None]:
        """(reason, response) for the raw request ``data`` (header already checked: length,
        version, client mode) and ``plain``, our 48-byte reply without extension fields;
        ``restamp``, if given, rewrites ``plain``'s Transmit as late as the seal allows
        (``servers/sealtx.py``)."""
        ...


class AccessList:
    """Allow/deny rules by CIDR network, judged as chrony judges them: the most specific
    network that holds the client decides; a client no rule holds is restricted.

    From the config (``allow``, ``deny``): an empty ``allow`` stands for every address
    (``0.0.0.0/0`` and ``::/0`` allowed), so a server with no lists serves everyone, and the
    same network in both lists is denied.  Exceptions nest, as chrony's ``allow 10/8``,
    ``deny 10.1/16``, ``allow 10.1.2/24``.  ``with_rule`` gives the list after chronyc's
    ``allow``/``deny [all] [SUBNET]``.  Immutable: a change makes a new list, which the
    server pushes to its workers whole (``WorkerPool.set_access``).

    The client's IP is judged once per client, when its ``ClientRecord`` is made (and again
    by ``NtpResponder.set_access``), never per packet: for each prefix length in use, longest
    first, one shift and one dict lookup.
    """

    def __init__(self, allow: Iterable[IPNetwork] = (), deny: Iterable[IPNetwork] = ()) -> None:
        allow, deny = tuple(allow), tuple(deny)
        rules: dict[IPNetwork, bool] = {}
        if not allow:
            rules.update(dict.fromkeys(ALL_NETWORKS, True))  # empty allow: every client
        rules.update(dict.fromkeys(allow, True))
        rules.update(dict.fromkeys(deny, False))  # the same network in both lists: deny wins
        self._set(rules)

    @classmethod
    def from_rules(cls, rules: Mapping[IPNetwork, bool]) -> AccessList:
        """A list holding exactly ``rules`` (network -> allowed?): nothing is implied."""
        access = cls.__new__(cls)
        access._set(dict(rules))
        return access

    def _set(self, rules: dict[IPNetwork, bool]) -> None:
        self._rules = rules
        # Per IP version: (shift, {network address >> shift: allowed}), longest prefix first.
        by_length: dict[tuple[int, int], dict[int, bool]] = {}
        for net, allowed in rules.items():
            shift = net.max_prefixlen - net.prefixlen
            key = (net.version, shift)
            by_length.setdefault(key, {})[int(net.network_address) >> shift] = allowed
        self._tables: dict[int, tuple[tuple[int, dict[int, bool]], ...]] = {
            version: tuple(
                (shift, nets) for (v, shift), nets in sorted(by_length.items()) if v == version
            )
            for version in (4, 6)
        }

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its rules (the pipe to the workers); the tables are made again."""
        return (AccessList.from_rules, (self._rules,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AccessList) and other._rules == self._rules

    @property
    def rules(self) -> dict[IPNetwork, bool]:
        """Every rule, network -> allowed, in a stable order (IPv4 first, then by network)."""
        ordered = sorted(self._rules, key=lambda n: (n.version, n.network_address, n.prefixlen))
        return {net: self._rules[net] for net in ordered}

    def permits(self, ip: IPAddress) -> bool:
        """Whether ``ip`` (already normalised: IPv4-mapped -> IPv4) may be served."""
        return self.verdict(ip) == ""

    def verdict(self, ip: IPAddress) -> str:
        """ "" if ``ip`` may be served, else the drop reason: DENIED (the most specific rule
        holding it denies) or RESTRICTED (no rule holds it)."""
        n = int(ip)
        for shift, nets in self._tables[ip.version]:
            allowed = nets.get(n >> shift)
            if allowed is not None:
                return "" if allowed else DENIED
        return RESTRICTED

    def with_rule(
        self, network: IPNetwork | None, allowed: bool, *, replace_inside: bool = False
    ) -> AccessList:
        """This list after chronyc's ``allow`` (``allowed``) or ``deny`` of ``network``
        (None: every address, IPv4 and IPv6).  ``replace_inside`` (chronyc's ``all``) also
        drops the rules of the networks inside it, so it decides for all of them."""
        targets = ALL_NETWORKS if network is None else (network,)
        rules = dict(self._rules)
        if replace_inside:
            for net in list(rules):
                if any(_inside(net, t) for t in targets):
                    del rules[net]
        rules.update(dict.fromkeys(targets, allowed))
        return AccessList.from_rules(rules)


def _inside(net: IPNetwork, outer: IPNetwork) -> bool:
    """Whether ``net`` lies in ``outer`` (equal included); never across IP versions."""
    if isinstance(net, ipaddress.IPv4Network):
        return isinstance(outer, ipaddress.IPv4Network) and net.subnet_of(outer)
    return isinstance(outer, ipaddress.IPv6Network) and net.subnet_of(outer)


_LIMITED_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")


def unanswerable(ip: IPAddress) -> bool:
    """Whether no reply can be sent to ``ip`` (already normalised): a multicast address or
    the IPv4 limited broadcast.  Directed broadcasts depend on the host's interfaces: the IO
    edge adds them (``net.udp.is_broadcast_address``)."""
    return ip.is_multicast or ip == _LIMITED_BROADCAST


def client_ip(address: str) -> IPAddress:
    """The client's IP from socket address text; IPv4-mapped IPv6 becomes IPv4 (dual stack)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class NtpResponder:
    """Answers client requests from the current template; counts every outcome.

    One responder per socket per process: its client log is the per-client state of the
    clients the kernel hands to this socket (ARCHITECTURE.md, "Servers").
    """

    def __init__(
        self,
        access: AccessList,
        policy: ServerPolicy | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.access = access
        self.policy = policy or ServerPolicy()
        self.clients = ClientLog(self.policy.max_clients)
        self._records = self.clients.records
        self._rng = rng or random.Random()
        self.outcomes: dict[str, int] = {}  # reason -> requests (a dict: Counter is slower)
        # RFC 9769 pairs: our RX stamp of a response -> (its TX stamp, client address).
        self._pairs: dict[int, tuple[int, str]] = {}
        self._pairs_max = max(_PAIRS_MIN, self.policy.max_clients)
        limit = self.policy.rate_limit
        self._limit = limit
        self._kod = self.policy.kod
        self._interleaved = self.policy.interleaved
        self._burst_ns = limit.interval_ns * limit.burst if limit is not None else 0
        self._kod_interval_ns = (limit or RateLimit()).interval_ns
        self.template = ResponseTemplate()
        self.extensions: ExtensionResponder | None = None  # NTS, when configured
        # Rewrites a sealed basic reply's Transmit right before its seal (the IO edge's
        # ``sealtx.LateTransmit``); None: the Transmit given to ``respond`` stands.
        self.late_transmit: Callable[[bytes], bytes] | None = None
        self._mac_keys = self.policy.symmetric_keys
        # Whether an address is a directed broadcast of this host (the IO edge knows its
        # routes: ``net.udp.BroadcastRoutes``); asked once per new client, like the access list.
        self.broadcast_routes: Callable[[IPAddress], bool] | None = None

    def set_access(self, access: AccessList) -> None:
        """Judge clients by ``access`` from now on, those in the client log too: their
        verdicts were cached when each was first seen, and a stale one would keep serving a
        client just denied (or refusing one just allowed).  A bad source stays one."""
        self.access = access
        for record in self._records.values():
            if record.permitted != BAD_SOURCE:
                record.permitted = access.verdict(client_ip(record.address))

    # ---------------------------------------------------------------- template

    @property
    def template(self) -> ResponseTemplate:
        """What replies carry; set it whole when the system state changes."""
        return self._template

    @template.setter
    def template(self, template: ResponseTemplate) -> None:
        self._template = template
        lead = (int(template.leap) << 6) | int(Mode.SERVER)
        stratum = template.stratum
        self._heads = tuple(bytes((lead | (version << 3), stratum)) for version in range(8))
        body = _BODY.pack(
            template.root_delay,
            template.root_dispersion,
            template.reference_id,
            template.reference_ts,
        )
        self._tail = struct.pack("!b", template.precision) + body

    # ---------------------------------------------------------------- per packet

    def handle_request(
        self, data: bytes, client: IPAddress | str, rx_ns: int, tx_ns: int
    ) -> tuple[str, bytes | None]:
        """Decide on one request received at ``rx_ns``; ``tx_ns`` is the clock read just now."""
        reason, response, _want_tx = self.respond(data, str(client), rx_ns, tx_ns)
        return reason, response

    def respond(
        self, data: bytes, address: str, rx_ns: int, tx_ns: int, port: int = -1
    ) -> tuple[str, bytes | None, bool]:
        """``handle_request`` for the IO edges: ``address`` is the socket's address text,
        ``port`` the source port (-1: not known here, not checked).

        The third value says whether the caller should ask the kernel for the response's
        transmit timestamp and pass it to ``handle_tx_timestamp``: only for clients whose
        request looks interleaving-capable, so basic clients cost no error-queue read.

        This is every worker's per-packet path, so it is one function (no call per decision)
        and the rare outcomes leave through ``_count``.
        """
        record = self._records.get(address)
        if record is None:
            ip = client_ip(address)
            routes = self.broadcast_routes
            if unanswerable(ip) or (routes is not None and routes(ip)):
                verdict = BAD_SOURCE
            else:
                verdict = self.access.verdict(ip)
            record = self.clients.add(ClientRecord(address, verdict, rx_ns, self._burst_ns))
        record.received += 1
        if not port:  # nothing can be sent to port 0
            return self._count(record, rx_ns, BAD_SOURCE, None)
        denied = record.permitted
        if denied and (not self._kod or denied == BAD_SOURCE):
            # RFC 5905 §9.2 test 4, before spending time parsing (no KoD to a bad source)
            return self._count(record, rx_ns, denied, None)
        n = len(data)
        if not _HEADER_LEN <= n <= MAX_PACKET_LEN:
            if n > MAX_PACKET_LEN:  # read one byte past the limit: longer than we take
                return self._count(record, rx_ns, "malformed_too_long", None)
            # ntpq's and ntpdc's requests (modes 6 and 7) are shorter than a header: counted
            # by what they are, not as broken time requests.
            if n and data[0] & 7 >= _MODE_CONTROL:
                return self._count(record, rx_ns, NOT_CLIENT_MODE, None)
            return self._count(record, rx_ns, "malformed_truncated", None)
        lvm, poll, origin, receive, transmit = _unpack_request(data)
        version = (lvm >> 3) & 7
        if not 1 <= version <= 4:
            return self._count(record, rx_ns, "malformed_bad_version", None)
        extensions = self.extensions
        if n != _HEADER_LEN and extensions is None:
            try:
                decode_ntp(data)  # syntax of EFs / MAC; rare, so the full codec is fine
            except WireError as exc:
                return self._count(record, rx_ns, f"malformed_{exc.reason}", None)
        if lvm & 7 != _MODE_CLIENT and lvm & 0x3F != _V1_REQUEST:
            return self._count(record, rx_ns, NOT_CLIENT_MODE, None)
        if denied:
            kod = KOD_DENY if denied == DENIED else KOD_RSTR
            reason, kod_response = self._send_kod(
                kod, denied, record, version, poll, transmit, rx_ns, tx_ns
            )
            return self._count(record, rx_ns, reason, kod_response)
        limit = self._limit
        # RFC 8633 §5 / chrony "leak": answer some limited requests anyway, at random, so a
        # spoofed flood in a victim's name cannot cut the victim off entirely.
        if (
            limit is not None
            and not take_token(record, limit, rx_ns)
            and (not limit.leak_log2 or self._rng.getrandbits(limit.leak_log2))
        ):
            if self._kod:
                reason, kod_response = self._send_kod(
                    KOD_RATE, RATE_LIMITED, record, version, poll, transmit, rx_ns, tx_ns
                )
                return self._count(record, rx_ns, reason, kod_response)
            return self._count(record, rx_ns, RATE_LIMITED, None)
        record.last_ns = rx_ns
        record.answered += 1
        # ntp64_from_unix_ns, inlined: this is the per-packet path of every worker.
        rx_ntp = (((rx_ns + _NTP_UNIX_NS) << 32) + _HALF_S_NS) // _NS_PER_S & _MASK64
        if tx_ns > rx_ns:
            tx_ntp = (((tx_ns + _NTP_UNIX_NS) << 32) + _HALF_S_NS) // _NS_PER_S & _MASK64
        else:  # a worker passes rx for a reply whose Transmit it writes later (latetx.py)
            tx_ntp = rx_ntp
        want_tx = self._interleaved and receive != transmit and receive != 0
        if want_tx:
            reason, out_origin, rx_ntp, out_tx = self._interleave(
                record, origin, receive, transmit, rx_ntp, tx_ntp
            )
        else:  # basic mode, the common case: kept short
            reason, out_origin = ANSWERED, transmit
            # RFC 9769: a basic reply whose transmit equals its receive would look interleaved.
            out_tx = tx_ntp if tx_ntp != rx_ntp else (tx_ntp + 1) & _MASK64
        plain = _pack_reply(self._heads[version], poll, self._tail, out_origin, rx_ntp, out_tx)
        response: bytes | None = plain
        if n != _HEADER_LEN:
            interleaved = reason == INTERLEAVED
            if self._mac_keys is not None and n - _HEADER_LEN in mac_lengths(version):
                # RFC 5905 §9.2 test 5: sign with the client's key.  A key we lack or a MAC
                # that fails is dropped (reason unknown_key / bad_mac), as chronyd does, where
                # ntpd would send a crypto-NAK: nothing to learn for a prober, nothing to
                # reflect.
                from tsyncd.symkey import seal, verify  # loaded already: [keys] read it

                failure, key = verify(self._mac_keys, data)
                if failure is None and key is not None:
                    reason, response = ANSWERED_MAC, seal(key, plain)
                else:
                    reason, response = failure or "bad_mac", None
            elif extensions is not None:
                # NTS: check the extension fields (as decode_ntp would), authenticate the
                # request and seal this response, or NAK, or drop.
                reason, response = extensions.respond_raw(
                    data, plain, self.late_transmit if reason == ANSWERED else None
                )
            if response is None or reason == NTS_NAK:
                # Counted as answered above, for the common case: take it back, as serverstats
                # counts it (a drop, or a KoD: the NAK).
                record.answered -= 1
                record.interleaved -= interleaved
                if response is None:
                    record.dropped += 1
                    want_tx = False
                else:
                    record.kod_sent += 1
            if interleaved:  # still time served: interleaved and sealed or signed
                reason = _AS_INTERLEAVED.get(reason, reason)
        outcomes = self.outcomes
        outcomes[reason] = outcomes.get(reason, 0) + 1
        return reason, response, want_tx

    def _interleave(
        self,
        record: ClientRecord,
        origin: int,
        receive: int,
        transmit: int,
        rx_ntp: int,
        tx_ntp: int,
    ) -> tuple[str, int, int, int]:
        """(reason, origin, receive, transmit) of the reply to an interleaving-capable client
        (RFC 9769 §3), keeping this reply's (RX, TX) pair for its next request."""
        reason, out_origin, out_tx = ANSWERED, transmit, tx_ntp
        # Its origin may name the receive stamp of one of our earlier responses to it; keyed by
        # that stamp, not by client, so several clients behind one address (NAT, or two
        # daemons) each interleave.
        pairs = self._pairs
        pair = pairs.get(origin) if origin else None
        if pair is not None and pair[1] == record.address:
            del pairs[origin]  # each RX stamp serves one interleaved response
            reason = INTERLEAVED
            out_origin, out_tx = receive, pair[0]
            record.interleaved += 1
        while rx_ntp in pairs:
            rx_ntp = (rx_ntp + 1) & _MASK64  # RX stamps name a pair: keep them unique
        if tx_ntp == rx_ntp:
            # RFC 9769: a basic reply whose transmit equals its receive would look interleaved.
            tx_ntp = (tx_ntp + 1) & _MASK64
            if reason == ANSWERED:
                out_tx = tx_ntp
        if len(pairs) >= self._pairs_max:
            del pairs[next(iter(pairs))]  # the oldest: its client has moved on or gone
        pairs[rx_ntp] = (tx_ntp, record.address)  # tx replaced by the kernel's stamp
        # One address holds at most _PAIRS_PER_ADDRESS of them: a flood from one address
        # cannot push every other client out of interleaved mode (QA s18 hunt-server-policy
        # F3).  Its list may name pairs already used or evicted: only its own are dropped.
        own = record.pairs
        if own is None:
            own = record.pairs = []
        own.append(rx_ntp)
        if len(own) > _PAIRS_PER_ADDRESS:
            oldest = own.pop(0)
            held = pairs.get(oldest)
            if held is not None and held[1] == record.address:
                del pairs[oldest]
        return reason, out_origin, rx_ntp, out_tx

    def _count(
        self, record: ClientRecord, rx_ns: int, reason: str, response: bytes | None
    ) -> tuple[str, bytes | None, bool]:
        """Count an outcome other than time served (drop or KoD); never wants a TX stamp."""
        if self._limit is not None:
            refill(record, self._limit, rx_ns)  # the time since its last packet still counts
        else:
            record.last_ns = rx_ns
        outcomes = self.outcomes
        outcomes[reason] = outcomes.get(reason, 0) + 1
        if response is None:
            record.dropped += 1
        return reason, response, False

    def _send_kod(
        self,
        kod: str,
        silent: str,
        record: ClientRecord,
        version: int,
        poll: bytes,
        transmit: int,
        rx_ns: int,
        tx_ns: int,
    ) -> tuple[str, bytes | None]:
        """A KoD (RFC 5905 §7.4), at most one per client per interval, else ``silent``."""
        last = record.kod_ns
        if last is not None and rx_ns - last < self._kod_interval_ns:
            return silent, None
        record.kod_ns = rx_ns
        record.kod_sent += 1
        response = _RESPONSE.pack(
            (int(Leap.UNSYNCHRONIZED) << 6) | (version << 3) | int(Mode.SERVER),
            0,
            poll,
            self._template.precision,
            _BODY.pack(0, 0, _KOD_REFIDS[kod], 0),
            transmit,  # the origin must still match, or the client rightly ignores us
            ntp64_from_unix_ns(rx_ns),
            ntp64_from_unix_ns(tx_ns if tx_ns > rx_ns else rx_ns),
        )
        return kod, response

    def handle_tx_timestamp(self, response: bytes, tx_ns: int) -> bool:
        """The kernel says ``response`` (our 48 bytes) left at ``tx_ns``; True if it was ours.

        The precise TX time replaces the estimate kept for the client, so its next interleaved
        request gets it (RFC 9769 §3).
        """
        if len(response) < _HEADER_LEN:
            return False
        (rx_ntp,) = struct.unpack_from("!Q", response, _RECEIVE_AT)
        pair = self._pairs.get(rx_ntp)
        if pair is None:
            return False
        self._pairs[rx_ntp] = (ntp64_from_unix_ns(tx_ns), pair[1])
        return True

    # ---------------------------------------------------------------- counters

    @property
    def received(self) -> int:
        """Requests seen (every one ends under exactly one outcome)."""
        return sum(self.outcomes.values())

    @property
    def sent(self) -> int:
        """Responses sent: time (basic or interleaved) and KoDs."""
        out = self.outcomes
        return sum(v for k, v in out.items() if k in SERVED or k in KODS)

    @property
    def dropped(self) -> int:
        """Requests that got no answer."""
        return self.received - self.sent

    def drops_by_reason(self) -> dict[str, int]:
        """Outcome counts of requests that got no response."""
        return {k: v for k, v in self.outcomes.items() if k not in SERVED and k not in KODS}

    def counters(self) -> dict[str, Any]:
        """All counters as plain data (summed across workers by the daemon)."""
        out = self.outcomes
        return {
            "received": self.received,
            "sent": self.sent,
            "answered": sum(out.get(k, 0) for k in SERVED),
            "interleaved_answered": sum(out.get(k, 0) for k in INTERLEAVED_SERVED),
            "kod_sent": sum(out.get(k, 0) for k in KODS),
            "dropped": self.dropped,
            "dropped_by_reason": self.drops_by_reason(),
            "clients": len(self.clients),
            "clients_evicted": self.clients.evicted,
        }

    def client_rows(self, now_ns: int, limit: int = 1000) -> list[dict[str, Any]]:
        """The busiest ``limit`` clients as plain data, for ``tsyncctl clients``."""
        return client_rows(self.clients, now_ns, limit, lambda a: str(client_ip(a)))
