"""The recorder every store shares: memory first, one transaction, memory again after the commit.

A store keeps in memory what a poll needs (unfinished runs and the events already reported, open
alerts, monitors), so deciding whether a poll saw anything new reads no rows: most polls of most
monitors write nothing. What is new is written in one transaction by the backend
(:meth:`Recording.write`), and applied to memory only once it committed, so memory never runs ahead of
the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from runwatch.model import RunSnapshot
from runwatch.store.alert_state import AlertUpdate
from runwatch.store.hints import PendingHints
from runwatch.store.interfaces import CatchUp, Fence, Hint, MonitorRecord, Notification, StuckMark
from runwatch.store.sqlite.alerts import SqliteAlerts
from runwatch.store.sqlite.monitors import SqliteMonitors
from runwatch.store.sqlite.runs import SqliteRuns


@dataclass(frozen=True, slots=True)
class Write:
    """Everything one record writes (see :meth:`Recording.record`)."""

    provider: str
    snapshots: Sequence[RunSnapshot]
    notifications: list[Notification]
    now: float
    monitor_id: str | None
    retired: Sequence[str]
    alert_updates: Sequence[AlertUpdate]
    monitor_updates: Sequence[MonitorRecord]
    baselined: str | None
    catch_up: CatchUp | None
    stuck: Sequence[StuckMark]
    #: The pushes the read answers: consumed in the same transaction.
    hints: Sequence[Hint] = ()


class Recording(ABC):
    """:meth:`record` over a backend's memory-keeping parts and its one-transaction :meth:`write`."""

    runs: SqliteRuns
    alerts: SqliteAlerts
    monitors: SqliteMonitors
    hints: PendingHints

    @abstractmethod
    def write(self, w: Write, fence: Fence | None) -> int:
        """Write ``w`` in one transaction (checking ``fence`` in it); returns the new outbox rows."""

    def record(
        self,
        provider: str,
        snapshots: Sequence[RunSnapshot],
        notifications: Iterable[Notification],
        now: float,
        *,
        monitor_id: str | None = None,
        retired: Sequence[str] = (),
        alert_updates: Sequence[AlertUpdate] = (),
        monitor_updates: Sequence[MonitorRecord] = (),
        baselined: str | None = None,
        catch_up: CatchUp | None = None,
        stuck: Sequence[StuckMark] = (),
        fence: Fence | None = None,
        hints_before: float | None = None,
    ) -> int:
        """Record what was seen and queue what was decided about it, in one transaction.

        Returns how many notifications were new (a change decided again after a crash is not queued
        twice: the notification id is the row's unique key). ``monitor_updates`` are monitors as a
        listing or the missed-run check left them; ``baselined`` names a provider whose first
        listing this is; ``catch_up`` is where the poll of ``monitor_id`` left off (None: unchanged);
        ``hints_before``: when the read of ``monitor_id`` began, so the pushes it answers are consumed.
        """
        notifications = list(notifications)
        hints, read = self.hints.answered(
            provider, monitor_id, snapshots, retired, self.runs.is_done, hints_before
        )
        if not (
            hints
            or notifications
            or retired
            or alert_updates
            or monitor_updates
            or baselined
            or stuck
            or self.runs.changes(provider, snapshots, monitor_id)
            or self.runs.catch_up_changes(provider, monitor_id, catch_up)
        ):
            return 0  # a poll that saw nothing new writes nothing (most polls of most monitors)
        w = Write(
            provider, snapshots, notifications, now, monitor_id, retired, alert_updates, monitor_updates,
            baselined, catch_up, stuck, hints,
        )  # fmt: skip
        new_rows = self.write(w, fence)
        self.runs.apply(provider, snapshots, monitor_id, retired, now, catch_up)
        self.alerts.apply(alert_updates)
        self.monitors.apply(monitor_updates, baselined)
        self.runs.apply_stuck(stuck)
        if hints:
            self.hints.apply_consumed(hints, read, now)
        return new_rows
