"""Example snapshots shared by the control, tsyncctl and metrics tests.

Tests assert on these values: tests/unit/tsyncctl/test_cli.py uses them as they are (its
human-output tests check nearly every field), the others derive their own variants with
``dataclasses.replace``, stating the values they assert on that differ from these.  Change a
value here and the assertions that read it change with it.
"""

from __future__ import annotations

from dataclasses import replace

from tsyncd.snapshots import (
    NtsSourceSnapshot,
    ServerStatsSnapshot,
    SourceSnapshot,
    SystemSnapshot,
)

SYSTEM = SystemSnapshot(
    synchronized=True,
    unsynchronized_reason=None,
    clock_mode="system",
    stratum=2,
    reference_id="192.0.2.1",
    reference_id_raw=0xC0000201,
    reference_time=1_700_000_000.0,
    offset=-1.25e-5,
    root_delay=0.0041,
    root_dispersion=0.00052,
    leap="none",
    poll=6,
    precision=-20,
    selected_source="a.example:123",
    uptime=90061.0,
)
SELECTED = SourceSnapshot(
    name="a.example:123",
    address="192.0.2.1:123",
    mode="server",
    state="selected",
    state_reason=None,
    offset=0.0012345,
    delay=0.0031,
    jitter=0.000045,
    dispersion=0.0002,
    root_delay=0.001,
    root_dispersion=0.002,
    stratum=1,
    reference_id="GPS",
    leap="none",
    reach=0o377,
    poll=6,
    last_rx=35.0,
    packets_sent=20,
    packets_received=19,
    packets_dropped=1,
    kiss_code=None,
    drops_by_reason={"duplicate": 1},
)
# No reply yet: counters and reach, but no measurements to show.
UNREACHABLE = replace(
    SELECTED,
    name="b.example:123",
    address="[2001:db8::1]:123",
    state="unreachable",
    state_reason="no reply for 8 polls",
    offset=None,
    delay=None,
    jitter=None,
    dispersion=None,
    stratum=None,
    reach=0,
    last_rx=None,
    packets_sent=5,
    packets_received=0,
    packets_dropped=5,
    kiss_code="RATE",
    drops_by_reason={"kiss_of_death": 2, "bad_mac": 3},
)
# An NTS source's state after two key exchanges.
NTS_STATE = NtsSourceSnapshot(
    ke_server="nts.example:4460",
    cookies=7,
    aead="AES-SIV-CMAC-256",
    last_ke=125.0,
    tls_group="X25519MLKEM768",
    key_exchanges=2,
    ke_failures=0,
    last_error=None,
    authenticated=38,
    naks=1,
)
STATS = ServerStatsSnapshot(
    listen=["0.0.0.0:123", "[::]:123"],
    received=1000,
    sent=990,
    dropped=10,
    dropped_by_reason={"rate_limited": 7, "malformed": 3},
    kod_sent=4,
)
