"""``python -m tsyncd.demo``: two tsyncd daemons talking NTP on loopback, offline.

One daemon serves its local clock at stratum 10 on 127.0.0.1; the other, in measure mode,
synchronizes from it.  Neither changes the host clock.  The demo waits until the client reports
synchronized, prints ``tsyncctl status``, ``tsyncctl peers`` and the server's ``serverstats``,
and stops both (or keeps them running with ``--keep-running``).  The configs are embedded here so
the demo needs nothing but the package; they are written to ``--dir`` for you to read.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from tsyncctl.client import ControlClient, ControlError

SERVER_CONF = """\
# tsyncd demo server: serves the local clock at stratum 10 on loopback; never changes the clock.
[clock]
mode = "measure"

[synchronization]
local-stratum = 10

[[server]]
listen = "127.0.0.1:{port}"

[control]
socket = "{dir}/server.sock"

[metrics]
listen = "127.0.0.1:{metrics_port}"
"""

CLIENT_CONF = """\
# tsyncd demo client: measures the demo server every 1-4 s; never changes the clock.
[clock]
mode = "measure"

[[source]]
mode = "server"
address = "127.0.0.1:{port}"
iburst = true
min-poll = 0
max-poll = 2

[control]
socket = "{dir}/client.sock"
"""


def _free_port(kind: int, preferred: int) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = s.getsockname()[1]
            return chosen
    raise OSError("no free port on 127.0.0.1")


def _tsyncctl(*args: str) -> None:
    click.secho(f"$ tsyncctl {' '.join(args)}", bold=True)
    subprocess.run([sys.executable, "-m", "tsyncctl", *args], check=False)
    click.echo()


def _wait_synchronized(sock: Path, procs: list[subprocess.Popen[bytes]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        with contextlib.suppress(ControlError):
            status = ControlClient(sock, timeout=1.0).call("status")
            if status.get("synchronized"):
                return True
        time.sleep(0.1)
    return False


@click.command()
@click.option(
    "--dir",
    "run_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo-run"),
    show_default=True,
    help="Where the configs, sockets and logs go.",
)
@click.option("--keep-running", is_flag=True, help="Leave both daemons running until Ctrl-C.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for sync.")
def main(run_dir: Path, keep_running: bool, timeout: float) -> None:
    """Run a tsyncd server and a tsyncd client on loopback and show what they see."""
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port(socket.SOCK_DGRAM, 11123)
    metrics_port = _free_port(socket.SOCK_STREAM, 9975)
    fill = {"port": port, "dir": run_dir, "metrics_port": metrics_port}
    (run_dir / "server.toml").write_text(SERVER_CONF.format(**fill))
    (run_dir / "client.toml").write_text(CLIENT_CONF.format(**fill))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("server", "client"):
            log = (run_dir / f"{name}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tsyncd", "-c", str(run_dir / f"{name}.toml")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        click.echo(f"tsyncd server on 127.0.0.1:{port} (stratum 10, local clock), client polling")
        click.echo(f"it; configs and logs in {run_dir}; metrics on :{metrics_port}/metrics\n")
        client_sock = run_dir / "client.sock"
        if not _wait_synchronized(client_sock, procs, timeout):
            for name in ("server", "client"):
                sys.stderr.write((run_dir / f"{name}.log").read_text(errors="replace"))
            raise click.ClickException(f"the client did not synchronize within {timeout} s")
        time.sleep(2.5)  # let a few more exchanges fill the filter and reach register
        _tsyncctl("-s", str(client_sock), "status")
        _tsyncctl("-s", str(client_sock), "peers")
        _tsyncctl("-s", str(client_sock), "tracking")
        _tsyncctl("-s", str(run_dir / "server.sock"), "serverstats")
        if keep_running:
            click.echo("Both daemons keep running; press Ctrl-C to stop them.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(10) for proc in procs]
    if any(codes):
        raise click.ClickException(f"a daemon exited with status {codes}")
    click.echo("demo finished: both daemons stopped cleanly")


if __name__ == "__main__":
    main()
