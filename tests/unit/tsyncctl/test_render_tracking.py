"""``tsyncctl tracking`` and ``status``: chronyc's layout and wording, from the JSON as the
daemon sends it (a field missing, from an older daemon, shows as "-")."""

from __future__ import annotations

from typing import Any

from tsyncctl.render import render_status, render_tracking
from tsyncd.wire.ntp import refid_for_address

V6_REFID = refid_for_address("::1")  # 0xCF404DC8, chronyd's refid of its ::1 source too

TRACKING: dict[str, Any] = {
    "synchronized": True,
    "unsynchronized_reason": None,
    "clock_mode": "measure",
    "reference_id": "207.64.77.200",  # the hash, read as an IPv4 address
    "reference_id_raw": V6_REFID,
    "reference_address": "::1",
    "selected_source": "v6",
    "stratum": 8,
    "reference_time": 1_700_000_000.0,
    "system_offset": 1.283e-6,
    "last_offset": -9.5e-8,
    "rms_offset": 2e-7,
    "residual_offset": 0.0,
    "frequency_ppm": -1.5,
    "skew_ppm": 0.05,
    "applied_frequency_ppm": -1.5,
    "host_clock_offset": -0.899999,
    "root_delay": 1e-4,
    "root_dispersion": 5e-3,
    "update_interval": 0.25,
    "clock_updates": 427,
    "discipline_state": "sync",
    "leap": "none",
    "poll": -2,
}


def _fields(text: str) -> dict[str, str]:
    return {
        key.strip(): value for key, value in (line.split(" : ", 1) for line in text.split("\n"))
    }


def test_an_ipv6_reference_shows_its_hex_refid_and_address_as_chronyc() -> None:
    """CF404DC8 (::1), not 207.64.77.200, which reads as a real IPv4 server."""
    assert _fields(render_tracking(TRACKING))["Reference ID"] == "CF404DC8 (::1)"
    status = {"reference_id": "207.64.77.200", "reference_id_raw": V6_REFID}
    assert _fields(render_status({**status, "reference_address": "::1"}))["Reference ID"] == (
        "CF404DC8 (::1)"
    )
    # An older daemon's answer, without the address: the hex and the text, as before.
    assert _fields(render_status(status))["Reference ID"] == "CF404DC8 (207.64.77.200)"
    ipv4 = {"reference_id": "192.0.2.1", "reference_id_raw": 0xC0000201}
    assert _fields(render_tracking(ipv4))["Reference ID"] == "C0000201 (192.0.2.1)"
    assert _fields(render_tracking({}))["Reference ID"] == "-"


def test_tracking_says_which_way_each_offset_goes_in_chronycs_words() -> None:
    """chronyc's "fast/slow of NTP time": its Last offset has the opposite sign to ours, so a
    bare sign would be read backwards."""
    fields = _fields(render_tracking(TRACKING))
    assert fields["System offset"] == "+1.283 µs (slow of NTP time)"
    assert fields["Host clock offset"] == "-899.999 ms (fast of NTP time)"
    assert fields["Last offset"] == "-95.000 ns (fast of NTP time)"
    assert fields["Residual offset"] == "+0.000 ns"  # nothing to say of none
    assert fields["RMS offset"] == "200.000 ns"
    assert _fields(render_tracking({}))["System offset"] == "-"


def test_tracking_says_the_leap_status_in_chronycs_words() -> None:
    """tracking follows chronyc tracking's layout, so its words too; JSON keeps its values."""
    shown = {
        leap: _fields(render_tracking({**TRACKING, "leap": leap}))["Leap status"]
        for leap in ("none", "insert", "delete", "unsynchronized", "future")
    }
    assert shown == {
        "none": "Normal",
        "insert": "Insert second",
        "delete": "Delete second",
        "unsynchronized": "Not synchronised",
        "future": "future",  # a newer daemon's value, as it is
    }
    assert _fields(render_status({"leap": "none"}))["Leap status"] == "none"
