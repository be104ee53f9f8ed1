"""TSQ server counters as Prometheus metrics and in ``tsyncctl serverstats``."""

from __future__ import annotations

from tsyncctl.render import render_serverstats
from tsyncd.metrics import _tsq_server_metrics
from tsyncd.snapshots import ServerStatsSnapshot, TsqServerStatsSnapshot, as_json

SNAP = TsqServerStatsSnapshot(
    listen="127.0.0.1:8443",
    transport="stream",
    connections=2,
    connections_accepted=5,
    connections_refused=1,
    received=9,
    sent=7,
    errors_sent=1,
    dropped=2,
    dropped_by_reason={"truncated": 1, "oversized": 1},
)


def test_metrics_are_labelled_by_listen_and_transport() -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in _tsq_server_metrics([SNAP])
        for s in family.samples
    }
    labels = (("listen", "127.0.0.1:8443"), ("transport", "stream"))
    assert samples[("tsyncd_tsq_server_sent_responses_total", labels)] == 7
    assert samples[("tsyncd_tsq_server_connections", labels)] == 2
    assert samples[("tsyncd_tsq_server_connections_refused_total", labels)] == 1
    key = (
        "tsyncd_tsq_server_dropped_requests_total",
        tuple(sorted((*labels, ("reason", "oversized")))),
    )
    assert samples[key] == 1


def test_serverstats_render() -> None:
    stats = as_json(ServerStatsSnapshot(listen=[], received=0, sent=0, dropped=0, tsq=[SNAP]))
    text = render_serverstats(stats)
    assert "TSQ stream" in text and "127.0.0.1:8443" in text
    assert "Responses sent" in text and "oversized" in text
