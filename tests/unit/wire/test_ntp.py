"""NTPv4 packet codec: captured packets, RFC 7822 trailers, rejections, KoD and refids."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta

import pytest

from tsyncd.wire.errors import BadExtension, BadLength, BadVersion, Truncated, WireError
from tsyncd.wire.ntp import (
    CRYPTO_NAK,
    HEADER_LEN,
    ExtensionField,
    KissCode,
    Leap,
    Mode,
    NtpPacket,
    decode_ntp,
    encode_ntp,
    is_crypto_nak,
    kiss_code,
    refid_for_address,
    refid_from_ascii,
    refid_to_str,
)
from tsyncd.wire.timestamps import unix_ns_from_ntp64

# Captured on loopback: ntpdig (NTPsec) querying chronyd 4.3 ("local stratum 3"), and chronyd's
# own client request.  Written out word by word.
NTPDIG_REQUEST = bytes.fromhex(
    "e3000000"  # LI 3 (unsynchronized), VN 4, mode 3; stratum 0; poll 0; precision 0
    "00000000"  # root delay
    "00000000"  # root dispersion
    "00000000"  # refid
    "0000000000000000"  # reference ts
    "0000000000000000"  # origin ts
    "0000000000000000"  # receive ts
    "eeaec889ab643800"  # transmit ts (client's clock)
)
CHRONY_REPLY = bytes.fromhex(
    "240300e6"  # LI 0, VN 4, mode 4; stratum 3; poll 0; precision -26
    "00000000"  # root delay
    "00000000"  # root dispersion
    "7f7f0101"  # refid 127.127.1.1 (chrony's local reference)
    "eeaec887f2b745eb"  # reference ts
    "eeaec889ab643800"  # origin ts = the request's transmit ts
    "eeaec889ab8706e7"  # receive ts
    "eeaec889ab8dac28"  # transmit ts
)
CHRONY_REQUEST = bytes.fromhex(
    "23000020"  # LI 0, VN 4, mode 3; stratum 0; poll 0; precision 32 (chrony hides its own)
    "00000000"  # root delay
    "00000000"  # root dispersion
    "00000000"  # refid
    "0000000000000000"  # reference ts
    "0000000000000000"  # origin ts
    "0000000000000000"  # receive ts
    "2eea57bd1d4f7a75"  # transmit ts: random, chrony does not reveal its clock
)

CAPTURED = [
    (
        NTPDIG_REQUEST,
        NtpPacket(
            leap=Leap.UNSYNCHRONIZED,
            version=4,
            mode=Mode.CLIENT,
            stratum=0,
            poll=0,
            precision=0,
            root_delay=0,
            root_dispersion=0,
            reference_id=0,
            reference_ts=0,
            origin_ts=0,
            receive_ts=0,
            transmit_ts=0xEEAEC889_AB643800,
            extensions=(),
            mac=None,
        ),
    ),
    (
        CHRONY_REPLY,
        NtpPacket(
            leap=Leap.NONE,
            version=4,
            mode=Mode.SERVER,
            stratum=3,
            poll=0,
            precision=-26,
            root_delay=0,
            root_dispersion=0,
            reference_id=0x7F7F0101,
            reference_ts=0xEEAEC887_F2B745EB,
            origin_ts=0xEEAEC889_AB643800,
            receive_ts=0xEEAEC889_AB8706E7,
            transmit_ts=0xEEAEC889_AB8DAC28,
            extensions=(),
            mac=None,
        ),
    ),
    (
        CHRONY_REQUEST,
        NtpPacket(
            leap=Leap.NONE,
            version=4,
            mode=Mode.CLIENT,
            stratum=0,
            poll=0,
            precision=32,
            root_delay=0,
            root_dispersion=0,
            reference_id=0,
            reference_ts=0,
            origin_ts=0,
            receive_ts=0,
            transmit_ts=0x2EEA57BD_1D4F7A75,
            extensions=(),
            mac=None,
        ),
    ),
]


@pytest.mark.parametrize(("wire", "packet"), CAPTURED)
def test_captured_decode_and_reencode(wire: bytes, packet: NtpPacket) -> None:
    decoded = decode_ntp(wire)
    assert decoded == packet
    assert decoded.leap is packet.leap and decoded.mode is packet.mode
    assert encode_ntp(packet) == wire


def test_captured_reply_timestamps_are_when_captured() -> None:
    reply = decode_ntp(CHRONY_REPLY)
    pivot = (datetime(2026, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    tx_ns = unix_ns_from_ntp64(reply.transmit_ts, pivot * 1000)
    # ntpdig printed 2026-11-23 14:13:29.670130 for this exchange
    assert datetime.fromtimestamp(tx_ns / 1e9, UTC).isoformat(timespec="milliseconds") == (
        "2026-11-23T14:13:29.670+00:00"
    )


def test_default_packet_is_a_bare_v4_client_request() -> None:
    assert encode_ntp(NtpPacket()) == b"\x23" + bytes(47)
    assert HEADER_LEN == 48


@pytest.mark.parametrize("leap", list(Leap))
@pytest.mark.parametrize("mode", list(Mode))
def test_first_byte_layout(leap: Leap, mode: Mode) -> None:
    wire = encode_ntp(NtpPacket(leap=leap, version=3, mode=mode))
    assert wire[0] == (leap << 6) | (3 << 3) | mode
    decoded = decode_ntp(wire)
    assert decoded.leap is leap and decoded.mode is mode and decoded.version == 3


def test_signed_and_unsigned_header_fields() -> None:
    packet = NtpPacket(
        stratum=255,
        poll=-128,
        precision=127,
        root_delay=0xFFFF_FFFF,
        root_dispersion=0x8000_0000,
        reference_id=0xFFFF_FFFF,
        reference_ts=2**64 - 1,
        origin_ts=1,
        receive_ts=2**63,
        transmit_ts=2**64 - 2,
    )
    wire = encode_ntp(packet)
    assert wire[1:4] == b"\xff\x80\x7f"
    assert decode_ntp(wire) == packet


# --------------------------------------------------------------------------- rejections


def header(first_byte: int = 0x23) -> bytes:
    return bytes([first_byte]) + bytes(47)


@pytest.mark.parametrize("n", [0, 1, 4, 47])
def test_truncated(n: int) -> None:
    with pytest.raises(Truncated, match=f"of {n} bytes"):
        decode_ntp(CHRONY_REPLY[:n])


@pytest.mark.parametrize("version", [0, 5, 6, 7])
def test_bad_version(version: int) -> None:
    with pytest.raises(BadVersion, match=f"version {version}"):
        decode_ntp(header((version << 3) | 3))


def test_version_is_checked_before_length() -> None:
    with pytest.raises(BadVersion):
        decode_ntp(header(0x2B) + b"\x00")  # v5 and 49 bytes


@pytest.mark.parametrize("extra", [1, 2, 3, 5, 21])
def test_length_not_multiple_of_4(extra: int) -> None:
    with pytest.raises(BadLength, match=f"length {48 + extra} "):
        decode_ntp(header() + bytes(extra))


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("extra", [4, 8, 16, 28, 40, 72])
def test_old_versions_only_allow_a_mac(version: int, extra: int) -> None:
    ef = struct.pack("!HH", 0x0104, extra) + bytes(extra - 4)  # a valid EF in v4
    with pytest.raises(BadLength, match=f"{extra} bytes after the header"):
        decode_ntp(header((version << 3) | 3) + ef)


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("mac_len", [36, 52, 68])
def test_old_versions_take_long_macs(version: int, mac_len: int) -> None:
    """chronyd signs as NTPv3 with a whole SHA-256/384/512 digest (too long for NTPv4)."""
    wire = header((version << 3) | 3) + bytes(range(mac_len))
    assert decode_ntp(wire).mac == bytes(range(mac_len))
    assert encode_ntp(decode_ntp(wire)) == wire
    with pytest.raises((BadLength, BadExtension)):
        decode_ntp(header((4 << 3) | 3) + bytes(range(mac_len)))  # no MAC that long in v4


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("mac_len", [20, 24])
def test_legacy_mac(version: int, mac_len: int) -> None:
    mac = bytes(range(1, mac_len + 1))
    wire = header((version << 3) | 3) + mac
    packet = decode_ntp(wire)
    assert packet.mac == mac and packet.extensions == () and packet.version == version
    assert encode_ntp(packet) == wire


def test_crypto_nak() -> None:
    wire = header(0x24) + CRYPTO_NAK
    packet = decode_ntp(wire)
    assert packet.mac == CRYPTO_NAK and is_crypto_nak(packet)
    assert not is_crypto_nak(decode_ntp(CHRONY_REPLY))
    assert encode_ntp(packet) == wire
    with pytest.raises(BadLength):
        decode_ntp(header(0x1C) + CRYPTO_NAK)  # v3: only a full MAC may follow


@pytest.mark.parametrize("trailer", [b"\x00\x00\x00\x01", bytes(8), bytes(12), b"\x01" * 16])
def test_trailer_that_is_neither_ef_nor_mac(trailer: bytes) -> None:
    with pytest.raises(BadExtension) as info:
        decode_ntp(header() + trailer)
    assert info.value.reason == "bad_extension"


# --------------------------------------------------------------------------- RFC 7822 fields


def ef(field_type: int, length: int, fill: int = 0xAA) -> bytes:
    return struct.pack("!HH", field_type, length) + bytes([fill]) * (length - 4)


def test_one_16_byte_ef() -> None:
    wire = header() + ef(0x2005, 16)
    packet = decode_ntp(wire)
    assert packet.extensions == (ExtensionField(field_type=0x2005, body=b"\xaa" * 12),)
    assert packet.mac is None
    assert encode_ntp(packet) == wire


def test_nts_nak_shape_header_plus_uid() -> None:
    """chrony's NTS NAK: stratum 0, refid NTSN, 84 bytes = header + echoed Unique Identifier."""
    uid = bytes(range(32))
    wire = bytes.fromhex("240000000000000000000000") + b"NTSN" + bytes(32)
    wire += bytes.fromhex("01040024") + uid
    assert len(wire) == 84
    packet = decode_ntp(wire)
    assert packet.extensions == (ExtensionField(field_type=0x0104, body=uid),)
    assert kiss_code(packet) is KissCode.NTSN
    assert encode_ntp(packet) == wire


@pytest.mark.parametrize(("ef_len", "mac_len"), [(16, 20), (16, 24), (28, 20), (40, 24)])
def test_ef_then_mac(ef_len: int, mac_len: int) -> None:
    mac = b"\x00\x00\x00\x07" + b"\x5a" * (mac_len - 4)
    wire = header() + ef(0x0104, ef_len) + ef(0x0204, 28, 0x11) + mac
    packet = decode_ntp(wire)
    assert packet.extensions == (
        ExtensionField(field_type=0x0104, body=b"\xaa" * (ef_len - 4)),
        ExtensionField(field_type=0x0204, body=b"\x11" * 24),
    )
    assert packet.mac == mac
    assert encode_ntp(packet) == wire


@pytest.mark.parametrize("bad_len", [0, 4, 12, 15, 17, 18, 30])
def test_bad_ef_length(bad_len: int) -> None:
    wire = header() + struct.pack("!HH", 0x0104, bad_len) + bytes(28)
    with pytest.raises(BadExtension, match=f"has length {bad_len}: must be >= 16"):
        decode_ntp(wire)


def test_ef_exceeding_data() -> None:
    wire = header() + struct.pack("!HH", 0x0404, 64) + bytes(32)
    with pytest.raises(BadExtension, match="length 64 but only 36 bytes remain"):
        decode_ntp(wire)


def test_bad_second_ef_names_its_index_and_offset() -> None:
    wire = header() + ef(0x0104, 36) + struct.pack("!HH", 0x0204, 8) + bytes(28)
    with pytest.raises(BadExtension, match=r"#1 \(type 0x0204\) at offset 84"):
        decode_ntp(wire)


def test_crypto_nak_after_an_ef_is_rejected() -> None:
    with pytest.raises(BadExtension):
        decode_ntp(header() + ef(0x0104, 36) + CRYPTO_NAK)


@pytest.mark.parametrize(
    ("body_len", "has_mac", "wire_len"),
    [
        (0, False, 16),  # minimum EF size
        (5, False, 16),
        (12, False, 16),  # a lone 16-byte EF stays 16 (unambiguous, re-encodes decoded bytes)
        (13, False, 28),  # 20 would read back as a MAC: padded to RFC 7822's last-EF minimum
        (16, False, 28),
        (20, False, 28),  # 24 likewise
        (21, False, 28),
        (24, False, 28),
        (25, False, 32),
        (13, True, 20),  # with a MAC behind it, 20 is fine
        (20, True, 24),
    ],
)
def test_encoder_pads_ef_bodies(body_len: int, has_mac: bool, wire_len: int) -> None:
    body = b"\x42" * body_len
    mac = bytes(20) if has_mac else None
    packet = NtpPacket(extensions=(ExtensionField(field_type=0x0104, body=body),), mac=mac)
    wire = encode_ntp(packet)
    assert wire[48:52] == struct.pack("!HH", 0x0104, wire_len)
    assert wire[52 : 48 + wire_len] == body + bytes(wire_len - 4 - body_len)
    decoded = decode_ntp(wire)
    assert decoded.extensions[0].body[:body_len] == body
    assert decoded.mac == mac
    assert encode_ntp(decoded) == wire


def test_only_the_last_ef_gets_the_28_byte_minimum() -> None:
    short = ExtensionField(field_type=1, body=bytes(16))
    wire = encode_ntp(NtpPacket(extensions=(short, short)))
    assert struct.unpack_from("!HH", wire, 48)[1] == 20
    assert struct.unpack_from("!HH", wire, 68)[1] == 28
    assert len(wire) == 48 + 20 + 28


# --------------------------------------------------------------------------- encoder misuse


@pytest.mark.parametrize(
    "packet",
    [
        NtpPacket(leap=4),  # type: ignore[arg-type]
        NtpPacket(version=8),
        NtpPacket(mode=-1),  # type: ignore[arg-type]
        NtpPacket(stratum=256),
        NtpPacket(stratum=-1),
        NtpPacket(poll=128),
        NtpPacket(precision=-129),
        NtpPacket(root_delay=-1),
        NtpPacket(root_dispersion=2**32),
        NtpPacket(reference_id=2**32),
        NtpPacket(reference_ts=-1),
        NtpPacket(origin_ts=2**64),
        NtpPacket(receive_ts=2**64),
        NtpPacket(transmit_ts=2**64),
        NtpPacket(extensions=(ExtensionField(field_type=0x10000, body=b""),)),
        NtpPacket(extensions=(ExtensionField(field_type=1, body=bytes(0xFFFC - 3)),)),
        NtpPacket(version=3, extensions=(ExtensionField(field_type=1, body=bytes(24)),)),
        NtpPacket(mac=bytes(16)),
        NtpPacket(mac=b""),
        NtpPacket(mac=b"\x00\x00\x00\x01"),
        NtpPacket(version=3, mac=CRYPTO_NAK),
        NtpPacket(extensions=(ExtensionField(field_type=1, body=bytes(24)),), mac=CRYPTO_NAK),
    ],
)
def test_encoder_rejects_out_of_range_fields_as_our_bug(packet: NtpPacket) -> None:
    with pytest.raises(ValueError) as info:
        encode_ntp(packet)
    assert not isinstance(info.value, WireError)


def test_largest_ef_body_encodes() -> None:
    packet = NtpPacket(extensions=(ExtensionField(field_type=1, body=bytes(0xFFFC - 4)),))
    assert decode_ntp(encode_ntp(packet)) == packet


# --------------------------------------------------------------------------- errors


def test_error_reasons_are_stable_labels() -> None:
    assert WireError.reason == "malformed"
    assert Truncated.reason == "truncated"
    assert BadLength.reason == "bad_length"
    assert BadVersion.reason == "bad_version"
    assert BadExtension.reason == "bad_extension"
    for cls in (Truncated, BadLength, BadVersion, BadExtension):
        assert issubclass(cls, WireError) and issubclass(cls, ValueError)


# --------------------------------------------------------------------------- KoD and refids


def kod(code: bytes, stratum: int = 0) -> NtpPacket:
    return decode_ntp(bytes([0x24, stratum]) + bytes(10) + code + bytes(32))


@pytest.mark.parametrize("code", ["DENY", "RSTR", "RATE", "NTSN", "INIT"])
def test_kiss_codes_known(code: str) -> None:
    found = kiss_code(kod(code.encode()))
    assert found is KissCode(code)
    assert found == code


def test_kiss_code_enum_values_are_the_codes() -> None:
    assert len(KissCode) == 15
    for member in KissCode:
        assert member.value == member.name and len(member.value) == 4


@pytest.mark.parametrize(
    ("refid", "stratum", "expected"),
    [
        (b"XFOO", 0, "XFOO"),  # unknown (experimental) codes come back as plain strings
        (b"AB\x00\x00", 0, "AB"),  # trailing NULs stripped
        (b"\x00\x00\x00\x00", 0, None),  # stratum 0 without a code: just unspecified
        (b"\x00ABC", 0, None),  # leading NUL
        (b"A\x00B\x00", 0, None),  # embedded NUL
        (b"RAT\x01", 0, None),  # control character
        (b"RAT\xc5", 0, None),  # not ASCII
        (b"RATE", 1, None),  # not stratum 0
        (b"RATE", 16, None),
    ],
)
def test_kiss_code_edge_cases(refid: bytes, stratum: int, expected: str | None) -> None:
    found = kiss_code(kod(refid, stratum))
    assert found == expected
    if expected is not None:
        assert type(found) is str


@pytest.mark.parametrize(
    ("refid", "stratum", "text"),
    [
        (0x7F7F0101, 3, "127.127.1.1"),
        (0x47505300, 1, "GPS"),
        (0x50505300, 1, "PPS"),
        (0x52415445, 0, "RATE"),
        (0x47505300, 2, "71.80.83.0"),  # ASCII means nothing at stratum >= 2
        (0x01020304, 1, "1.2.3.4"),  # non-printable at stratum 1 -> dotted quad
        (0x00000000, 1, "0.0.0.0"),
        (0xC0000201, 16, "192.0.2.1"),
    ],
)
def test_refid_to_str(refid: int, stratum: int, text: str) -> None:
    assert refid_to_str(refid, stratum) == text


@pytest.mark.parametrize(
    ("code", "refid"),
    [("GPS", 0x47505300), ("PPS", 0x50505300), ("LOCL", 0x4C4F434C), ("X", 0x58000000)],
)
def test_refid_from_ascii(code: str, refid: int) -> None:
    assert refid_from_ascii(code) == refid
    assert refid_to_str(refid, 1) == code


@pytest.mark.parametrize("code", ["", "TOOLONG", "GP\x00", "\x7f", "é", "日本"])
def test_refid_from_ascii_rejects(code: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        refid_from_ascii(code)


def test_refid_for_ipv4() -> None:
    assert refid_for_address("192.0.2.1") == 0xC0000201
    assert refid_for_address("127.0.0.1") == 0x7F000001


def test_refid_for_ipv6_is_md5_prefix() -> None:
    packed = bytes.fromhex("20010db8000000000000000000000001")  # 2001:db8::1
    expected = int.from_bytes(hashlib.md5(packed).digest()[:4], "big")
    assert refid_for_address("2001:db8::1") == expected
    assert refid_for_address("2001:0db8:0000::0001") == expected
    assert refid_for_address("2001:db8::2") != expected


def test_refid_for_ipv4_mapped_ipv6_is_the_ipv4() -> None:
    assert refid_for_address("::ffff:192.0.2.1") == 0xC0000201


def test_refid_for_garbage_address() -> None:
    with pytest.raises(ValueError):
        refid_for_address("not-an-address")
