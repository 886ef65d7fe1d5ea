"""``run.stuck``: a run still unfinished a while after it was created, reported once per run.

The daemon's tick asks :func:`stuck_runs` for the unfinished runs whose age crossed the
``stuck_after`` of some rule and that are not yet recorded as having crossed it; each gives one
``run.stuck`` change (its key names the run, so each rule notifies once per run) and the
:class:`~runwatch.store.interfaces.StuckMark` that Record writes in the same transaction as the
notifications the change decides. Both the thresholds crossed and the creation time the age counts
from are state: a restart or ``kill -9`` neither reports a run again nor loses its report. A
lifecycle rule's alert resolves when the run ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runwatch.model import Change, ChangeKind
from runwatch.store.interfaces import RunRecord, StuckMark


@dataclass(frozen=True, slots=True)
class StuckRun:
    """A run that crossed thresholds it had not crossed before: its change, and what to record."""

    change: Change
    mark: StuckMark


def stuck_runs(
    unfinished: Mapping[tuple[str, str], RunRecord], now: float, thresholds: Iterable[float]
) -> list[StuckRun]:
    """The runs whose age (since ``RunRecord.created_at``) crossed a threshold not in ``RunRecord.stuck``."""
    wanted = sorted(set(thresholds))
    if not wanted:
        return []
    out: list[StuckRun] = []
    for (provider, run_id), rec in unfinished.items():
        age = now - rec.created_at
        if age < wanted[0]:
            continue
        fresh = tuple(t for t in wanted if t <= age and t not in rec.stuck)
        if not fresh:
            continue
        change = Change(
            key=f"{provider}:{run_id}:stuck",
            kind=ChangeKind.RUN_STUCK,
            provider=provider,
            monitor_id=rec.monitor_id,
            run_id=run_id,
            run={"id": run_id, "status": rec.status},
            from_status=rec.status,
            detected_at=now,
            occurred_at=rec.created_at,
            failing_for=age,
        )
        out.append(StuckRun(change, StuckMark(provider, run_id, fresh)))
    return out
