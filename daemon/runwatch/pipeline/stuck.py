"""``run.stuck``: a run still unfinished a while after it was created, reported once per run.

The daemon's tick asks :meth:`StuckRuns.changes` for the unfinished runs whose age crossed the
``stuck_after`` of some rule since last asked; each gives one ``run.stuck`` change (its key names the
run, so each rule notifies once per run). A lifecycle rule's alert resolves when the run ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from runwatch.model import Change, ChangeKind
from runwatch.store.interfaces import RunRecord


class StuckRuns:
    """Which ``stuck_after`` thresholds each unfinished run has crossed (in memory)."""

    def __init__(self) -> None:
        self._crossed: dict[tuple[str, str], set[float]] = {}

    def changes(
        self, unfinished: Mapping[tuple[str, str], RunRecord], now: float, thresholds: Iterable[float]
    ) -> list[Change]:
        wanted = sorted(set(thresholds))
        if not wanted:
            return []
        out: list[Change] = []
        for key, rec in unfinished.items():
            age = now - rec.created_at
            if age < wanted[0]:
                continue
            crossed = self._crossed.setdefault(key, set())
            fresh = {t for t in wanted if t <= age} - crossed
            if not fresh:
                continue
            crossed |= fresh
            provider, run_id = key
            out.append(
                Change(
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
            )
        for gone in set(self._crossed) - set(unfinished):
            del self._crossed[gone]
        return out
