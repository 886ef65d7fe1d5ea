"""``monitor.status`` and ``monitor.missed_run``: what the monitors themselves do, beside their runs.

- A listing (:class:`~runwatch.sources.base.MonitorListing`) is compared with the monitors recorded:
  a status that changed, a monitor that appeared, one confirmed gone (-> ``deleted``) is one
  ``monitor.status`` change. A provider's first listing is a silent baseline, as its runs are.
- Each runnable monitor (enabled/active) has a scheduled run being watched (``due``, from the
  provider's ``nextRunAt``/``next_run_at``, else its cron in its time zone). A run of the monitor
  created at or after ``due`` less a poll interval of slack closes the window. The daemon's tick
  reports one ``monitor.missed_run`` per (monitor, due time) once a rule's ``grace`` has passed and
  the monitor was polled since: a run that shows up later resolves a lifecycle alert.

Every decision goes back as :class:`~runwatch.store.interfaces.MonitorRecord` updates, recorded in the
same transaction as the notifications it caused; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import (
    MONITOR_STATUSES,
    Change,
    ChangeKind,
    rfc3339,
)
from runwatch.pipeline.chain import Batch
from runwatch.sources.base import MonitorBatch, MonitorListing, parse_time
from runwatch.store.interfaces import MonitorRecord
from runwatch.store.interfaces import Monitors as MonitorStore

log = get_logger(__name__)

#: Statuses in which a monitor runs on its schedule (and so can miss a run). A monitor whose status the
#: provider does not say (an old flat shape) is taken as running.
RUNNABLE = frozenset({"enabled", "active", None})
#: When no rule asks about missed runs, a passed due time is let go after this long (the default
#: ``grace``), so a rule added later is not told about a run missed long ago.
DEFAULT_GRACE = 600.0


def monitor_status(raw: Mapping[str, Any]) -> str | None:
    status = raw.get("status")
    return status if isinstance(status, str) and status else None


@dataclass(slots=True)
class ListingOutcome:
    """What one listing decided: the changes to match, the records to write."""

    changes: list[Change] = field(default_factory=list)
    updates: list[MonitorRecord] = field(default_factory=list)
    #: The provider whose first listing this is (recorded silently), if so.
    baselined: str | None = None


class MonitorWatch:
    """Turns listings, polled batches and the clock into monitor changes and record updates.

    ``slack`` is each provider's poll interval: a run created that much before its due time still
    counts as the scheduled one (a provider may create it a moment early).
    """

    def __init__(self, monitors: MonitorStore, slack: Mapping[str, float]) -> None:
        self.monitors = monitors
        self.slack = dict(slack)
        #: When each monitor was last polled (memory only: after a restart, a missed run waits for a
        #: poll, so a run that came during the downtime is seen first).
        self._polled: dict[tuple[str, str], float] = {}

    def _satisfied(self, rec: MonitorRecord, due: float) -> bool:
        slack = self.slack.get(rec.provider, 0.0)
        return rec.last_started is not None and rec.last_started >= due - slack

    @staticmethod
    def _advance(rec: MonitorRecord) -> None:
        """The watched due time is settled: watch the provider's next one (or none until listed)."""
        nxt = rec.next_due
        rec.due = nxt if nxt is not None and (rec.due is None or nxt > rec.due) else None
        rec.next_due = None

    # -- listings ---------------------------------------------------------------------------------------
    def listing(self, listing: MonitorListing, now: float) -> ListingOutcome:
        provider = listing.provider
        out = ListingOutcome()
        baseline = provider not in self.monitors.baselined
        if baseline:
            out.baselined = provider
        for mid, raw in listing.monitors.items():
            prev = self.monitors.get(provider, mid)
            status = monitor_status(raw)
            rec = replace(prev) if prev is not None else MonitorRecord(provider, mid, None, {})
            if not baseline and status in MONITOR_STATUSES and (prev is None or prev.status != status):
                out.changes.append(self._status_change(rec, prev, status, raw, now))
            rec.raw = raw
            rec.status = status
            self._schedule(rec, listing.due.get(mid), now)
            if rec != prev:
                out.updates.append(rec)
        for mid, raw in listing.gone.items():
            prev = self.monitors.get(provider, mid)
            if prev is None or prev.status == "deleted":
                continue
            rec = replace(prev, status="deleted", raw=raw or prev.raw, due=None, next_due=None)
            if not baseline:
                out.changes.append(self._status_change(rec, prev, "deleted", rec.raw, now))
            out.updates.append(rec)
        return out

    def _schedule(self, rec: MonitorRecord, listed_due: float | None, now: float) -> None:
        if rec.status not in RUNNABLE:
            rec.due = rec.next_due = None  # paused or disabled: no run is owed
        elif rec.due is None or rec.due > now or self._satisfied(rec, rec.due):
            rec.due, rec.next_due = listed_due, None
        elif listed_due is not None and listed_due > rec.due:
            rec.next_due = listed_due  # the watched one passed: keep it, and remember the next

    @staticmethod
    def _status_change(
        rec: MonitorRecord, prev: MonitorRecord | None, to: str, raw: Mapping[str, Any], now: float
    ) -> Change:
        updated = parse_time(raw.get("updatedAt") or raw.get("updated"))
        stamp = rfc3339(updated if updated is not None else now)
        err = raw.get("error_message")
        return Change(
            key=f"{rec.provider}:{rec.monitor_id}:monitor:{to}:{stamp}",
            kind=ChangeKind.MONITOR_STATUS,
            provider=rec.provider,
            monitor_id=rec.monitor_id,
            run_id="",
            run={},
            from_status=prev.status if prev is not None else None,
            to_status=to,
            failed_reason=err if isinstance(err, str) and err else None,
            detected_at=now,
            occurred_at=updated,
            monitor=raw,
        )

    # -- polls ------------------------------------------------------------------------------------------
    def polled(self, batch: MonitorBatch, now: float) -> MonitorRecord | None:
        """A poll of one monitor: a run created since its due time closes the window. Returns the
        record to write, if this poll changed it."""
        key = (batch.provider, batch.monitor_id)
        self._polled[key] = now
        rec = self.monitors.get(*key)
        started = batch.last_started
        if rec is None or started is None or (rec.last_started is not None and started <= rec.last_started):
            return None
        rec.last_started = started
        if rec.due is not None and self._satisfied(rec, rec.due):
            self._advance(rec)
        return rec

    # -- the clock --------------------------------------------------------------------------------------
    def missed(self, now: float, graces: Iterable[float]) -> tuple[list[Change], list[MonitorRecord]]:
        """The scheduled runs late by a rule's ``grace`` (each grace once per due time)."""
        wanted = sorted(set(graces))
        top = wanted[-1] if wanted else DEFAULT_GRACE
        changes: list[Change] = []
        updates: list[MonitorRecord] = []
        for rec in self.monitors.due_by(now - (wanted[0] if wanted else top)):
            due = rec.due
            if due is None or rec.status not in RUNNABLE:
                continue
            changed = False
            if self._satisfied(rec, due):
                self._advance(rec)
                updates.append(rec)
                continue
            late = now - due
            slack = self.slack.get(rec.provider, 0.0)
            polled = self._polled.get((rec.provider, rec.monitor_id), 0.0)
            done = rec.missed_grace if rec.missed_due == due else 0.0
            fresh = [g for g in wanted if done < g <= late and polled >= due + g - slack]
            if fresh:
                rec.missed_due, rec.missed_grace = due, max(fresh)
                changes.append(self._missed_change(rec, due, now))
                changed = True
                log.info(
                    "monitor.missed_run", provider=rec.provider, monitor_id=rec.monitor_id,
                    due_at=rfc3339(due), late=round(late, 1),
                )  # fmt: skip
            if (not wanted and late >= top) or (rec.missed_due == due and rec.missed_grace >= top):
                self._advance(rec)
                changed = True
            if changed:
                updates.append(rec)
        return changes, updates

    @staticmethod
    def _missed_change(rec: MonitorRecord, due: float, now: float) -> Change:
        return Change(
            key=f"{rec.provider}:{rec.monitor_id}:missed_run:{rfc3339(due)}",
            kind=ChangeKind.MONITOR_MISSED_RUN,
            provider=rec.provider,
            monitor_id=rec.monitor_id,
            run_id="",
            run={},
            detected_at=now,
            occurred_at=due,
            failing_for=now - due,
            monitor=rec.raw,
        )


class Monitors:
    """Give each change the monitor as last listed; note a scheduled run that came (see
    :mod:`runwatch.pipeline.monitors`). Also turns a listing into a batch of ``monitor.status`` changes."""

    def __init__(self, watch: MonitorWatch, metrics: Metrics) -> None:
        self.watch = watch
        self.metrics = metrics

    def __call__(self, batch: Batch) -> None:
        src = batch.source
        if src.monitor_id:
            raw = src.monitor
            if raw is None:
                raw = self.watch.monitors.raw(src.provider, src.monitor_id)
            if raw:
                batch.changes = [replace(ch, monitor=raw) for ch in batch.changes]
            rec = self.watch.polled(src, batch.now)
            if rec is not None:
                batch.monitor_updates.append(rec)

    def listing(self, listing: MonitorListing, now: float) -> Batch:
        """The batch a listing makes: its changes (none on the provider's first listing) and records."""
        out = self.watch.listing(listing, now)
        batch = Batch(MonitorBatch(listing.provider, "", []), now, changes=out.changes)
        batch.monitor_updates = out.updates
        batch.monitors_baselined = out.baselined
        if out.baselined:
            log.info("monitors.baseline", provider=listing.provider, monitors=len(listing.monitors))
        for ch in out.changes:
            self.metrics.changes.labels(ch.provider, ch.kind.value).inc()
            log.info(
                "change.detected", provider=ch.provider, monitor_id=ch.monitor_id, kind=ch.kind.value,
                from_status=ch.from_status, to_status=ch.to_status,
            )  # fmt: skip
        return batch
