"""The pure diff from what was recorded about a run to what a poll sees of it now."""

from __future__ import annotations

from runwatch.model import TERMINAL_STATUSES, Change, ChangeKind, RunSnapshot
from runwatch.store.interfaces import RunRecord


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
