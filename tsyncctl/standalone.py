"""``tsyncctl``'s commands that need no running tsyncd: ``query`` (ask an NTP server for the
time), ``keygen`` (a line for the [keys] file) and the ``tsq`` group (``tsyncctl.tsq``).
"""

from __future__ import annotations

import click

from tsyncctl.group import CliError, cli, print_json
from tsyncctl.options import json_option
from tsyncctl.query import run_query
from tsyncctl.tsq import tsq as tsq_commands


@cli.command()
@click.argument("key_id", type=click.IntRange(1, 0xFFFFFFFF), default=1, required=False)
@click.argument("kind", metavar="[TYPE]", default="SHA1", required=False)
@click.argument("bits", metavar="[BITS]", type=int, required=False)
def keygen(key_id: int, kind: str, bits: int | None) -> None:
    """Print a new random key for the [keys] file, like 'chronyc keygen': ID (default 1),
    TYPE (SHA1 by default; MD5, SHA256, SHA384, SHA512, AES128, AES256) and BITS (160 by
    default for hashes; AES keys have their own).  Needs no running tsyncd."""
    import secrets

    from tsyncd.symkey import SymmetricKey, key_line, keygen_bits

    try:
        size = keygen_bits(kind.upper(), bits)
    except ValueError as exc:
        raise CliError(f"keygen: {exc}") from None
    click.echo(key_line(SymmetricKey(key_id, kind.upper(), secrets.token_bytes(size // 8))))


@cli.command()
@click.argument("target", metavar="HOST[:PORT]")
@click.option(
    "-c",
    "--count",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Requests to send.",
)
@click.option(
    "-t",
    "--timeout",
    "reply_timeout",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Seconds to wait for each reply.",
)
@click.option(
    "-i",
    "--interval",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds between requests.",
)
@json_option
def query(target: str, count: int, reply_timeout: float, interval: float, as_json: bool) -> None:
    """Ask an NTP server for the time, without tsyncd (like 'sntp').

    Exits 0 if at least one reply was good. IPv6 addresses go in brackets: [::1]:123.
    """
    outcome = run_query(target, count=count, timeout=reply_timeout, interval=interval)
    if as_json:
        print_json(
            {
                "target": outcome.target,
                "address": outcome.address,
                "replies": [
                    r.as_json(server=target, address=outcome.address) for r in outcome.replies
                ],
                "errors": outcome.errors,
            }
        )
    else:
        for reply in outcome.replies:
            click.echo(
                f"{target} offset {reply.offset_ns / 1e9:+.6f} s delay {reply.delay_ns / 1e9:.6f} s"
                f" stratum {reply.stratum} refid {reply.reference_id}"
            )
    if not outcome.replies:
        reason = outcome.errors[-1] if outcome.errors else "no reply"
        raise CliError(f"no good reply from {target} ({outcome.address}): {reason}")
    for error in outcome.errors:
        click.echo(f"tsyncctl: {target}: one request failed: {error}", err=True)


cli.add_command(tsq_commands)
