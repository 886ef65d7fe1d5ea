"""The pure diff from what was recorded about a run to what a poll sees of it now."""

from __future__ import annotations

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import TERMINAL_STATUSES, Change, ChangeKind, RunSnapshot
from runwatch.pipeline.chain import Batch
from runwatch.sources.registry import PROVIDERS
from runwatch.store.interfaces import CatchUp, Fence, RunRecord, Store

log = get_logger(__name__)


def diff(prev: RunRecord | None, snap: RunSnapshot, now: float) -> list[Change]:
    """Changes between what was recorded and what is seen now, in the order they happened.

    A status is reported when it differs from the recorded one (so a jump created -> failed is one
    change with ``from_status='created'``); a terminal status is final, so a later different answer
    is not a change. Events are reported once each, sorted by timestamp.
    """
    changes: list[Change] = []
    base = dict(provider=snap.provider, monitor_id=snap.monitor_id, run_id=snap.run_id, run=snap.raw)
    status_change: Change | None = None
    if prev is None or (prev.status != snap.status and prev.status not in TERMINAL_STATUSES):
        status_change = Change(
            key=f"{snap.provider}:{snap.run_id}:status:{snap.status}",
            kind=ChangeKind.RUN_STATUS,
            from_status=prev.status if prev else None,
            to_status=snap.status,
            failed_reason=snap.failed_reason,
            detected_at=now,
            occurred_at=snap.changed_at if snap.changed_at is not None else snap.finished_at,
            **base,  # type: ignore[arg-type]
        )
    seen = prev.events if prev else set()
    new_events = sorted((e for e in snap.events if e.id not in seen), key=lambda e: (e.ts_ms, e.id))
    event_changes = [
        Change(
            key=f"{snap.provider}:{snap.run_id}:event:{e.id}",
            kind=ChangeKind.RUN_EVENT,
            event=e,
            from_status=prev.status if prev else None,
            # A step is not a status change: ``to`` is empty, so a rule naming ``to`` never matches it.
            to_status=None,
            failed_reason=e.error or snap.failed_reason,
            detected_at=now,
            occurred_at=e.ts_ms / 1000.0 if e.ts_ms > 0 else None,
            **base,  # type: ignore[arg-type]
        )
        for e in new_events
    ]
    # A run that just started is reported before its steps; one that just ended, after them.
    if status_change is not None and not snap.terminal:
        changes.append(status_change)
        status_change = None
    changes.extend(event_changes)
    if status_change is not None:
        changes.append(status_change)
    return changes


class Detect:
    """Diff each snapshot against the state; a monitor read for the first time is a silent baseline.

    A first start's baseline is the whole history in the look-back, however many cycles (and
    restarts) reading it takes: when the first poll runs out of pages, the runs later polls read from
    where it stopped (``MonitorBatch.resumed``) are baseline too, until the listing is read through.
    """

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.baselined: set[str] = {p for p in PROVIDERS if store.get_meta(f"baseline_done:{p}") == "1"}

    def provider_settled(self, provider: str, *, fence: Fence | None = None) -> None:
        """The provider's first error-free poll cycle is over: new monitors are news from now on
        (written under ``fence``, the poller's lease)."""
        if provider not in self.baselined:
            self.store.set_meta(f"baseline_done:{provider}", "1", fence=fence)
            self.baselined.add(provider)

    def __call__(self, batch: Batch) -> None:
        src = batch.source
        batch.baseline = src.provider not in self.baselined and not self.store.runs.knows_monitor(
            src.provider, src.monitor_id
        )
        runs = self.store.runs
        before = runs.catch_up(src.provider, src.monitor_id)
        history = src.resumed if before is not None and before.baseline else frozenset()
        silenced = 0
        for snap in src.snapshots:
            if runs.is_done(src.provider, snap.run_id):
                continue  # finished and reported before: nothing about it is news
            prev = runs.run(src.provider, snap.run_id)
            if prev is None and snap.run_id in history:
                silenced += 1  # older than the runs the baseline recorded: history, recorded silently
                continue
            batch.changes.extend(diff(prev, snap, batch.now))
        if src.backlog is not None:
            going_on = batch.baseline or (before is not None and before.baseline)
            batch.catch_up = CatchUp(src.backlog, baseline=going_on and bool(src.backlog))
        if silenced:
            log.info(
                "baseline.continued",
                provider=src.provider,
                monitor_id=src.monitor_id,
                runs=silenced,
                done=not src.backlog,
            )
        if batch.baseline:
            if batch.changes:
                log.info(
                    "baseline.recorded",
                    provider=src.provider,
                    monitor_id=src.monitor_id,
                    runs=len(src.snapshots),
                    changes_silenced=len(batch.changes),
                )
            batch.changes = []
        for ch in batch.changes:
            self.metrics.changes.labels(ch.provider, ch.kind.value).inc()
            log.info(
                "change.detected",
                provider=ch.provider,
                monitor_id=ch.monitor_id,
                run_id=ch.run_id,
                kind=ch.kind.value,
                from_status=ch.from_status,
                to_status=ch.to_status,
                step=ch.event.name if ch.event else None,
            )
