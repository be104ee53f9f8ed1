"""Tests for tsyncd.config: shipped configs, defaults, endpoints, and exact error texts."""

from __future__ import annotations

import grp
import os
import re
import tomllib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from tests.pki import make_pki
from tsyncd.config import (
    MISSING,
    ClockConfig,
    Config,
    ConfigError,
    ConfigErrors,
    ControlConfig,
    Endpoint,
    LogConfig,
    MetricsConfig,
    ServerConfig,
    SourceConfig,
    SynchronizationConfig,
    load_config,
    parse_config,
    parse_endpoint,
)

ETC = Path(__file__).resolve().parents[2] / "etc"
SHIPPED = sorted(ETC.glob("*.toml"))
P = Path("/etc/tsyncd.toml")


def errors_of(data: Mapping[str, object]) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(data, P)
    return str(info.value).splitlines()


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


# --- shipped configs ------------------------------------------------------------------------


def test_all_three_configs_are_shipped() -> None:
    assert [p.name for p in SHIPPED] == ["demo-client.toml", "demo-server.toml", "tsyncd.toml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    assert load_config(path).path == path


def test_example_config_values() -> None:
    config = load_config(ETC / "tsyncd.toml")
    assert config.sources == (
        SourceConfig(mode="pool", address=Endpoint("pool.ntp.org", 123), name="pool.ntp.org"),
    )
    # As chrony's default configuration: no server until the operator uncomments one (and
    # says whom to serve), a drift file and NTS sessions kept in the service's StateDirectory.
    assert config.servers == ()
    assert config.clock.drift_file == Path("/var/lib/tsyncd/drift")
    assert config.nts_client.cookie_storage_path == Path("/var/lib/tsyncd")
    assert config.nts_client.key_refresh_interval == 28 * 86400  # 4 weeks, unless set


def test_example_config_with_every_setting_uncommented_loads(tmp_path: Path) -> None:
    # "#key = value" lines are settings; uncommenting all of them must still be a valid config
    # (with a key file where the example names one).
    text = re.sub(r"(?m)^#(?=\S)", "", (ETC / "tsyncd.toml").read_text(encoding="utf-8"))
    keys = tmp_path / "tsyncd.keys"
    keys.write_text("1 SHA256 HEX:" + "ab" * 32 + "\n")
    text = text.replace('"/etc/tsyncd/tsyncd.keys"', f'"{keys}"')
    # What the file names must be on this host too (config_host): PEM files, groups, and a
    # log directory the test may make.
    pki = make_pki(tmp_path / "pki")
    for example, real in [
        ("nts-ca.pem", pki.ca),
        ("nts.crt", pki.chain),
        ("nts.key", pki.key),
        ("tsq-ca.pem", pki.ca),
        ("tsq-fullchain.pem", pki.chain),
        ("tsq-key.pem", pki.key),
    ]:
        text = text.replace(f'"/etc/tsyncd/{example}"', f'"{real}"')
    group = grp.getgrgid(os.getgid()).gr_name
    text = text.replace('"tsyncd"', f'"{group}"').replace('"tsyncd-admin"', f'"{group}"')
    text = text.replace('"/var/log/tsyncd"', f'"{tmp_path / "log"}"')
    config = parse_config(tomllib.loads(text), P)
    assert config.sources[0].key == 1 and config.symmetric_keys[1].kind == "SHA256"
    assert config.synchronization.local_stratum == 10
    assert [s.name for s in config.sources] == [
        "pool",  # its name = "pool"
        "ntp.example.org:123",
        "nts.example.org:4460",
        "192.0.2.7",
        "[ff05::101]:123",
        "tsq.example.org",
    ]
    assert config.sources[5].address == Endpoint("tsq.example.org", 443)
    assert config.tsq_servers[0].transport == "datagram"
    assert config.servers[0].allow == (
        IPv4Network("192.0.2.0/24"),
        IPv6Network("2001:db8::/32"),
    )
    assert config.control.admin_group == group
    assert config.metrics.listen == Endpoint("127.0.0.1", 9975)


def test_example_config_documents_every_key() -> None:
    from tsyncd.config import _SECTIONS

    seen: set[tuple[str, str]] = set()
    section = ""
    for line in (ETC / "tsyncd.toml").read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"#?\[\[?([a-z-]+)\]\]?", line):
            section = m[1]
        elif m := re.match(r"#?([a-z0-9-]+) = ", line):
            seen.add((section, m[1]))
    wanted = {(name, f.key) for name, s in _SECTIONS.items() for f in s.fields}
    assert wanted - seen == set()
    assert seen - wanted == set()


def test_demo_configs() -> None:
    server = load_config(ETC / "demo-server.toml")
    assert server.clock == ClockConfig(mode="measure")
    assert server.synchronization.local_stratum == 10
    assert server.sources == ()
    assert server.servers == (ServerConfig(listen=Endpoint("127.0.0.1", 11123)),)
    assert server.control.socket == Path("demo-run/server.sock")  # relative: to the cwd
    assert server.metrics.listen == Endpoint("127.0.0.1", 9975)

    client = load_config(ETC / "demo-client.toml")
    assert client.clock.mode == "measure"
    assert client.sources == (
        SourceConfig(
            mode="server",
            address=Endpoint("127.0.0.1", 11123),
            iburst=True,
            min_poll=0,
            max_poll=2,
            name="127.0.0.1:11123",
        ),
    )
    assert client.servers == ()
    assert client.control.socket == Path("demo-run/client.sock")
    assert client.metrics.listen == Endpoint("127.0.0.1", 9976)


# --- defaults -------------------------------------------------------------------------------


def test_empty_config_is_all_defaults() -> None:
    assert parse_config({}, P) == Config(
        path=P,
        clock=ClockConfig(mode="system"),
        synchronization=SynchronizationConfig(local_stratum=None, min_sources=1),
        sources=(),
        servers=(),
        control=ControlConfig(socket=Path("/run/tsyncd/tsyncd.sock"), group=None, admin_group=None),
        metrics=MetricsConfig(listen=None),
        log=LogConfig(level="info"),
    )


def test_table_defaults(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[[source]]\nmode = "server"\naddress = "ntp.example.org"\n[[server]]\n[metrics]\n'
        'listen = "::1"\n',
    )
    assert config.sources == (
        SourceConfig(
            mode="server",
            address=Endpoint("ntp.example.org", 123),
            iburst=False,
            min_poll=6,
            max_poll=10,
            count=4,
            name="ntp.example.org",
        ),
    )
    assert config.servers == (ServerConfig(listen=Endpoint("::", 123), allow=(), deny=()),)
    assert config.metrics.listen == Endpoint("::1", 9975)


@pytest.mark.parametrize(
    ("given", "min_poll", "max_poll"),
    [
        ({"min-poll": 12}, 12, 12),  # unset max-poll follows a min-poll above it
        ({"max-poll": 2}, 2, 2),  # unset min-poll follows a max-poll below it
        ({"min-poll": -2}, -2, 10),
        ({"max-poll": 17}, 6, 17),
        ({"min-poll": 3, "max-poll": 3}, 3, 3),
    ],
)
def test_poll_bounds(given: dict[str, int], min_poll: int, max_poll: int) -> None:
    source = {"mode": "server", "address": "192.0.2.1", **given}
    (parsed,) = parse_config({"source": [source]}, P).sources
    assert (parsed.min_poll, parsed.max_poll) == (min_poll, max_poll)


def test_allow_all() -> None:
    everything = (IPv4Network("0.0.0.0/0"), IPv6Network("::/0"))
    for allow in ("all", ["all"]):
        (server,) = parse_config({"server": [{"allow": allow}]}, P).servers
        assert server.allow == everything
    (server,) = parse_config(
        {"server": [{"allow": ["10.1.2.3/8", "::1"], "deny": "all"}]}, P
    ).servers
    assert server.allow == (IPv4Network("10.0.0.0/8"), IPv6Network("::1/128"))
    assert server.deny == everything


# --- endpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("192.0.2.1", "192.0.2.1", 123, "192.0.2.1:123"),
        ("192.0.2.1:4460", "192.0.2.1", 4460, "192.0.2.1:4460"),
        ("[2001:db8::1]", "2001:db8::1", 123, "[2001:db8::1]:123"),
        ("[2001:db8::1]:0", "2001:db8::1", 0, "[2001:db8::1]:0"),
        ("::1", "::1", 123, "[::1]:123"),
        ("::", "::", 123, "[::]:123"),
        ("fe80::1%eth0", "fe80::1%eth0", 123, "[fe80::1%eth0]:123"),
        ("ntp.example.org", "ntp.example.org", 123, "ntp.example.org:123"),
        ("ntp.example.org.:65535", "ntp.example.org.", 65535, "ntp.example.org.:65535"),
        ("localhost", "localhost", 123, "localhost:123"),
        ("0.pool.ntp.org", "0.pool.ntp.org", 123, "0.pool.ntp.org:123"),
    ],
)
def test_parse_endpoint(text: str, host: str, port: int, shown: str) -> None:
    endpoint = parse_endpoint(text, 123)
    assert endpoint == Endpoint(host, port)
    assert str(endpoint) == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("host:", "missing port after ':'"),
        (":123", "missing host before ':'"),
        ("host:65536", "port 65536 is greater than 65535"),
        ("host:-1", 'port "-1" is not a number'),
        ("host:12a", 'port "12a" is not a number'),
        ("[2001:db8::1", "missing ']' after the IPv6 address"),
        ("[2001:db8::1]123", "unexpected \"123\" after ']'"),
        ("[192.0.2.1]:123", '"192.0.2.1" in brackets is not an IPv6 address'),
        ("2001:db8::1:99999", '"2001:db8::1:99999" is not an IPv6 address'),
        ("256.1.1.1", '"256.1.1.1" is not a valid IPv4 address'),
        ("1.2.3", '"1.2.3" is not a valid IPv4 address'),
        ("bad_name.example", '"bad_name.example" is not a valid host name'),
        ("-bad.example", '"-bad.example" is not a valid host name'),
        ("a..b", '"a..b" is not a valid host name'),
        ("ntp example", '"ntp example" is not a valid host name'),
    ],
)
def test_parse_endpoint_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_endpoint(text, 123)


def test_endpoint_invariants() -> None:
    with pytest.raises(ValueError):
        Endpoint("", 123)
    with pytest.raises(ValueError):
        Endpoint("[::1]", 123)
    with pytest.raises(ValueError):
        Endpoint("::1", 65536)


# --- error texts ----------------------------------------------------------------------------


def test_out_of_range_message() -> None:
    data = {"source": [{"mode": "pool", "address": "pool.ntp.org"}, {"min-poll": 99}]}
    assert errors_of(data) == [
        "/etc/tsyncd.toml: source[1].min-poll = 99: expected integer -7..24 (log2 seconds)",
        "/etc/tsyncd.toml: source[1].mode is missing: expected one of: "
        '"server", "pool", "peer", "broadcast", "nts", "tsq"',
        "/etc/tsyncd.toml: source[1].address is missing: expected host[:port], IPv6 or "
        "[IPv6][:port] (port 1..65535, default 123)",
    ]


def test_config_error_fields() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config({"source": [{"address": "a"}]}, P)
    assert info.value.errors == (
        ConfigError(
            P,
            "source[0].mode",
            MISSING,
            'one of: "server", "pool", "peer", "broadcast", "nts", "tsq"',
        ),
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"source": [{"mode": "server", "address": "a", "iburst": "yes"}]},
            'source[0].iburst = "yes": expected true or false',
        ),
        (
            {"synchronization": {"local-stratum": True}},
            "synchronization.local-stratum = true: expected integer 1..15",
        ),
        (
            {"synchronization": {"min-sources": 2.0}},
            "synchronization.min-sources = 2.0: expected integer 1..16",
        ),
        ({"clock": {"mode": "slew"}}, 'clock.mode = "slew": expected one of: "system", "measure"'),
        (
            {"log": {"level": "trace"}},
            'log.level = "trace": expected one of: "debug", "info", "warning", "error"',
        ),
        (
            {"source": {"mode": "pool", "address": "pool.ntp.org"}},
            'source = { mode = "pool", address = "pool.ntp.org" }: expected array of tables '
            "(write [[source]], once per source)",
        ),
        (
            {"clock": [{"mode": "system"}]},
            'clock = [{ mode = "system" }]: expected table (write [clock])',
        ),
        ({"server": [7]}, "server[0] = 7: expected table (write [[server]])"),
        (
            {"sources": []},
            "sources = []: expected key to be one of: clock, synchronization, source, server, "
            "tsq-server, control, metrics, log, nts-ke-server, keyset, resolver, broadcast, "
            "nts-client, keys",
        ),
        (
            {"source": [{"mode": "server", "address": "a", "min poll": 3}]},
            'source[0]."min poll" = 3: expected key to be one of: mode, address, iburst, '
            "min-poll, max-poll, count, xleave, dscp, local-port, broadcast-delay, transport, "
            "certificate-authority, broadcast-calibrate, broadcast-server, broadcast-interface, "
            "noselect, prefer, trust, require, key, offline, name, max-delay, offset",
        ),
        ({"control": {"socket": ""}}, 'control.socket = "": expected non-empty string'),
        ({"control": {"group": ""}}, 'control.group = "": expected group name or GID'),
        ({"control": {"group": -1}}, "control.group = -1: expected group name or GID"),
        (
            {"server": [{"listen": "ntp.example.org"}]},
            'server[0].listen = "ntp.example.org": expected IPv4[:port], IPv6 or [IPv6][:port] '
            '(port 1..65535, default 123); "ntp.example.org" is not an IP address '
            "(listen takes an IP address, not a name)",
        ),
        (
            {"metrics": {"listen": "127.0.0.1:99999"}},
            'metrics.listen = "127.0.0.1:99999": expected IPv4[:port], IPv6 or [IPv6][:port] '
            "(port 1..65535, default 9975); port 99999 is greater than 65535",
        ),
        (
            {"source": [{"mode": "server", "address": "192.0.2.1:0"}]},
            'source[0].address = "192.0.2.1:0": expected host[:port], IPv6 or [IPv6][:port] '
            "(port 1..65535, default 123); port 0 cannot be used",
        ),
        (
            {"source": [{"mode": "server", "address": ["a"]}]},
            'source[0].address = ["a"]: expected host[:port], IPv6 or [IPv6][:port] '
            "(port 1..65535, default 123)",
        ),
        (
            {"server": [{"allow": ["192.0.2.0/24", "10.0.0.0/33"]}]},
            'server[0].allow[1] = "10.0.0.0/33": expected IP address or CIDR network '
            '(e.g. "192.0.2.0/24", "2001:db8::/32"; as in chrony, "192.0.2" is 192.0.2.0/24 '
            'and "0/0" every IPv4 address) or "all"',
        ),
        (
            {"server": [{"deny": "nobody"}]},
            'server[0].deny = "nobody": expected IP address or CIDR network '
            '(e.g. "192.0.2.0/24", "2001:db8::/32"; as in chrony, "192.0.2" is 192.0.2.0/24 '
            'and "0/0" every IPv4 address) or "all"; "nobody" is a host name: write its address '
            "(tsyncd would resolve it in the loop that serves time, at start and at every "
            "reload; tsyncctl allow and deny take host names, as chronyc does)",
        ),
        (
            {"server": [{"deny": 10}]},
            "server[0].deny = 10: expected array of strings, each an IP address or CIDR network "
            '(e.g. "192.0.2.0/24", "2001:db8::/32"; as in chrony, "192.0.2" is 192.0.2.0/24 '
            'and "0/0" every IPv4 address) or "all"',
        ),
    ],
)
def test_error_message(data: dict[str, object], message: str) -> None:
    assert errors_of(data) == [f"/etc/tsyncd.toml: {message}"]


def test_cross_field_messages() -> None:
    data = {
        "source": [
            {"mode": "pool", "address": "pool.ntp.org", "count": 8},
            {"mode": "server", "address": "192.0.2.1", "count": 2},
            {"mode": "server", "address": "192.0.2.2", "min-poll": 8, "max-poll": 7},
            {"mode": "server", "address": "POOL.NTP.ORG.:123"},
            {"mode": "server", "address": "[::ffff:0:0]:123"},
            {"mode": "server", "address": "::ffff:0.0.0.0"},
        ],
        "server": [{}, {"listen": "[0::0]"}, {"listen": "0.0.0.0"}],
    }
    assert errors_of(data) == [
        '/etc/tsyncd.toml: source[1].count = 2: expected no count unless mode = "pool"',
        "/etc/tsyncd.toml: source[2].max-poll = 7: expected integer 8..24 "
        "(log2 seconds, at least min-poll)",
        '/etc/tsyncd.toml: source[3].address = "POOL.NTP.ORG.:123": expected an address '
        "no other source uses (same as source[0].address)",
        '/etc/tsyncd.toml: source[5].address = "::ffff:0.0.0.0": expected an address '
        "no other source uses (same as source[4].address)",
        '/etc/tsyncd.toml: server[1].listen = "[0::0]": expected an address no other server '
        "listens on (same as server[0].listen)",
        '/etc/tsyncd.toml: server[2].listen = "0.0.0.0": expected an address no other server '
        'listens on (server[0].listen = "[::]:123" is dual-stack and takes port 123 on every '
        "IPv4 address too, this one too: set ipv6-only = true in server[0])",
    ]


def test_every_error_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[clock]\nmode = "fast"\n\n'
        "[[source]]\n"
        'mode = "server"\naddress = "a.example"\nmin-poll = 99\niburst = "yes"\n\n'
        "[[source]]\n"
        'mode = "server"\naddress = "a.example"\n\n'
        "[log]\nlevel = 3\ncolour = true\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert str(info.value).splitlines() == [
        f'{path}: clock.mode = "fast": expected one of: "system", "measure"',
        f"{path}: source[0].min-poll = 99: expected integer -7..24 (log2 seconds)",
        f'{path}: source[0].iburst = "yes": expected true or false',
        f'{path}: log.level = 3: expected one of: "debug", "info", "warning", "error"',
        f"{path}: log.colour = true: expected key to be one of: level, directory, measurements,"
        " statistics, tracking",
        # Step 2 still checks source[0], though two of its keys are wrong.
        f'{path}: source[1].address = "a.example": expected an address no other source uses '
        "(same as source[0].address)",
    ]
    assert all(e.file == path for e in info.value.errors)


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "syntax.toml"
    path.write_text('[clock]\nmode = "system\n', encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    (error,) = info.value.errors
    assert error.key == ""
    assert str(error).startswith(f"{path}: invalid TOML: ")
    assert "(at line 2, column" in str(error)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file: No such file or directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[log]\nlevel = "\xe9"\n')
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: invalid TOML: not UTF-8 (")


def test_long_values_are_cut() -> None:
    error = ConfigError(P, "log", {"level": "x" * 200}, "table")
    text = str(error)
    assert text.startswith('/etc/tsyncd.toml: log = { level = "xxx')
    assert text.endswith("...: expected table")
    assert len(text) < 160


def test_tsq_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pki(tmp_path)  # ca.pem, chain.pem, key.pem: relative paths are the daemon's cwd's
    monkeypatch.chdir(tmp_path)
    config = parse_config(
        {
            "source": [
                {"mode": "tsq", "address": "tsq.example.org", "transport": "stream"},
                {"mode": "tsq", "address": "192.0.2.1:4433", "certificate-authority": "ca.pem"},
            ],
            "tsq-server": [
                {
                    "transport": "stream",
                    "listen": "127.0.0.1:8443",
                    "certificate-chain-path": "chain.pem",
                    "private-key-path": "key.pem",
                }
            ],
        },
        P,
    )
    assert config.sources[0].address == Endpoint("tsq.example.org", 8443)
    assert config.sources[0].transport == "stream"
    assert config.sources[1].address == Endpoint("192.0.2.1", 4433)
    assert config.sources[1].transport == "datagram"
    assert config.sources[1].certificate_authority == Path("ca.pem")
    assert config.tsq_servers[0].max_connections_per_client == 8


def test_tsq_errors() -> None:
    data = {
        "source": [{"mode": "server", "address": "a", "transport": "stream"}],
        "tsq-server": [{"transport": "quic", "private-key-path": "k"}],
    }
    assert errors_of(data) == [
        '/etc/tsyncd.toml: tsq-server[0].transport = "quic": expected one of: "stream", "datagram"',
        "/etc/tsyncd.toml: tsq-server[0].certificate-chain-path is missing: expected non-empty "
        "string (PEM file: the certificate, then its chain)",
        '/etc/tsyncd.toml: source[0].transport = "stream": expected no transport unless '
        'mode = "tsq"',
    ]
    # Interleaved mode means nothing over TSQ (T2 and T3 come with their own exchange); DSCP
    # marks the QUIC packets.
    tsq = {"mode": "tsq", "address": "192.0.2.1"}
    assert errors_of({"source": [{**tsq, "xleave": True, "dscp": 46}]}) == [
        '/etc/tsyncd.toml: source[0].xleave = true: expected no xleave with mode = "tsq"',
    ]
    assert parse_config({"source": [{**tsq, "dscp": 46}]}, P).sources[0].dscp == 46


# --- NTS (issue 5) ----------------------------------------------------------------------------


def test_nts_source_and_server_keys(tmp_path: Path) -> None:
    from tsyncd.config import KeysetConfig, NtsKeServerConfig

    pki = make_pki(tmp_path / "pki")
    config = load_text(
        tmp_path,
        '[[source]]\nmode = "nts"\naddress = "time.example.org"\n'
        f'certificate-authority = "{pki.ca}"\n'
        f'[[nts-ke-server]]\ncertificate-chain-path = "{pki.chain}"\n'
        f'private-key-path = "{pki.key}"\n'
        'ntp-port = 1123\n[keyset]\nkey-storage-path = "/k.json"\nkey-rotation-interval = 3600\n'
        '[nts-client]\ncookie-storage-path = "/var/lib/tsyncd/nts"\nkey-refresh-interval = 86400\n',
    )
    assert config.nts_client.cookie_storage_path == Path("/var/lib/tsyncd/nts")
    assert config.nts_client.key_refresh_interval == 86400
    source = config.sources[0]
    assert source.address == Endpoint("time.example.org", 4460)  # NTS-KE default port
    assert source.certificate_authority == pki.ca
    assert config.nts_ke_servers == (
        NtsKeServerConfig(
            listen=Endpoint("::", 4460),
            certificate_chain_path=pki.chain,
            private_key_path=pki.key,
            ntp_port=1123,
        ),
    )
    assert config.keyset == KeysetConfig(
        key_storage_path=Path("/k.json"), key_rotation_interval=3600
    )


def test_nts_config_errors() -> None:
    lines = errors_of(
        {
            "source": [
                {"mode": "server", "address": "a", "certificate-authority": "/ca.pem"},
            ],
            "nts-ke-server": [{"listen": "127.0.0.1:4460", "ntp-server": "a b"}],
            "keyset": {"key-rotation-interval": 5},
            "nts-client": {
                "cookie-storage-path": 7,
                "cookie-dir": "/x",
                "key-refresh-interval": 59,
            },
        }
    )
    assert lines == [
        '/etc/tsyncd.toml: nts-ke-server[0].ntp-server = "a b": expected host name, IPv4 or '
        'IPv6 address (no port); "a b" is not a valid host name',
        "/etc/tsyncd.toml: nts-ke-server[0].certificate-chain-path is missing: expected "
        "non-empty string",
        "/etc/tsyncd.toml: nts-ke-server[0].private-key-path is missing: expected non-empty string",
        "/etc/tsyncd.toml: keyset.key-rotation-interval = 5: expected integer 60..31536000 "
        "(seconds)",
        "/etc/tsyncd.toml: nts-client.cookie-storage-path = 7: expected non-empty string",
        '/etc/tsyncd.toml: nts-client.cookie-dir = "/x": expected key to be one of: '
        "cookie-storage-path, key-refresh-interval",
        "/etc/tsyncd.toml: nts-client.key-refresh-interval = 59: expected integer "
        "60..2147483647 (seconds)",
        '/etc/tsyncd.toml: source[0].certificate-authority = "/ca.pem": expected no '
        'certificate-authority unless mode = "tsq" or "nts"',
    ]


def test_resolver_servers_and_source_options() -> None:
    config = parse_config(
        {
            "resolver": {"servers": ["127.0.0.1:5353", "::1"]},
            "source": [{"mode": "server", "address": "a.example", "xleave": True, "dscp": 46}],
            "server": [{"listen": "[::1]:123", "dscp": 46, "ipv6-only": True}],
        },
        P,
    )
    assert config.resolver.servers == (Endpoint("127.0.0.1", 5353), Endpoint("::1", 53))
    assert config.sources[0].xleave is True and config.sources[0].dscp == 46
    assert config.servers[0].ipv6_only is True and config.servers[0].dscp == 46


def test_resolver_server_must_be_an_ip() -> None:
    with pytest.raises(ConfigErrors) as e:
        parse_config({"resolver": {"servers": ["127.0.0.1", "dns.example"]}, "source": []}, P)
    assert str(e.value).startswith(f'{P}: resolver.servers[1] = "dns.example": expected IPv4')
    # The reason names this key, not "listen" (QA s16 finding 9).
    assert str(e.value).endswith(
        '"dns.example" is not an IP address (servers takes an IP address, not a name)'
    )


def test_peer_mode_and_local_port() -> None:
    config = parse_config(
        {"source": [{"mode": "peer", "address": "192.0.2.7", "local-port": 1123}]}, P
    )
    assert config.sources[0].mode == "peer" and config.sources[0].local_port == 1123
    with pytest.raises(ConfigErrors) as e:
        parse_config({"source": [{"mode": "server", "address": "a", "local-port": 1}]}, P)
    assert str(e.value) == (
        f'{P}: source[0].local-port = 1: expected no local-port unless mode = "peer"'
    )


def test_broadcast_server_and_client_keys() -> None:
    config = parse_config(
        {
            "broadcast": [{"address": "192.0.2.255", "interval": 16, "dscp": 46}],
            "source": [{"mode": "broadcast", "address": "192.0.2.1", "broadcast-delay": 0.001}],
        },
        P,
    )
    assert config.broadcasts[0].address == Endpoint("192.0.2.255", 123)
    assert config.broadcasts[0].interval == 16.0
    assert config.sources[0].broadcast_delay == 0.001
    with pytest.raises(ConfigErrors) as e:
        parse_config(
            {
                "broadcast": [{"interval": 16}],
                "source": [
                    {"mode": "broadcast", "address": "ntp.example"},
                    {"mode": "server", "address": "a.example", "broadcast-delay": 0.1},
                ],
            },
            P,
        )
    assert [str(x) for x in e.value.errors] == [
        f"{P}: broadcast[0].address is missing: expected IPv4[:port], IPv6 or [IPv6][:port] "
        "(port 1..65535, default 123)",
        f'{P}: source[0].address = "ntp.example": expected the broadcast server\'s IPv4 address, '
        "or a multicast group (IPv6 ff0X::101, IPv4 224.0.1.1)",
        f"{P}: source[1].broadcast-delay = 0.1: expected no broadcast-delay unless "
        'mode = "broadcast"',
    ]


def test_noselect_and_prefer() -> None:
    config = parse_config(
        {
            "source": [
                {"mode": "server", "address": "a.example", "noselect": True},
                {"mode": "pool", "address": "b.example", "prefer": True},
            ]
        },
        P,
    )
    assert [(s.noselect, s.prefer) for s in config.sources] == [(True, False), (False, True)]
    with pytest.raises(ConfigErrors) as e:
        parse_config(
            {"source": [{"mode": "server", "address": "a", "noselect": True, "prefer": True}]}, P
        )
    assert [str(x) for x in e.value.errors] == [
        f"{P}: source[0].prefer = true: expected not with noselect = true (never selected)"
    ]
    table = {"mode": "server", "address": "a", "noselect": True, "trust": True, "require": True}
    with pytest.raises(ConfigErrors) as e:
        parse_config({"source": [table]}, P)
    assert [str(x) for x in e.value.errors] == [
        f"{P}: source[0].{key} = true: expected not with noselect = true (never selected)"
        for key in ("trust", "require")
    ]


def test_sources_on_one_multicast_group_need_their_own_servers_and_names() -> None:
    def group(server: str, **extra: object) -> dict[str, object]:
        table = {"mode": "broadcast", "address": "[ff05::101]:123", "broadcast-server": server}
        return table | extra

    config = parse_config(
        {"source": [group("fd00::1", name="lan-a"), group("fd00::2", name="lan-b")]}, P
    )
    assert [(s.name, s.broadcast_server) for s in config.sources] == [
        ("lan-a", Endpoint("fd00::1", 123)),
        ("lan-b", Endpoint("fd00::2", 123)),
    ]
    with pytest.raises(ConfigErrors) as e:
        parse_config({"source": [group("fd00::1"), group("fd00::2"), group("fd00::1")]}, P)
    assert [str(x).split(": ", 1)[1] for x in e.value.errors] == [
        'source[1].address = "[ff05::101]:123": expected a name no other source has (same as '
        "source[0]; give each its own name = ...)",
        'source[2].address = "[ff05::101]:123": expected an address no other source uses '
        "(same as source[0].address)",
    ]
    with pytest.raises(ConfigErrors) as e:
        parse_config(
            {
                "source": [
                    {"mode": "server", "address": "a", "name": "x"},
                    {"mode": "server", "address": "b", "name": "x"},
                ]
            },
            P,
        )
    assert str(e.value.errors[0]).endswith(
        'source[1].name = "x": expected a name no other source has (same as source[0]; give '
        "each its own name = ...)"
    )


def test_leap_seconds_file_is_read_with_the_config(tmp_path: Path) -> None:
    good = tmp_path / "leap-seconds.list"
    good.write_text("#@ 3991593600\n3692217600 37 # 1 Jan 2017\n", encoding="ascii")
    config = parse_config({"synchronization": {"leap-seconds-file": str(good)}}, P)
    assert config.leap_table.tai_offset(1_800_000_000 * 10**9) == 37
    bad = tmp_path / "bad.list"
    bad.write_text("#@ 3991593600\n3692217600\n", encoding="ascii")
    for path, expected in (
        (tmp_path / "none.list", "a readable leap-seconds.list file (No such file or directory)"),
        (bad, "a file in the leap-seconds.list format (line 2: '3692217600': expected"),
    ):
        with pytest.raises(ConfigErrors) as e:
            parse_config({"synchronization": {"leap-seconds-file": str(path)}}, P)
        [error] = [str(x) for x in e.value.errors]
        assert error.startswith(
            f'{P}: synchronization.leap-seconds-file = "{path}": expected {expected}'
        )


def test_a_control_socket_path_longer_than_a_unix_address_is_refused() -> None:
    """QA s18 hunt-ops F4: it passed --check and failed at start with "AF_UNIX path too long"."""
    assert parse_config({"control": {"socket": "/run/" + "x" * 97 + ".sock"}}, P)  # 107 bytes
    with pytest.raises(ConfigErrors) as caught:
        parse_config({"control": {"socket": "/run/" + "x" * 98 + ".sock"}}, P)
    [message] = [str(e) for e in caught.value.errors]
    assert message.startswith("/etc/tsyncd.toml: control.socket = ")
    assert message.endswith("expected a path of at most 107 bytes (a Unix socket's address limit)")
