"""Prometheus exporter: a real asyncio HTTP server on 127.0.0.1, scraped with urllib."""

from __future__ import annotations

import dataclasses
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
import snapshot_examples as examples
from loop_thread import serving
from prometheus_client.parser import text_string_to_metric_families

from tsyncd import __version__
from tsyncd.metrics import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, MetricsExporter
from tsyncd.snapshots import (
    NtsSourceSnapshot,
    ServerStatsSnapshot,
    SourceSnapshot,
    SystemSnapshot,
)

# The shared examples, with the values asserted on below that differ from them.
SYSTEM = replace(
    examples.SYSTEM,
    offset=-0.000125,
    root_delay=0.004,
    root_dispersion=0.0015,
    leap="insert",
    poll=7,
)
SELECTED = replace(examples.SELECTED, offset=0.00025, jitter=0.00004, select_code="*")
UNREACHABLE = replace(examples.UNREACHABLE, name="[2001:db8::1]:123", address="", online=False)
SERVER = examples.STATS


class FakeProvider:
    def __init__(self) -> None:
        self.system = SYSTEM
        self.sources = [SELECTED, UNREACHABLE]
        self.server = SERVER
        self.fail = False

    def system_snapshot(self) -> SystemSnapshot:
        if self.fail:
            raise RuntimeError("snapshot failed")
        return self.system

    def source_snapshots(self) -> list[SourceSnapshot]:
        return self.sources

    def server_snapshot(self) -> ServerStatsSnapshot:
        return self.server


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def exporter(provider: FakeProvider) -> Iterator[MetricsExporter]:
    with serving(MetricsExporter(provider, "127.0.0.1", 0)) as exp:
        yield exp


def fetch(exp: MetricsExporter, path: str = "/metrics") -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{exp.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_system_metrics(exporter: MetricsExporter) -> None:
    status, ctype, body = fetch(exporter)
    assert status == 200
    assert ctype.startswith("text/plain")
    got = samples(body)
    assert got[("tsyncd_system_offset_seconds", ())] == pytest.approx(-0.000125)
    assert got[("tsyncd_system_stratum", ())] == 2
    assert got[("tsyncd_system_root_delay_seconds", ())] == pytest.approx(0.004)
    assert got[("tsyncd_system_root_dispersion_seconds", ())] == pytest.approx(0.0015)
    assert got[("tsyncd_system_leap", ())] == 1  # insert
    assert got[("tsyncd_system_poll_log2_seconds", ())] == 7
    assert got[("tsyncd_system_synchronized", ())] == 1
    assert got[("tsyncd_build_info", (("version", __version__),))] == 1


def test_nts_source_metrics_say_why_a_source_gets_no_keys(
    exporter: MetricsExporter, provider: FakeProvider
) -> None:
    """QA s18 hunt-nts-client #5: a source whose NTS-KE fails (an expired certificate) looked
    like any source never heard from; its NTS state is now exported."""
    assert not any(n.startswith("tsyncd_source_nts_") for n, _ in samples(fetch(exporter)[2]))
    failing = NtsSourceSnapshot(
        ke_server="ke.example:4460",
        cookies=0,
        aead=None,
        last_ke=None,
        tls_group=None,
        key_exchanges=0,
        ke_failures=3,
        last_error="certificate has expired",
        authenticated=0,
        naks=0,
        next_ke=22.5,
        ke_backoff="NTS-KE failed",
    )
    good = replace(
        failing, cookies=8, last_ke=3600.0, key_exchanges=1, ke_failures=0, authenticated=40,
        naks=1, next_ke=None, ke_backoff=None, last_error=None,
    )  # fmt: skip
    provider.sources = [replace(SELECTED, nts=good), replace(UNREACHABLE, nts=failing)]
    got = samples(fetch(exporter)[2])
    a = (("address", "192.0.2.1:123"), ("source", "a.example:123"))
    b = (("address", ""), ("source", "[2001:db8::1]:123"))
    assert got[("tsyncd_source_nts_cookies", a)] == 8 and got[("tsyncd_source_nts_cookies", b)] == 0
    assert got[("tsyncd_source_nts_key_exchange_failures_total", b)] == 3
    assert got[("tsyncd_source_nts_key_exchange_backoff_seconds", b)] == 22.5
    assert got[("tsyncd_source_nts_key_exchange_backoff_seconds", a)] == 0
    assert got[("tsyncd_source_nts_key_exchanges_total", a)] == 1
    assert got[("tsyncd_source_nts_naks_total", a)] == 1
    assert got[("tsyncd_source_nts_authenticated_responses_total", a)] == 40
    assert got[("tsyncd_source_nts_key_age_seconds", a)] == 3600
    assert ("tsyncd_source_nts_key_age_seconds", b) not in got  # no keys yet


def test_no_system_offset_while_unsynchronized(
    exporter: MetricsExporter, provider: FakeProvider
) -> None:
    """QA s17 hunt-life #11: unsynchronized, the offset read 0.0, a perfect clock to an alert
    rule; it is absent now, as the values it has no estimate for are."""
    provider.system = replace(SYSTEM, synchronized=False, offset=0.0)
    got = samples(fetch(exporter)[2])
    assert ("tsyncd_system_offset_seconds", ()) not in got
    assert got[("tsyncd_system_synchronized", ())] == 0


def test_source_metrics_have_labels_and_omit_unknown_values(exporter: MetricsExporter) -> None:
    got = samples(fetch(exporter)[2])
    a = (("address", "192.0.2.1:123"), ("source", "a.example:123"))
    b = (("address", ""), ("source", "[2001:db8::1]:123"))
    assert got[("tsyncd_source_offset_seconds", a)] == pytest.approx(0.00025)
    assert got[("tsyncd_source_delay_seconds", a)] == pytest.approx(0.0031)
    assert got[("tsyncd_source_jitter_seconds", a)] == pytest.approx(0.00004)
    assert got[("tsyncd_source_reach", a)] == 255
    assert got[("tsyncd_source_poll_log2_seconds", a)] == 6
    assert got[("tsyncd_source_stratum", a)] == 1
    assert got[("tsyncd_source_packets_sent_total", a)] == 20
    assert got[("tsyncd_source_packets_received_total", a)] == 19
    assert got[("tsyncd_source_selected", a)] == 1
    info = "tsyncd_source_state_info"
    assert got[(info, tuple(sorted((*a, ("code", "*"), ("state", "selected")))))] == 1
    assert got[(info, tuple(sorted((*b, ("code", ""), ("state", "unreachable")))))] == 1
    # the unreachable source: counters and reach present, no invented measurements
    assert got[("tsyncd_source_reach", b)] == 0
    assert got[("tsyncd_source_packets_sent_total", b)] == 5
    assert got[("tsyncd_source_selected", b)] == 0
    assert got[("tsyncd_source_online", a)] == 1 and got[("tsyncd_source_online", b)] == 0
    dropped = "tsyncd_source_dropped_packets_total"
    assert got[(dropped, tuple(sorted((*a, ("reason", "duplicate")))))] == 1
    assert got[(dropped, tuple(sorted((*b, ("reason", "bad_mac")))))] == 3
    assert got[(dropped, tuple(sorted((*b, ("reason", "kiss_of_death")))))] == 2
    for name in ("offset_seconds", "delay_seconds", "jitter_seconds", "stratum"):
        assert (f"tsyncd_source_{name}", b) not in got


def test_server_metrics(exporter: MetricsExporter) -> None:
    got = samples(fetch(exporter)[2])
    assert got[("tsyncd_server_received_packets_total", ())] == 1000
    assert got[("tsyncd_server_sent_packets_total", ())] == 990
    assert got[("tsyncd_server_dropped_packets_total", (("reason", "rate_limited"),))] == 7
    assert got[("tsyncd_server_dropped_packets_total", (("reason", "malformed"),))] == 3
    assert got[("tsyncd_server_kod_sent_total", ())] == 4


def test_values_are_read_at_scrape_time(exporter: MetricsExporter, provider: FakeProvider) -> None:
    assert samples(fetch(exporter)[2])[("tsyncd_system_synchronized", ())] == 1
    provider.system = replace(
        SYSTEM, synchronized=False, unsynchronized_reason="no sources", stratum=16, leap="bogus"
    )
    provider.sources = []
    got = samples(fetch(exporter)[2])
    assert got[("tsyncd_system_synchronized", ())] == 0
    assert got[("tsyncd_system_stratum", ())] == 16
    assert ("tsyncd_system_leap", ()) not in got  # an unknown leap string is left out
    assert not any(name.startswith("tsyncd_source_") for name, _ in got)


def test_other_paths_are_404(exporter: MetricsExporter) -> None:
    status, _ctype, body = fetch(exporter, "/nope")
    assert status == 404
    assert "/metrics" in body
    assert fetch(exporter, "/metrics?x=1")[0] == 200


def test_other_methods_are_405(exporter: MetricsExporter) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{exporter.port}/metrics", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 405


def test_collector_failure_is_500_and_exporter_survives(
    exporter: MetricsExporter, provider: FakeProvider
) -> None:
    provider.fail = True
    assert fetch(exporter)[0] == 500
    provider.fail = False
    assert fetch(exporter)[0] == 200


def test_garbage_request_does_not_stop_the_exporter(exporter: MetricsExporter) -> None:
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
        s.sendall(b"\x00\xff garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert fetch(exporter)[0] == 200


def test_port_before_start_is_an_error(provider: FakeProvider) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = MetricsExporter(provider, "127.0.0.1", 0).port


def test_nts_server_metrics_appear_with_nts(
    exporter: MetricsExporter, provider: FakeProvider
) -> None:
    assert not any(name.startswith("tsyncd_nts_") for name, _ in samples(fetch(exporter)[2]))
    provider.server = dataclasses.replace(
        provider.server,
        nts_key_epoch=7,
        nts_key_id="1a2b3c4d",
        nts_ke_connections=5,
        nts_ke_completed=4,
        nts_ke_failures=1,
        nts_ke_failures_by_reason={"rate_limited": 1},
        nts_cookies_issued=40,
        nts_requests=123,
        nts_naks=2,
    )
    got = samples(fetch(exporter)[2])
    assert got[("tsyncd_nts_ke_connections_total", ())] == 5
    assert got[("tsyncd_nts_ke_completed_total", ())] == 4
    assert got[("tsyncd_nts_ke_failures_total", ())] == 1
    assert got[("tsyncd_nts_ke_failed_sessions_total", (("reason", "rate_limited"),))] == 1
    assert got[("tsyncd_nts_cookies_issued_total", ())] == 40
    assert got[("tsyncd_nts_requests_total", ())] == 123
    assert got[("tsyncd_nts_naks_total", ())] == 2
    assert got[("tsyncd_nts_key_epoch", ())] == 7
    assert got[("tsyncd_nts_key_info", (("key_id", "1a2b3c4d"),))] == 1


def _hold(exp: MetricsExporter, source_ip: str, n: int) -> list[socket.socket]:
    """``n`` connections from ``source_ip`` that send half a request and wait (slowloris)."""
    held = []
    for _ in range(n):
        s = socket.create_connection(
            ("127.0.0.1", exp.port), timeout=5, source_address=(source_ip, 0)
        )
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        held.append(s)
    return held


def _scrape_from(exp: MetricsExporter, source_ip: str) -> bytes:
    with socket.create_connection(
        ("127.0.0.1", exp.port), timeout=5, source_address=(source_ip, 0)
    ) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _wait_for_count(exp: MetricsExporter, count: int) -> None:
    deadline = time.monotonic() + 5
    while exp.connection_count != count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert exp.connection_count == count


def test_one_address_cannot_hold_every_connection(exporter: MetricsExporter) -> None:
    """Half-sent requests from one address hold at most half the slots: a scraper elsewhere
    still gets its metrics, and a connection over a cap a 503 rather than a reset."""
    held = _hold(exporter, "127.0.0.1", MAX_CONNECTIONS)
    try:
        _wait_for_count(exporter, MAX_CONNECTIONS_PER_IP)
        assert _scrape_from(exporter, "127.0.0.1").startswith(b"HTTP/1.1 503")
        assert _scrape_from(exporter, "127.0.0.2").startswith(b"HTTP/1.1 200")
        held += _hold(exporter, "127.0.0.3", MAX_CONNECTIONS_PER_IP)
        _wait_for_count(exporter, MAX_CONNECTIONS)
        for _ in range(5):  # every slot taken: each scrape is told so, none is reset
            assert _scrape_from(exporter, "127.0.0.4").startswith(b"HTTP/1.1 503")
    finally:
        for s in held:
            s.close()
    _wait_for_count(exporter, 0)
    assert fetch(exporter)[0] == 200
