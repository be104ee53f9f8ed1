"""``tsyncctl add`` / ``tsyncctl delete``: sources added and removed while tsyncd runs, against
real chronyd servers (``-x``) on loopback, a pool through a real dnsmasq, NTS with a test CA."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import tsqcerts
from nts_certs import make_pki
from peers import Peers, Tsyncd, chronyd_nts_server, ctl_fails, free_udp_port, wait_for


def rpc(daemon: Tsyncd, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One raw JSON-RPC call on the control socket; the error member of its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(daemon.socket))
        s.sendall(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
            + b"\n"
        )
        answer = b""
        while not answer.endswith(b"\n"):
            answer += s.recv(65536)
    error: dict[str, Any] = json.loads(answer)["error"]
    return error


def row_in_state(daemon: Tsyncd, name: str, state: str) -> dict[str, Any] | None:
    rows = [r for r in daemon.ctl("peers") if r["name"] == name and r["state"] == state]
    return rows[0] if rows else None


def test_add_select_refuse_and_delete_a_chronyd_server(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd(
        "chronyd", f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 7\nallow 127.0.0.1\n"
    )
    client = peers.tsyncd("tsyncd", "")  # no sources at all
    assert client.ctl("peers") == []
    name = f"127.0.0.1:{port}"

    added = client.ctl("add", name, "--iburst", "--min-poll", "-2", "--max-poll", "-2")
    assert added == {"name": name}
    row = wait_for("the added source selected", lambda: row_in_state(client, name, "selected"))
    assert row["mode"] == "server" and row["stratum"] == 7 and row["poll"] == -2
    assert client.ctl("status")["synchronized"] is True

    # Refused by the config file's rules, with its messages; nothing changes.
    error = ctl_fails(client, "add", "127.0.0.1:9", "--min-poll", "99")
    assert error == (
        "tsyncctl: add_source: source.min-poll = 99: expected integer -7..24 (log2 seconds)\n"
    )
    error = ctl_fails(client, "add", name, "--count", "2")
    assert f'source.address = "{name}": expected an address no other source uses' in error
    assert f"(same as source {name})" in error
    assert 'source.count = 2: expected no count unless mode = "pool"' in error
    assert [r["name"] for r in client.ctl("peers")] == [name]
    assert "added at run time" in client.proc.output()
    # Scripts get each error in the JSON-RPC error's data.
    error = rpc(client, "add_source", {"mode": "server", "address": "x", "min-poll": 9, "a": 1})
    assert error["code"] == -32602
    assert error["data"]["errors"] == [
        "add_source: source.a = 1: expected key to be one of: mode, address, iburst, min-poll, "
        "max-poll, count, xleave, dscp, local-port, broadcast-delay, transport, "
        "certificate-authority, broadcast-calibrate, broadcast-server, broadcast-interface, "
        "noselect, prefer, trust, require, key, offline, name, max-delay, offset"
    ]
    assert error["message"] == error["data"]["errors"][0]

    removed = client.ctl("delete", name)
    assert removed == {"name": name, "associations": [name]}
    assert client.ctl("peers") == []
    status = client.ctl("status")
    assert status["synchronized"] is False and status["selected_source"] is None
    error = ctl_fails(client, "delete", name)
    assert error == f"tsyncctl: remove_source: no source named '{name}' (sources: none)\n"
    # The same address may come back once it is gone.
    assert client.ctl("add", name, "--min-poll", "-2", "--max-poll", "-2") == {"name": name}
    assert [r["name"] for r in client.ctl("peers")] == [name]


def test_delete_a_pool_removes_its_members(peers: Peers) -> None:
    ntp_port, dns_port, _dns = peers.pool_peers(
        "127.0.0.2 pool.test\n127.0.0.3 pool.test\n", (2, 3)
    )
    configured = f"127.0.0.9:{ntp_port}"  # nothing answers there: it only has to be removable
    client = peers.tsyncd(
        "tsyncd",
        textwrap.dedent(
            f"""
            [resolver]
            servers = ["127.0.0.1:{dns_port}"]
            [[source]]
            mode = "server"
            address = "{configured}"
            """
        ),
    )
    pool = f"pool.test:{ntp_port}"
    added = client.ctl(
        "add", pool, "--mode", "pool", "--count", "2", "--iburst", "--min-poll", "-2"
    )
    assert added == {"name": pool}
    members = [f"127.0.0.{i}:{ntp_port}" for i in (2, 3)]

    def both_reached() -> list[dict[str, Any]] | None:
        rows = [r for r in client.ctl("peers") if r["name"] in members and r["reach"]]
        return rows if len(rows) == 2 else None

    rows = wait_for("both pool members reached", both_reached)
    assert {r["mode"] for r in rows} == {"pool"} and {r["source"] for r in rows} == {pool}
    assert sorted(r["name"] for r in client.ctl("ntpdata", pool)) == members  # as offline takes

    error = ctl_fails(client, "delete", members[0])
    assert f"{members[0]} is a member of {pool}: remove {pool}" in error
    assert f"sources: {configured}, {pool})" in error
    error = ctl_fails(client, "add", members[1])
    assert f"(same as {members[1]}, a member of {pool})" in error

    # By address, as offline takes it: a member's is its pool's to remove, several are refused.
    error = ctl_fails(client, "delete", "127.0.0.3")
    assert f"no source named '127.0.0.3' ({members[1]} is a member of {pool}: remove" in error
    error = ctl_fails(client, "delete", "127.0.0.0/24")
    assert error.startswith("tsyncctl: remove_source: '127.0.0.0/24' matches 3 sources (")
    assert f"{configured}, " in error and f"{members[0]} of {pool}" in error
    assert error.endswith("; delete removes one: give its name\n")

    removed = client.ctl("delete", pool)
    assert removed["name"] == pool and sorted(removed["associations"]) == members
    assert [r["name"] for r in client.ctl("peers")] == [configured]
    # A source from the config file goes the same way, here by its IP address (chronyc's way).
    assert client.ctl("delete", "127.0.0.9") == {"name": configured, "associations": [configured]}
    assert client.ctl("peers") == []


def test_add_and_delete_an_nts_source(peers: Peers) -> None:
    pki = make_pki(peers.tmp)
    _chrony, ntp_port, ke_port = chronyd_nts_server(peers, "chronyd-nts", pki.key, pki.chain)
    client = peers.tsyncd("tsyncd", "")
    name = f"127.0.0.1:{ke_port}"
    added = client.ctl(
        "add",
        name,
        "--mode",
        "nts",
        "--certificate-authority",
        str(pki.ca),
        "--min-poll",
        "-2",
        "--max-poll",
        "-2",
    )
    assert added == {"name": name}

    def authenticated() -> dict[str, Any] | None:
        rows = [r for r in client.ctl("peers") if r["nts"] and r["nts"]["authenticated"] >= 1]
        return rows[0] if rows else None

    row = wait_for("an authenticated sample from chronyd", authenticated, timeout=30)
    assert row["name"] == name and row["address"] == f"127.0.0.1:{ntp_port}"
    assert client.ctl("delete", name) == {"name": name, "associations": [name]}
    assert client.ctl("peers") == []


def test_add_and_delete_a_tsq_source(peers: Peers, tmp_path: Path) -> None:
    pki = tsqcerts.make_pki(tmp_path / "pki")
    stream, datagram = free_udp_port(), free_udp_port()
    server = peers.tsyncd(
        "server",
        "[synchronization]\nlocal-stratum = 4\n"
        + tsqcerts.tsq_servers_toml(tmp_path / "pki", stream, datagram),
    )
    client = peers.tsyncd("client", "")
    name = f"127.0.0.1:{datagram}"
    args = ("--mode", "tsq", "--transport", "datagram", "--certificate-authority", str(pki.ca))
    assert client.ctl("add", name, *args, "--iburst", "--min-poll", "-3") == {"name": name}

    def reached() -> dict[str, Any] | None:
        rows = [r for r in client.ctl("peers") if r["reach"] & 3 == 3]
        return rows[0] if rows else None

    row = wait_for("the TSQ source reached", reached)
    assert row["name"] == name and row["mode"] == "tsq" and row["stratum"] == 4

    def tsq_connections() -> int:
        return sum(s["connections"] for s in server.ctl("serverstats")["tsq"])

    assert tsq_connections() == 1
    assert client.ctl("delete", name) == {"name": name, "associations": [name]}
    assert client.ctl("peers") == []
    # The QUIC connection is closed, not left to time out.
    wait_for("the server to see the connection closed", lambda: tsq_connections() == 0)


def test_a_peer_on_a_servers_port_is_refused_at_run_time(peers: Peers) -> None:
    port = free_udp_port()
    daemon = peers.tsyncd("tsyncd", f'[[server]]\nlisten = "127.0.0.1:{port}"\n')
    error = ctl_fails(daemon, "add", "127.0.0.2", "--mode", "peer", "--local-port", str(port))
    assert error == (
        f"tsyncctl: add_source: source.local-port = {port}: expected a port no [[server]] "
        "listens on (a peer sharing a server's port must be in the config file)\n"
    )
    assert daemon.ctl("peers") == []


def test_sighup_applies_the_files_sources_and_keeps_added_ones(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (2, 3, 4))

    def source(i: int) -> str:
        return _server_table(f"127.0.0.{i}:{port}")

    client = peers.tsyncd("tsyncd", source(2))
    added = f"127.0.0.4:{port}"
    assert client.ctl("add", added, "--min-poll", "-3", "--max-poll", "-3") == {"name": added}

    def names() -> set[str]:
        return {str(r["name"]) for r in client.ctl("peers") if r["reach"]}

    wait_for("both polled", lambda: names() == {f"127.0.0.2:{port}", added})
    # The file now has .3 instead of .2, and also .4, which the added source polls already.
    head = client.config.read_text().split("[[source]]")[0]
    client.config.write_text(head + source(3) + source(4))
    client.proc.popen.send_signal(signal.SIGHUP)
    wait_for("the file's new source polled", lambda: names() == {f"127.0.0.3:{port}", added})
    log = client.proc.output()
    assert f"source 127.0.0.2:{port} stopped: gone from the config file" in log
    assert f"source 127.0.0.4:{port} not started: 127.0.0.4:{port} runs already" in log
    assert "take effect after a restart" not in log  # sources need no restart
    status = client.ctl("sources")
    assert {r["name"] for r in status} == {f"127.0.0.3:{port}", added}


def test_tsyncctl_reload_reports_what_changed_and_refuses_a_bad_file(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (2, 3))

    def source(i: int) -> str:
        return _server_table(f"127.0.0.{i}:{port}")

    client = peers.tsyncd("tsyncd", source(2))
    head = client.config.read_text().split("[[source]]")[0]
    server = f'[[server]]\nlisten = "127.0.0.1:{free_udp_port()}"\n'  # takes a restart
    client.config.write_text(head + source(3) + server)
    result = client.ctl("reload")
    assert result["config"] == str(client.config)
    assert result["sources_stopped"] == [f"127.0.0.2:{port}"]
    assert result["sources_started"] == [f"127.0.0.3:{port}"]
    assert result["sources_not_started"] == [] and result["restart_needed"] == ["servers"]
    assert result["restart_sections"] == ["[[server]]"]  # as the file writes it
    row = wait_for(
        "the new source selected", lambda: row_in_state(client, f"127.0.0.3:{port}", "selected")
    )
    assert row["stratum"] == 7
    # No "no sources configured" for the moment between the old source's stop and the new
    # one's start (QA s18 hunt-nts-client #7).
    assert "no source selected: no sources configured" not in client.proc.output()
    # A bad file: the error names file, key and value; nothing changes.
    client.config.write_text(head + source(3).replace("min-poll = -3", "min-poll = 99"))
    error = ctl_fails(client, "reload")
    assert error.startswith("tsyncctl: reload failed, keeping the running configuration: ")
    assert f"{client.config}: source[0].min-poll = 99: expected integer -7..24" in error
    wait_for(  # the daemon's own log says so too, one line naming what asked (QA s17 F6)
        "the failed reload in the daemon's log",
        lambda: (
            "reload (tsyncctl reload) failed, keeping the running configuration: "
            f"{client.config}: source[0].min-poll = 99" in client.proc.output()
        ),
    )
    assert [r["name"] for r in client.ctl("peers")] == [f"127.0.0.3:{port}"]
    # Back to the good file: nothing to change but what only a restart applies.
    client.config.write_text(head + source(3) + server)
    done = subprocess.run(
        [sys.executable, "-m", "tsyncctl", "-s", str(client.socket), "reload"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert done.stdout == f"reloaded {client.config}\ntakes a restart: [[server]]\n"
    wait_for(  # and the daemon's log (QA s21 hunt-nts F5: not "servers")
        "the restart-needing section in the daemon's log",
        lambda: "changes to [[server]] take effect after a restart" in client.proc.output(),
    )
    # tsyncctl ntpdata on the daemon's own snapshot: the source, field by field.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsyncctl",
            "-s",
            str(client.socket),
            "ntpdata",
            f"127.0.0.3:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    pairs = (line.split(" : ", 1) for line in done.stdout.splitlines())
    fields = {key.strip(): value for key, value in pairs}
    assert fields["Stratum"] == "7" and fields["State"] == "selected"
    # A file left with no [[source]] (truncated by an editor, say) is valid: it stops every
    # source, and the log says so (QA s17 hunt-life F9).
    client.config.write_text(head + server)
    assert client.ctl("reload")["sources_stopped"] == [f"127.0.0.3:{port}"]
    assert f"{client.config} has no [[source]] now: stopping every source it had" in (
        client.proc.output()
    )


def _server_table(address: str) -> str:
    """A fast-polling ``[[source]]`` table for the server at ``address``."""
    return (
        f'[[source]]\nmode = "server"\naddress = "{address}"\n'
        "iburst = true\nmin-poll = -3\nmax-poll = -3\n"
    )


def test_added_sources_by_name_and_name_clashes(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (1, 2))
    client = peers.tsyncd("tsyncd", "")
    first, second = f"127.0.0.1:{port}", f"127.0.0.2:{port}"
    assert client.ctl("add", first, "--name", "lab", "--min-poll", "-3") == {"name": "lab"}
    error = ctl_fails(client, "add", second, "--name", "lab")
    assert error == (
        "tsyncctl: add_source: source.name = 'lab': expected a name no other source has"
        " (give it its own name = ...)\n"
    )
    row = wait_for("the named source reached", lambda: row_in_state(client, "lab", "selected"))
    assert row["address"] == first
    assert client.ctl("delete", "lab") == {"name": "lab", "associations": ["lab"]}
    assert client.ctl("peers") == []


def test_reload_does_not_start_a_table_whose_address_an_added_source_polls(peers: Peers) -> None:
    port = free_udp_port()
    peers.chronyd_servers(port, (2, 3))
    two, three = f"127.0.0.2:{port}", f"127.0.0.3:{port}"
    client = peers.tsyncd("tsyncd", _server_table(two))
    fast = ("--min-poll", "-3", "--max-poll", "-3")
    assert client.ctl("add", three, "--name", "dup3", *fast) == {"name": "dup3"}
    # The file gains a table for the address the added source polls, under another name.
    head = client.config.read_text().split("[[source]]")[0]
    client.config.write_text(head + _server_table(two) + _server_table(three) + 'name = "three"\n')
    result = client.ctl("reload")
    assert result["sources_started"] == [] and result["sources_stopped"] == []
    assert result["sources_not_started"] == [
        {"name": "three", "reason": "its address is in use by source dup3"}
    ]
    assert sorted((r["name"], r["address"]) for r in client.ctl("peers")) == [
        (two, two),
        ("dup3", three),
    ]
    assert f"{client.config}: source three not started: its address is in use by source dup3" in (
        client.proc.output()
    )
    # Once the conflict is gone, the next reload starts it, the file unchanged (QA s17
    # hunt-churn F2: it stayed off until the file changed or the daemon restarted).
    client.ctl("delete", "dup3")
    result = client.ctl("reload")
    assert result["sources_started"] == ["three"] and result["sources_not_started"] == []
    assert sorted((r["name"], r["address"]) for r in client.ctl("peers")) == [
        (two, two),
        ("three", three),
    ]
    assert client.ctl("reload")["sources_started"] == []  # and only once


def test_a_name_that_is_another_sources_address_is_refused(peers: Peers) -> None:
    """``offline NAME`` and the like take a name before an address: a source named after
    another's address would be picked in its place."""
    port = free_udp_port()
    peers.chronyd_servers(port, (2, 3))
    two, three = f"127.0.0.2:{port}", f"127.0.0.3:{port}"
    client = peers.tsyncd("tsyncd", "")
    assert client.ctl("add", two, "--name", "a") == {"name": "a"}
    for name in (two, "127.0.0.2", "127.0.0.0/24"):
        error = ctl_fails(client, "add", three, "--name", name)
        assert error == (
            f'tsyncctl: add_source: source.name = "{name}": expected a name that is no other'
            " source's address (as a tsyncctl selector it picks source a too)\n"
        )
    assert [r["name"] for r in client.ctl("peers")] == ["a"]
    # Its own address is a name as good as the default.
    assert client.ctl("add", three, "--name", "127.0.0.3") == {"name": "127.0.0.3"}
    assert client.ctl("delete", "127.0.0.3")["name"] == "127.0.0.3"
    # A reload does not start a table so named either.
    client.config.write_text(client.config.read_text() + _server_table(three) + f'name = "{two}"\n')
    result = client.ctl("reload")
    assert result["sources_started"] == []
    [not_started] = result["sources_not_started"]
    assert not_started["name"] == two and not_started["reason"] == (
        f'source.name = "{two}": expected a name that is no other source\'s address (as a'
        " tsyncctl selector it picks source a too)"
    )
    assert client.ctl("offline", "127.0.0.2")["selected"] == ["a"]  # a's IP: a alone
