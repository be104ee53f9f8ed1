"""[log] measurements, statistics and tracking while tsyncd follows a real chronyd server
(``-x``, local stratum 5), and ``tsyncctl cyclelogs`` after a logrotate-style move."""

from __future__ import annotations

from pathlib import Path

from peers import Peers, fast_sources_toml, free_udp_port, wait_for


def data_lines(path: Path) -> list[list[str]]:
    """The log's lines without its banners, split into columns."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [line.split() for line in lines if not line.startswith(("=", "Date (UTC)"))]


def test_logs_of_samples_filters_and_clock_updates(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (1,))
    server = f"127.0.0.1:{port}"
    logs = peers.tmp / "log" / "tsyncd"  # made by tsyncd
    client = peers.tsyncd(
        "tsyncd",
        fast_sources_toml(server)
        + f'[log]\ndirectory = "{logs}"\nmeasurements = true\nstatistics = true\n'
        "tracking = true\n",
    )
    wait_for("a few clock updates logged", lambda: len(data_lines(logs / "tracking.log")) >= 3)
    measured = data_lines(logs / "measurements.log")
    assert len(measured) >= 3
    _date, _time, name, leap, stratum, offset, delay, *_rest, refid, mode = measured[-1]
    assert (name, leap, stratum, refid, mode) == (server, "N", "5", "127.127.1.1", "basic")
    assert abs(float(offset)) < 1e-3 and 0 < float(delay) < 1e-2  # loopback
    stats = data_lines(logs / "statistics.log")
    assert stats[-1][2] == server and 1 <= int(stats[-1][3]) <= 8
    tracking = data_lines(logs / "tracking.log")[-1]
    assert tracking[2:4] == ["127.0.0.1", "6"]  # the reference we follow, and our stratum
    # logrotate moves the files; cyclelogs makes new ones, which fill again.
    for kind in ("measurements", "statistics", "tracking"):
        (logs / f"{kind}.log").rename(logs / f"{kind}.log.1")
    reopened = client.ctl("cyclelogs")["reopened"]
    assert reopened == [str(logs / f"{k}.log") for k in ("measurements", "statistics", "tracking")]
    wait_for("new lines after cyclelogs", lambda: data_lines(logs / "measurements.log"))
    assert (logs / "measurements.log").read_text().startswith("=")  # with its banner
