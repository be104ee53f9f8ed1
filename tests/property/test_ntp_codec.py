"""Property tests for the NTP codec and timestamp conversions (hypothesis)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tsyncd.wire.errors import WireError
from tsyncd.wire.ntp import (
    CRYPTO_NAK,
    HEADER_LEN,
    ExtensionField,
    Leap,
    Mode,
    NtpPacket,
    decode_ntp,
    encode_ntp,
)
from tsyncd.wire.timestamps import (
    NTP_ERA_NS,
    ntp64_add_ns,
    ntp64_diff_ns,
    ntp64_from_unix_ns,
    unix_ns_from_ntp64,
)

# 300 examples in the suite, more under --hypothesis-profile=fuzz (tests/conftest.py)
EXAMPLES = settings(max_examples=max(300, settings.default.max_examples), deadline=None)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
macs = st.sampled_from([20, 24]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


def fields(*, last_without_mac: bool = False) -> st.SearchStrategy[ExtensionField]:
    """EFs as the decoder returns them: bodies of whole words, EF length >= 16.

    A last EF with no MAC behind it can't be 20 or 24 bytes long: that would be a MAC.
    """
    words = st.integers(3, 24)
    if last_without_mac:
        words = words.filter(lambda w: w not in (4, 5))
    bodies = words.flatmap(lambda w: st.binary(min_size=4 * w, max_size=4 * w))
    return st.builds(ExtensionField, field_type=st.integers(0, 0xFFFF), body=bodies)


@st.composite
def trailers(draw: st.DrawFn) -> tuple[tuple[ExtensionField, ...], bytes | None]:
    """v4 trailers as the decoder returns them: EFs, a MAC, both, a crypto-NAK, or nothing."""
    kind = draw(st.sampled_from(["none", "mac", "nak", "efs", "efs+mac"]))
    if kind == "none":
        return (), None
    if kind == "mac":
        return (), draw(macs)
    if kind == "nak":
        return (), CRYPTO_NAK
    head = tuple(draw(st.lists(fields(), max_size=3)))
    if kind == "efs":
        return (*head, draw(fields(last_without_mac=True))), None
    return (*head, draw(fields())), draw(macs)


@st.composite
def packets(draw: st.DrawFn) -> NtpPacket:
    version = draw(st.integers(1, 4))
    if version == 4:
        extensions, mac = draw(trailers())
    else:
        extensions, mac = (), draw(st.none() | macs)
    return NtpPacket(
        leap=draw(st.sampled_from(Leap)),
        version=version,
        mode=draw(st.sampled_from(Mode)),
        stratum=draw(st.integers(0, 255)),
        poll=draw(st.integers(-128, 127)),
        precision=draw(st.integers(-128, 127)),
        root_delay=draw(u32),
        root_dispersion=draw(u32),
        reference_id=draw(u32),
        reference_ts=draw(u64),
        origin_ts=draw(u64),
        receive_ts=draw(u64),
        transmit_ts=draw(u64),
        extensions=extensions,
        mac=mac,
    )


@EXAMPLES
@given(packets())
def test_decode_encode_round_trip(packet: NtpPacket) -> None:
    wire = encode_ntp(packet)
    assert len(wire) % 4 == 0
    assert decode_ntp(wire) == packet
    assert encode_ntp(decode_ntp(wire)) == wire


@EXAMPLES
@given(
    packets(),
    st.lists(
        st.builds(ExtensionField, field_type=st.integers(0, 0xFFFF), body=st.binary(max_size=40)),
        max_size=3,
    ),
)
def test_any_ef_bodies_survive_modulo_padding(
    base: NtpPacket, extensions: list[ExtensionField]
) -> None:
    """Bodies of any length come back zero-padded, and the re-encoding is stable."""
    packet = NtpPacket(
        leap=base.leap,
        mode=base.mode,
        transmit_ts=base.transmit_ts,
        extensions=tuple(extensions),
        mac=base.mac if base.mac != CRYPTO_NAK else None,
    )
    wire = encode_ntp(packet)
    decoded = decode_ntp(wire)
    assert len(decoded.extensions) == len(extensions)
    for sent, got in zip(extensions, decoded.extensions, strict=True):
        assert got.field_type == sent.field_type
        assert got.body[: len(sent.body)] == sent.body
        assert not any(got.body[len(sent.body) :])
        assert len(got.body) % 4 == 0 and len(got.body) >= 12
    assert decoded.mac == packet.mac
    assert encode_ntp(decoded) == wire


def _check_total(data: bytes) -> None:
    try:
        packet = decode_ntp(data)
    except WireError as exc:
        assert exc.reason and str(exc)
        return
    assert isinstance(packet, NtpPacket)
    assert encode_ntp(packet) == data  # anything accepted is reproduced exactly


@EXAMPLES
@given(st.binary(max_size=160))
def test_arbitrary_bytes_give_a_packet_or_a_wire_error(data: bytes) -> None:
    _check_total(data)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid v1..4 header followed by random EF-shaped words: reaches the trailer parser."""
    first = draw(st.integers(0, 255)) & 0xC7 | (draw(st.integers(1, 4)) << 3)
    wire = bytes([first]) + draw(st.binary(min_size=HEADER_LEN - 1, max_size=HEADER_LEN - 1))
    for _ in range(draw(st.integers(0, 4))):
        length = draw(st.sampled_from([0, 4, 12, 16, 18, 20, 24, 28, 32, 64, 1000]))
        wire += struct.pack("!HH", draw(st.integers(0, 0xFFFF)), length)
        wire += bytes(draw(st.sampled_from([0, 4, 8, 12, 16, 20, 24])))
    return wire


@EXAMPLES
@given(near_valid())
def test_near_valid_bytes_give_a_packet_or_a_wire_error(data: bytes) -> None:
    _check_total(data)


@EXAMPLES
@given(st.integers(-(2**31) * 10**9, 2**33 * 10**9))
def test_unix_ns_round_trip_through_ntp64(unix_ns: int) -> None:
    assert unix_ns_from_ntp64(ntp64_from_unix_ns(unix_ns), unix_ns) == unix_ns


@EXAMPLES
@given(u64, st.integers(-(2**31) * 10**9, 2**33 * 10**9))
def test_ntp64_round_trip_through_unix_ns_within_1ns(ts: int, pivot_ns: int) -> None:
    unix_ns = unix_ns_from_ntp64(ts, pivot_ns)
    assert -NTP_ERA_NS // 2 < unix_ns - pivot_ns <= NTP_ERA_NS // 2
    back = ntp64_from_unix_ns(unix_ns)
    assert abs(ntp64_diff_ns(back, ts)) <= 1
    assert abs(((back - ts + 2**63) % 2**64) - 2**63) <= 3  # 1 ns is ~4.3 units


@EXAMPLES
@given(u64, st.integers(-(2**31 - 1) * 10**9, (2**31 - 1) * 10**9))
def test_add_then_diff(ts: int, delta_ns: int) -> None:
    assert ntp64_diff_ns(ntp64_add_ns(ts, delta_ns), ts) == delta_ns
