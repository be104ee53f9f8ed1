"""The daemon's side of the measurement logs (``tsyncd.measurement_logs``): opening them from
``[log]``, a tracking line per clock update, and ``tsyncctl cyclelogs``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tsyncd.wire.ntp import refid_to_str

if TYPE_CHECKING:
    from tsyncd.clock.base import Clock
    from tsyncd.config import Config
    from tsyncd.measurement_logs import MeasurementLogs
    from tsyncd.sync.core import SourceState, SyncCore
    from tsyncd.sync.discipline import Discipline
    from tsyncd.sync.sample import Sample

__all__ = ["MeasurementLogging"]

log = logging.getLogger("tsyncd.daemon")


class MeasurementLogging:
    """The measurement logs while the daemon runs, and the ``cyclelogs`` method."""

    core: SyncCore
    clock: Clock
    config: Config
    discipline: Discipline
    measurement_logs: MeasurementLogs | None
    _logged_updates: int  # core.clock_updates at the last tracking.log line

    if TYPE_CHECKING:  # SnapshotViews'; declared for the type checker only

        def effective_leap(self, now_ns: int) -> int: ...

    def _open_measurement_logs(self) -> None:
        """The [log] measurement logs, if any is asked for (OSError if they cannot be opened)."""
        cfg = self.config.log
        if cfg.directory is None or not (cfg.measurements or cfg.statistics or cfg.tracking):
            return
        from tsyncd.measurement_logs import MeasurementLogs  # only when configured

        try:
            logs = MeasurementLogs(
                cfg.directory,
                measurements=cfg.measurements,
                statistics=cfg.statistics,
                tracking=cfg.tracking,
            )
        except OSError as exc:  # checked with the config: changed since (or as another user)
            from tsyncd.config_host import log_directory_error, log_files

            files = log_files(cfg)
            raise OSError(log_directory_error(self.config.path, cfg.directory, files, exc)) from exc
        self.measurement_logs = logs
        self._logged_updates = self.core.clock_updates

        def on_sample(name: str, sample: Sample, state: SourceState) -> None:
            now = self.clock.now_ns()
            logs.sample(now, name, sample, len(state.filter), state.filter.output(now))

        self.core.on_sample = on_sample

    def _log_clock_update(self) -> None:
        """A tracking.log line for each clock update since the last one logged."""
        logs = self.measurement_logs
        if logs is None or not logs.tracking or self.core.clock_updates == self._logged_updates:
            return
        self._logged_updates = self.core.clock_updates
        from tsyncd.measurement_logs import tracking_line

        now = self.clock.now_ns()
        d = self.core.decision
        disc = self.discipline.snapshot()
        logs.update(
            tracking_line(
                now,
                reference=refid_to_str(d.reference_id, 1 if d.selected is None else d.stratum),
                stratum=d.stratum,
                frequency_ppm=disc.frequency_ppm,
                skew_ppm=self.core.reference_skew_ppm(now),  # tsyncctl tracking's
                offset_ns=d.offset_ns,
                leap=self.effective_leap(now),
                combined=len(d.survivors),
                jitter_ns=d.jitter_ns,
                root_delay_ns=d.root_delay_ns,
                root_dispersion_ns=d.root_dispersion_ns,
            )
        )

    def _rpc_cyclelogs(self, _params: dict[str, Any]) -> dict[str, Any]:
        """``tsyncctl cyclelogs``: reopen the measurement logs (after logrotate moved them)."""
        logs = self.measurement_logs
        if logs is None:
            return {"reopened": []}
        reopened, errors = logs.reopen()
        for error in errors:
            log.warning("cyclelogs: %s; still writing to the file open before", error)
        if errors:
            from tsyncd.control.rpc import ErrorCode, RpcError

            message = "; ".join(errors) + " (still writing to the file open before)"
            raise RpcError(
                ErrorCode.INTERNAL_ERROR, message, {"reopened": reopened, "errors": errors}
            )
        return {"reopened": reopened}
