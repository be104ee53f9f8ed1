"""One-shot SNTP query (``tsyncctl query``), in the spirit of ``sntp``/``ntpdig``.

Theory of operation: for each request we open a fresh UDP socket, so the kernel picks a new
random source port (RFC 9109 asks clients to randomise ports), and we send a client-mode NTPv4
packet whose only non-zero fields are version, mode and a *random* transmit timestamp (the NTP
data-minimisation practice: our clock reading is not leaked, and the 64 random bits make a
forged reply hard to match).  A reply counts only if it echoes that value as its origin
timestamp.  T1 is the local clock just before sending and T4 the kernel's receive timestamp
(SO_TIMESTAMPNS) when available, else the local clock on return from ``recvmsg``.

``evaluate_reply`` holds all the arithmetic and checks and touches no socket or clock, so it can
be tested with spelled-out timestamps.  No daemon is needed.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import (
    Leap,
    Mode,
    NtpPacket,
    decode_ntp,
    encode_ntp,
    kiss_code,
    refid_to_str,
)
from tsyncd.wire.timestamps import ns_from_short, ntp64_diff_ns, ntp64_from_unix_ns

NTP_PORT = 123

# SO_TIMESTAMPNS (SO_TIMESTAMPNS_OLD) from <asm-generic/socket.h>; Python does not export it.
# The control message carries a native struct timespec (two C longs).
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
_LEAP_NAMES = {
    Leap.NONE: "none",
    Leap.INSERT: "insert",
    Leap.DELETE: "delete",
    Leap.UNSYNCHRONIZED: "unsynchronized",
}


class QueryError(Exception):
    """The query cannot be made at all (bad target, name does not resolve)."""


class ReplyRejected(Exception):
    """A datagram came back but cannot be used; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryReply:
    """The measurement from one good reply."""

    offset_ns: int  # add to our clock to match the server's (positive: server ahead)
    delay_ns: int  # round trip minus the server's processing time
    stratum: int
    reference_id: str
    leap: str  # "none" | "insert" | "delete"
    poll: int  # log2 s, as the server sent it
    precision: int  # log2 s
    root_delay_ns: int
    root_dispersion_ns: int
    version: int

    def as_json(self, *, server: str, address: str) -> dict[str, object]:
        """The reply as ``tsyncctl query --json`` prints it (times in seconds)."""
        return {
            "server": server,
            "address": address,
            "offset": self.offset_ns / 1e9,
            "delay": self.delay_ns / 1e9,
            "stratum": self.stratum,
            "reference_id": self.reference_id,
            "leap": self.leap,
            "poll": self.poll,
            "precision": self.precision,
            "root_delay": self.root_delay_ns / 1e9,
            "root_dispersion": self.root_dispersion_ns / 1e9,
            "version": self.version,
        }


@dataclass(slots=True, kw_only=True)
class QueryOutcome:
    """Everything one ``tsyncctl query`` run found out."""

    target: str  # as the user typed it
    address: str  # "ip:port" or "[ip6]:port" actually queried
    replies: list[QueryReply] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per failed request, in order


def parse_target(text: str) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` into host and port; IPv6 as ``[::1]:123``, ``[::1]`` or ``::1``."""
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise QueryError(f"bad address {text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise QueryError(f"bad address {text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, an IPv4 address, or a bare IPv6 address
    if not host:
        raise QueryError(f"bad address {text!r}: no host given")
    if port_text is None:
        return host, NTP_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise QueryError(f"bad port {port_text!r} in {text!r}: expected 1..65535")
    return host, int(port_text)


def build_request(transmit_ts: int) -> bytes:
    """A client-mode NTPv4 request carrying only version, mode and ``transmit_ts``."""
    return encode_ntp(
        NtpPacket(leap=Leap.NONE, version=4, mode=Mode.CLIENT, transmit_ts=transmit_ts)
    )


def random_transmit_ts() -> int:
    """A random non-zero 64-bit transmit timestamp (0 would mean "not set")."""
    while True:
        value = secrets.randbits(64)
        if value:
            return value


def evaluate_reply(
    reply: NtpPacket, *, request_transmit_ts: int, t1_ns: int, t4_ns: int
) -> QueryReply:
    """Check a decoded reply and compute offset and delay (RFC 5905 §8).

    ``t1_ns``/``t4_ns`` are our Unix-ns clock readings at send and receive.  T2/T3 are raw
    server timestamps, subtracted as NTP64 values so the result stays right across an era
    rollover.  Raises ``ReplyRejected`` naming the first failed check.
    """
    if reply.mode != Mode.SERVER:
        raise ReplyRejected(f"not a server reply (mode {int(reply.mode)})")
    # Test 2 (bogus): the origin must echo our random transmit timestamp, else the reply is a
    # stale duplicate or a forgery. Checked before KoD so a spoofed KoD is ignored too.
    if reply.origin_ts != request_transmit_ts:
        raise ReplyRejected("origin timestamp does not match our request (stale or spoofed)")
    code = kiss_code(reply)
    if code is not None:
        raise ReplyRejected(f"server sent kiss-o'-death {code}")
    if not 1 <= reply.stratum <= 15:
        raise ReplyRejected(f"server is unsynchronized (stratum {reply.stratum})")
    if reply.leap == Leap.UNSYNCHRONIZED:
        raise ReplyRejected("server is unsynchronized (leap indicator 3)")
    # Test 3 (invalid): a zero timestamp means the server never filled it in.
    if reply.receive_ts == 0 or reply.transmit_ts == 0:
        raise ReplyRejected("reply has a zero receive or transmit timestamp")
    t1 = ntp64_from_unix_ns(t1_ns)
    t4 = ntp64_from_unix_ns(t4_ns)
    # offset = ((T2 - T1) + (T3 - T4)) / 2, delay = (T4 - T1) - (T3 - T2)
    forward_ns = ntp64_diff_ns(reply.receive_ts, t1)
    backward_ns = ntp64_diff_ns(reply.transmit_ts, t4)
    offset_ns = (forward_ns + backward_ns) // 2
    delay_ns = (t4_ns - t1_ns) - ntp64_diff_ns(reply.transmit_ts, reply.receive_ts)
    return QueryReply(
        offset_ns=offset_ns,
        delay_ns=delay_ns,
        stratum=reply.stratum,
        reference_id=refid_to_str(reply.reference_id, reply.stratum),
        leap=_LEAP_NAMES[Leap(reply.leap)],
        poll=reply.poll,
        precision=reply.precision,
        root_delay_ns=ns_from_short(reply.root_delay),
        root_dispersion_ns=ns_from_short(reply.root_dispersion),
        version=reply.version,
    )


def format_address(sockaddr: tuple[object, ...], family: int) -> str:
    """``ip:port``, or ``[ip6]:port`` for IPv6."""
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def resolve(host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
    """Every UDP address of ``host``, in getaddrinfo's order of preference; raises
    ``QueryError`` if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise QueryError(f"cannot resolve {host!r}: {exc.strerror}") from None
    found = [(int(family), tuple(sockaddr)) for family, _t, _p, _n, sockaddr in infos]
    return list(dict.fromkeys(found))


def _receive(sock: socket.socket) -> tuple[bytes, int]:
    """One datagram and its arrival time (kernel timestamp if we got one)."""
    data, ancdata, _flags, _addr = sock.recvmsg(1024, socket.CMSG_SPACE(_TIMESPEC.size))
    t4_ns = time.time_ns()
    for level, kind, payload in ancdata:
        if (
            level == socket.SOL_SOCKET
            and kind == _SO_TIMESTAMPNS
            and len(payload) >= _TIMESPEC.size
        ):
            sec, nsec = _TIMESPEC.unpack_from(payload)
            t4_ns = sec * 1_000_000_000 + nsec
    return data, t4_ns


def query_once(family: int, sockaddr: tuple[object, ...], timeout: float) -> QueryReply:
    """Send one request and wait up to ``timeout`` s for a usable reply.

    Datagrams that fail to decode or do not echo our timestamp are skipped (they may be late
    answers or noise); if nothing usable arrives, raises ``ReplyRejected`` with the last reason.
    """
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if sys.platform.startswith("linux"):
            # Without kernel timestamps we fall back to reading the clock after recvmsg.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            raise ReplyRejected(f"cannot send: {exc.strerror or exc}") from None
        transmit_ts = random_transmit_ts()
        request = build_request(transmit_ts)
        deadline = time.monotonic() + timeout
        t1_ns = time.time_ns()
        try:
            sock.send(request)
        except OSError as exc:
            raise ReplyRejected(f"cannot send: {exc.strerror or exc}") from None
        last_reason = f"no reply within {timeout:g} s"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyRejected(last_reason)
            sock.settimeout(remaining)
            try:
                data, t4_ns = _receive(sock)
            except TimeoutError:
                raise ReplyRejected(last_reason) from None
            except ConnectionRefusedError:
                raise ReplyRejected("port unreachable (no NTP server there)") from None
            except OSError as exc:
                raise ReplyRejected(f"receive failed: {exc.strerror or exc}") from None
            try:
                packet = decode_ntp(data)
            except WireError as exc:
                last_reason = f"malformed reply: {exc}"
                continue
            try:
                return evaluate_reply(
                    packet, request_transmit_ts=transmit_ts, t1_ns=t1_ns, t4_ns=t4_ns
                )
            except ReplyRejected as exc:
                last_reason = str(exc)
                if packet.origin_ts == transmit_ts:
                    raise  # a genuine answer that we cannot use: waiting longer won't help
                continue


def run_query(target: str, *, count: int, timeout: float, interval: float) -> QueryOutcome:
    """Query ``target`` ``count`` times, ``interval`` s apart; raises ``QueryError`` if unusable."""
    host, port = parse_target(target)
    addresses = resolve(host, port)
    outcome = QueryOutcome(target=target, address=format_address(addresses[0][1], addresses[0][0]))
    for i in range(count):
        if i:
            time.sleep(interval)
        # Until one address answers, each request tries them all in turn (a name such as
        # localhost may give ::1 first to a server listening on IPv4 only); then that one.
        failures: list[str] = []
        for family, sockaddr in addresses:
            address = format_address(sockaddr, family)
            try:
                outcome.replies.append(query_once(family, sockaddr, timeout))
            except ReplyRejected as exc:
                failures.append(f"{address}: {exc}" if len(addresses) > 1 else str(exc))
                continue
            outcome.address = address
            addresses = [(family, sockaddr)]
            break
        else:
            outcome.errors.append("; ".join(failures))
    return outcome
