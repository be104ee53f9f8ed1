"""A broadcast client's IO edge: the port broadcasts (or multicasts) arrive on, and a socket
for the calibration volley.

The listening socket binds the broadcasts' port on the wildcard address (shared with
``SO_REUSEADDR``, as other listeners on the host may hear the same broadcasts), joins the
multicast group when the configured address is one, and passes on only the packets whose
source is the configured server (``broadcast-server``, or the IPv4 ``address`` itself).  The
calibration requests (``broadcast-calibrate``) go from a separate ephemeral-port socket,
connected to the server's unicast address: the replies then come back to that socket only,
not to the broadcasts' port, which a local NTP server may hold too.  The protocol decisions
are the sans-IO ``BroadcastAssociation``'s.
"""

from __future__ import annotations

import dataclasses

from tsyncd.config import SourceConfig
from tsyncd.config_broadcast import is_multicast
from tsyncd.net.multicast import join_group
from tsyncd.net.udp import Address, SocketOptions, TimestampedUdp
from tsyncd.net.warmsend import client_warmer
from tsyncd.snapshots import SourceSnapshot
from tsyncd.sources.ntp import DropHandler, NtpSourceSocket, ReplyHandler, TxHandler
from tsyncd.sync.broadcast import BroadcastAssociation
from tsyncd.sync.core import SourceState


class BroadcastSourceSocket(NtpSourceSocket):
    """The sockets of one ``mode = "broadcast"`` source; ``ip``/``port`` are the server's
    unicast address (where calibration requests go), ``local_port`` the broadcasts' port."""

    def __init__(self, cfg: SourceConfig, name: str, address_ip: str) -> None:
        """``address_ip``: the configured address, resolved (the server, or a group)."""
        server = cfg.broadcast_server
        super().__init__(
            name=name,
            mode=cfg.mode,
            ip=server.host if server is not None else address_ip,
            port=server.port if server is not None else cfg.address.port,
            options=SocketOptions(dscp=cfg.dscp, reuse_addr=True),
            local_port=cfg.address.port,
            connect=False,
        )
        self.group = address_ip if is_multicast(address_ip) else None
        self.interface = cfg.broadcast_interface
        self.calibrate = cfg.broadcast_calibrate
        self._dscp = cfg.dscp
        self._volley_udp: TimestampedUdp | None = None

    def open(
        self,
        on_reply: ReplyHandler,
        on_tx: TxHandler | None = None,
        on_drop: DropHandler | None = None,
    ) -> None:
        """Bind the broadcasts' port (joining the group) and, to calibrate, the volley socket;
        other servers' broadcasts go to ``on_drop``."""
        super().open(on_reply, on_drop=on_drop)
        try:
            if self.group is not None and self._udp is not None:
                join_group(self._udp.sock, self.group, self.interface)
            if self.calibrate:
                self._volley_udp = self._open_volley(on_reply, on_tx)
        except OSError:
            self.close()
            raise

    def _open_volley(self, on_reply: ReplyHandler, on_tx: TxHandler | None) -> TimestampedUdp:
        def on_datagram(data: bytes, _address: Address, rx_ns: int) -> None:
            self._datagram_kernel_rx = udp.rx_kernel_stamped
            on_reply(self.name, data, rx_ns)  # connected: only the server's datagrams come

        udp = TimestampedUdp.bind(
            "::" if ":" in self.ip else "0.0.0.0",
            0,
            on_datagram,
            on_tx_timestamp=self.tx_stamp_handler(on_tx),
            options=SocketOptions(dscp=self._dscp),
        )
        udp.sock.connect(self.peer)
        udp.yield_after_send = True  # as the requests of every other source
        udp.warmer = client_warmer(udp.sock.family)
        return udp

    def _request_socket(self) -> TimestampedUdp | None:
        """Calibration requests leave from the volley socket (None: no calibration)."""
        return self._volley_udp

    def close(self) -> None:
        """Close both sockets (leaving the group with the first)."""
        super().close()
        if self._volley_udp is not None:
            self._volley_udp.close()

    def snapshot(
        self, state: SourceState, label: str, reason: str | None, now_ns: int
    ) -> SourceSnapshot:
        """The source's row, with the round trip its offsets assume."""
        snap = super().snapshot(state, label, reason, now_ns)
        a = state.association
        if not isinstance(a, BroadcastAssociation):
            return snap
        return dataclasses.replace(snap, broadcast_delay=a.broadcast_delay_ns * 1e-9)
