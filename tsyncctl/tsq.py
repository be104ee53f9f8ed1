"""``tsyncctl tsq query`` and ``tsyncctl tsq sync``: one-shot TSQ (time over QUIC) tools.

They take the reference tools' options and messages (shared/specs/tsq.md §7, §8, §9), so their
users feel at home, and fix what the reference gets wrong:

* one QUIC connection per server, reused for every sample, servers measured in parallel, no
  fixed sleeps, and no closing-period wait: a 5-sample sync on loopback takes milliseconds,
  not the reference's 2-3.5 s (``python -m bench.tsq``);
* connect and reply timeouts; a fresh random nonce per query, checked on the reply; T1..T4
  sanity checks (``sync/tsq.evaluate``);
* samples combined by delay (lowest-delay filter, 1/delay² weights; ``sync/tsq.combine``)
  rather than a plain median or mean, and only those of the servers that agree (RFC 5905
  §11.2.1 intersection, ``sync/tsq.select_servers``): a server with a wrong clock is left
  out, and ``sync`` refuses when no majority agrees rather than adjust to a time no server
  gave;
* ``sync`` slews with adjtime() (the kernel's single-shot slew, which always works), not the
  PLL offset input the reference uses, which is a no-op unless an NTP daemon enabled the PLL.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import click

from tsyncctl.group import print_json
from tsyncctl.options import json_option
from tsyncd.config import TSQ_DATAGRAM_PORT as DATAGRAM_PORT
from tsyncd.config import TSQ_STREAM_PORT as STREAM_PORT
from tsyncd.config import TsqTransport as Transport
from tsyncd.config import parse_endpoint
from tsyncd.config_host import AIOQUIC_HINT, pem_ca_problem
from tsyncd.sync.tsq import (
    SERVER_ERROR_NS,
    Agreement,
    Rejected,
    ServerEstimate,
    TsqSample,
    evaluate,
    select_servers,
)

CONNECT_TIMEOUT_S: Final = 3.0  # default handshake wait (the reference has none, spec §2.4)
REPLY_TIMEOUT_S: Final = 3.0  # the reference clients' per-query wait
INSECURE_WARNING: Final = "WARNING: Certificate verification disabled!"
_NS_PER_MS: Final = 1_000_000

COMBINE_HELP: Final = (
    "Each server's samples are combined by delay, not by a plain median: only samples whose "
    "round trip is within twice the shortest one are kept (queueing only adds delay, and a "
    "sample's error is bounded by half its delay), and their offsets are averaged with "
    "weights 1/delay². With several servers, only those that agree are used (RFC 5905 "
    "§11.2.1, as chronyd and ntpd select): each server's offset is good to within half its "
    f"round trip plus {SERVER_ERROR_NS / _NS_PER_MS:g} ms for its own error, and a majority "
    "of the servers must share a stretch of those intervals. The others are left out as "
    "falsetickers; with no majority (e.g. two servers that disagree) sync refuses to adjust "
    "the clock."
)


class TsqToolError(click.ClickException):
    """A failure shown as one line on stderr, exit code 1 (the reference's exit status)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


@dataclass(slots=True)
class ServerResult:
    """What one server gave us."""

    name: str  # as given on the command line
    address: str = ""  # ip:port actually used
    samples: list[TsqSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def agreement(results: list[ServerResult]) -> Agreement | None:
    """Which servers agree (``sync/tsq.select_servers``); None when no server answered."""
    if not any(r.samples for r in results):
        return None
    return select_servers([(r.name, r.samples) for r in results])


def _ms(ns: int) -> str:
    return f"{ns / _NS_PER_MS:+.3f} ms"


def _interval_text(e: ServerEstimate) -> str:
    return f"{_ms(e.combined.offset_ns)} ± {e.distance_ns / _NS_PER_MS:.3f} ms"


def _left_out(a: Agreement) -> list[str]:
    """Why each server that answered is not used, one line each (none when all agree)."""
    if a.combined is None:
        return [
            "No majority of the servers agree, none used: "
            + ", ".join(f"{e.name} {_interval_text(e)}" for e in a.servers)
        ]
    return [
        f"{e.name}: left out (falseticker): offset {_interval_text(e)} is "
        f"outside [{_ms(a.low_ns)}, {_ms(a.high_ns)}], where {len(a.agreeing)} of "
        f"{len(a.servers)} servers agree"
        for e in a.servers
        if e.falseticker
    ]


def _port_option(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise TsqToolError("Port must be between 1 and 65535")
    return value


def _ca_option(value: Path | None) -> Path | None:
    """A CA file aioquic can verify with: checked here, as the daemon checks a source's
    certificate-authority, since aioquic reads it only in the handshake (a traceback then)."""
    if value is not None:
        problem = pem_ca_problem(value)
        if problem is not None:
            raise TsqToolError(f"--ca {value}: expected {problem}")
    return value


def _targets(servers: tuple[str, ...], port: int | None, transport: Transport) -> list[Any]:
    if not servers:
        raise TsqToolError("At least one server must be specified")
    default = port or (STREAM_PORT if transport == "stream" else DATAGRAM_PORT)
    out = []
    for text in servers:
        try:
            endpoint = parse_endpoint(text, default)
        except ValueError as exc:
            if "port" in str(exc):  # as the reference says it of a bad --port (QA s22)
                raise TsqToolError(f"Port must be between 1 and 65535 (in {text!r})") from None
            raise TsqToolError(f"bad server {text!r}: {exc}") from None
        if endpoint.port == 0:
            raise TsqToolError(f"Port must be between 1 and 65535 (in {text!r})")
        out.append((text, endpoint.host, endpoint.port))
    return out


async def _measure_one(
    name: str,
    host: str,
    port: int,
    *,
    count: int,
    transport: Transport,
    ca_file: Path | None,
    insecure: bool,
    connect_timeout: float,
    reply_timeout: float,
) -> ServerResult:
    # aioquic is imported only when a TSQ command runs: tsyncctl's other commands work
    # without it (Debian 12 does not package it).
    from tsyncd.net.quic import client_configuration
    from tsyncd.net.tsq import TsqClient, TsqClientError

    result = ServerResult(name=name)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        result.errors.append(f"cannot resolve {host!r}: {exc}")
        return result
    config = client_configuration(transport, server_name=host, ca_file=ca_file, insecure=insecure)
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    client = None
    failures: list[str] = []
    for ip in ips:  # the first that takes a connection (localhost may give ::1 first)
        result.address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        try:
            client = await TsqClient.connect(
                ip, port, config, now_ns=time.time_ns, timeout_s=connect_timeout
            )
            break
        except TsqClientError as exc:
            failures.append(f"{result.address}: {exc}" if len(ips) > 1 else str(exc))
    if client is None:
        result.errors.extend(failures)
        return result
    try:
        for _ in range(count):
            try:
                ex = await client.query(reply_timeout)
                result.samples.append(
                    evaluate(ex.reply, nonce=ex.nonce, t1_ns=ex.t1_ns, t4_ns=ex.t4_ns)
                )
            except (TsqClientError, Rejected) as exc:
                result.errors.append(str(exc))
                if isinstance(exc, TsqClientError) and client.closed:
                    break
    finally:
        client.close()
    return result


async def measure(
    targets: list[Any],
    *,
    count: int,
    transport: Transport,
    ca_file: Path | None = None,
    insecure: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    reply_timeout: float = REPLY_TIMEOUT_S,
) -> list[ServerResult]:
    """``count`` samples from each (name, host, port) target, all servers in parallel."""
    return list(
        await asyncio.gather(
            *(
                _measure_one(
                    name,
                    host,
                    port,
                    count=count,
                    transport=transport,
                    ca_file=ca_file,
                    insecure=insecure,
                    connect_timeout=connect_timeout,
                    reply_timeout=reply_timeout,
                )
                for name, host, port in targets
            )
        )
    )


def _common_options(f: Any) -> Any:
    for option in reversed(
        [
            click.argument("servers", nargs=-1, metavar="SERVER..."),
            click.option(
                "--port",
                type=int,
                default=None,
                callback=lambda _c, _p, v: _port_option(v),
                help=f"UDP port (default {DATAGRAM_PORT} for datagram, {STREAM_PORT} for "
                "stream); SERVER may also be host:port or [IPv6]:port, whose port wins.",
            ),
            click.option(
                "--transport",
                type=click.Choice(["datagram", "stream"]),
                default="datagram",
                show_default=True,
                help="TSQ variant: the server's port speaks one; there is no negotiation.",
            ),
            click.option(
                "--insecure", is_flag=True, help="Do not verify the server's certificate."
            ),
            click.option(
                "--ca",
                "ca_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                callback=lambda _c, _p, v: _ca_option(v),
                help="PEM file of the CA(s) to verify servers with (default: certifi's bundle).",
            ),
            click.option(
                "--timeout",
                "reply_timeout",
                type=click.FloatRange(min=0.01),
                default=REPLY_TIMEOUT_S,
                show_default=True,
                help="Seconds to wait for the QUIC handshake, and for each reply.",
            ),
        ]
    ):
        f = option(f)
    return f


def _warn_insecure(insecure: bool, ca_file: Path | None) -> None:
    if insecure:
        click.echo(INSECURE_WARNING, err=True)
        if ca_file is not None:  # QA s22: taken silently, as if it verified
            click.echo(f"WARNING: --ca {ca_file} is not used with --insecure", err=True)


def _run(targets: list[Any], *, reply_timeout: float, **kwargs: Any) -> list[ServerResult]:
    # aioquic logs handshake failures itself; we report them once, as FAILED lines.
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    try:
        import aioquic  # noqa: F401
    except ImportError:
        raise TsqToolError(f"TSQ needs the Python package aioquic ({AIOQUIC_HINT})") from None
    return asyncio.run(
        measure(targets, reply_timeout=reply_timeout, connect_timeout=reply_timeout, **kwargs)
    )


@click.group(name="tsq")
def tsq() -> None:
    """One-shot TSQ (time over QUIC) tools, like the reference tsq-* clients."""


@tsq.command(name="query", epilog=COMBINE_HELP)
@_common_options
@click.option(
    "--count",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Samples per server (1-100), on one connection.",
)
@json_option
def query_command(
    servers: tuple[str, ...],
    port: int | None,
    transport: Transport,
    insecure: bool,
    ca_file: Path | None,
    reply_timeout: float,
    count: int,
    as_json: bool,
) -> None:
    """Measure the offset to each SERVER over TSQ; never touches the clock.

    Prints T1..T4 of each sample and each server's combined offset and delay (positive
    offset: the server is ahead of us), and which servers are left out for disagreeing with
    the others. Exits 1 if no server gave a valid sample.
    """
    targets = _targets(servers, port, transport)
    _warn_insecure(insecure, ca_file)
    results = _run(
        targets,
        count=count,
        transport=transport,
        ca_file=ca_file,
        insecure=insecure,
        reply_timeout=reply_timeout,
    )
    agreed = agreement(results)
    estimates = _estimates(results, agreed)
    if as_json:
        print_json([_as_json(r, e) for r, e in zip(results, estimates, strict=True)])
    else:
        for r, e in zip(results, estimates, strict=True):
            for i, s in enumerate(r.samples, 1):
                click.echo(
                    f"{r.name} [{r.address}] sample {i}: T1={s.t1_ns} T2={s.t2:#018x} "
                    f"T3={s.t3:#018x} T4={s.t4_ns} offset {s.offset_ns / 1e6:+.3f} ms "
                    f"RTT {s.delay_ns / 1e6:.3f} ms"
                )
            for error in r.errors:
                click.echo(f"{r.name}: FAILED: {error}", err=True)
            if e is not None:
                c = e.combined
                click.echo(
                    f"{r.name}: offset {c.offset_ns / 1e6:+.3f} ms, RTT {c.delay_ns / 1e6:.3f} "
                    f"ms ({c.used} of {c.total} samples used)"
                )
        if agreed is not None:
            for line in _left_out(agreed):
                click.echo(line)
    if agreed is None:
        raise TsqToolError("No valid measurements received")


def _estimates(
    results: list[ServerResult], agreed: Agreement | None
) -> list[ServerEstimate | None]:
    """Each server's estimate, in order; None where it gave no sample (``Agreement.servers``
    skips those)."""
    answered = iter(agreed.servers if agreed else ())
    return [next(answered) if r.samples else None for r in results]


def _as_json(r: ServerResult, e: ServerEstimate | None) -> dict[str, Any]:
    c = e.combined if e else None
    return {
        "server": r.name,
        "address": r.address,
        "offset": c.offset_ns / 1e9 if c else None,  # s, server minus us
        "delay": c.delay_ns / 1e9 if c else None,  # s, the shortest round trip
        "samples": len(r.samples),
        "samples_used": c.used if c else 0,
        "errors": r.errors,
        # s: the offset is good to within this (half the round trip + the server allowance)
        "distance": e.distance_ns / 1e9 if e else None,
        "used": bool(e and e.used),  # agrees with the majority (a lone server does)
        "falseticker": bool(e and e.falseticker),  # outside the majority's interval
    }


@tsq.command(name="sync", epilog=COMBINE_HELP)
@_common_options
@click.option(
    "--queries",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="Samples per server (1-100), on one connection.",
)
@click.option(
    "--max-offset",
    type=click.FloatRange(min=0),
    default=1000.0,
    show_default=True,
    help="Refuse to adjust when the offset exceeds this many ms.",
)
@click.option(
    "--slew-threshold",
    type=click.FloatRange(min=0),
    default=500.0,
    show_default=True,
    help="Slew offsets up to this many ms (adjtime), step larger ones.",
)
@click.option("--dry-run", is_flag=True, help="Measure and report; do not touch the clock.")
@click.option(
    "--verbose",
    is_flag=True,
    help="Print every sample, every failure and each server's offset and whether it is used.",
)
def sync_command(
    servers: tuple[str, ...],
    port: int | None,
    transport: Transport,
    insecure: bool,
    ca_file: Path | None,
    reply_timeout: float,
    queries: int,
    max_offset: float,
    slew_threshold: float,
    dry_run: bool,
    verbose: bool,
) -> None:
    """Measure the offset to the SERVERs over TSQ, then step or slew the clock (root only).

    Each server is measured on its own; the servers that agree (a majority must) have their
    samples combined into one offset, and the others are left out. With no majority nothing
    is changed, nor with --dry-run.
    """
    targets = _targets(servers, port, transport)
    if not dry_run and os.geteuid() != 0:
        raise TsqToolError("adjusting the clock needs root privileges (or use --dry-run)")
    _warn_insecure(insecure, ca_file)
    started = time.perf_counter()
    results = _run(
        targets,
        count=queries,
        transport=transport,
        ca_file=ca_file,
        insecure=insecure,
        reply_timeout=reply_timeout,
    )
    agreed = agreement(results)
    for r in results:
        if not r.samples:
            click.echo(f"{r.name}: FAILED" + (f": {r.errors[-1]}" if r.errors else ""), err=True)
        elif verbose:
            for s in r.samples:
                click.echo(
                    f"{r.name}: offset {s.offset_ns / 1e6:+.3f} ms RTT {s.delay_ns / 1e6:.3f} ms"
                )
            for error in r.errors:
                click.echo(f"{r.name}: FAILED sample: {error}", err=True)
    if agreed is None:
        raise TsqToolError("No valid measurements received")
    if verbose:
        for e in agreed.servers:
            state = "used" if e.used else "falseticker" if e.falseticker else "not used"
            click.echo(f"{e.name}: server offset {_interval_text(e)} ({state})")
    c = agreed.combined
    if c is None:
        raise TsqToolError(
            "No majority of the servers agree, not adjusting the clock: "
            + ", ".join(f"{e.name} {_interval_text(e)}" for e in agreed.servers)
        )
    for line in _left_out(agreed):
        click.echo(line)
    elapsed_ms = (time.perf_counter() - started) * 1e3
    offset_ms = c.offset_ns / _NS_PER_MS
    failed = len(results) - len(agreed.servers)
    click.echo(
        f"Offset {offset_ms:+.3f} ms, RTT {c.delay_ns / 1e6:.3f} ms ({c.used} of {c.total} "
        f"samples used, {len(agreed.agreeing)} of {len(agreed.servers)} servers agree"
        f"{f', {failed} failed' if failed else ''}, {elapsed_ms:.1f} ms)"
    )
    if abs(offset_ms) > max_offset:
        raise TsqToolError(f"Offset too large ({offset_ms:+.3f} ms > {max_offset:g} ms)")
    action = "slew" if abs(offset_ms) <= slew_threshold else "step"
    if dry_run:
        click.echo(f"Dry run: would {action} the clock by {offset_ms:+.3f} ms")
        return
    try:
        if action == "slew":
            _slew(c.offset_ns)
        else:
            _step(c.offset_ns)
    except OSError as exc:
        raise TsqToolError(f"cannot {action} the clock: {exc}") from None
    click.echo(f"Clock {'slewed' if action == 'slew' else 'stepped'} by {offset_ms:+.3f} ms")


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


def _slew(offset_ns: int) -> None:
    """adjtime(): the kernel slews by ``offset_ns`` at 500 ppm (ADJ_OFFSET_SINGLESHOT).

    The timeval is built with floor division so that tv_usec is in [0, 1e6), which is what
    adjtime() expects (-0.2 s is -1 s + 800000 µs); the reference's macOS code got this wrong.
    """
    sec, usec = divmod(offset_ns // 1000, 1_000_000)
    libc = ctypes.CDLL(None, use_errno=True)
    tv = _Timeval(sec, usec)
    if libc.adjtime(ctypes.byref(tv), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _step(offset_ns: int) -> None:
    """Step atomically with ADJ_SETOFFSET (no ``date -s`` subprocess delay)."""
    if sys.platform != "linux":
        raise OSError("stepping is only supported on Linux")
    from tsyncd.clock.linux import LinuxClock

    LinuxClock().step(offset_ns)
