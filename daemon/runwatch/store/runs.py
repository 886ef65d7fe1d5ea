"""Run state in SQLite plus an in-memory copy of the run table, so a poll reads no rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from runwatch.model import TERMINAL_STATUSES, RunSnapshot
from runwatch.store.interfaces import RunRecord


class SqliteRuns:
    """Runs and monitors seen, and the events already reported; written only inside a record."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.runs: dict[tuple[str, str], RunRecord] = {}
        self.monitors: set[tuple[str, str]] = set()
        for provider, run_id, monitor_id, status, done in db.execute(
            "SELECT provider, run_id, monitor_id, status, done FROM runs"
        ):
            self.runs[(provider, run_id)] = RunRecord(monitor_id, status, bool(done))
        for provider, run_id, event_id in db.execute("SELECT provider, run_id, event_id FROM run_events"):
            rec = self.runs.get((provider, run_id))
            if rec is not None:
                rec.events.add(event_id)
        self.monitors = {(p, m) for p, m in db.execute("SELECT provider, monitor_id FROM monitors")}

    def run(self, provider: str, run_id: str) -> RunRecord | None:
        return self.runs.get((provider, run_id))

    def knows_monitor(self, provider: str, monitor_id: str) -> bool:
        return (provider, monitor_id) in self.monitors

    def status_counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for (provider, _), rec in self.runs.items():
            out[(provider, rec.status)] = out.get((provider, rec.status), 0) + 1
        return out

    def write(
        self, provider: str, snapshots: Sequence[RunSnapshot], now: float, monitor_id: str | None
    ) -> None:
        """The rows for what a poll saw; the caller holds the transaction."""
        db = self.db
        if monitor_id is not None and (provider, monitor_id) not in self.monitors:
            db.execute(
                "INSERT OR IGNORE INTO monitors (provider, monitor_id, first_seen) VALUES (?, ?, ?)",
                (provider, monitor_id, now),
            )
        run_rows: list[tuple[str, str, str, str, int, float]] = []
        event_rows: list[tuple[str, str, str]] = []
        for s in snapshots:
            prev = self.runs.get((provider, s.run_id))
            seen = prev.events if prev else set()
            status = prev.status if prev and prev.status in TERMINAL_STATUSES else s.status
            run_rows.append((provider, s.run_id, s.monitor_id, status, int(s.terminal), now))
            event_rows.extend((provider, s.run_id, e.id) for e in s.events if e.id not in seen)
        db.executemany(
            "INSERT OR REPLACE INTO runs (provider, run_id, monitor_id, status, done, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            run_rows,
        )
        db.executemany(
            "INSERT OR IGNORE INTO run_events (provider, run_id, event_id) VALUES (?, ?, ?)", event_rows
        )

    def apply(self, provider: str, snapshots: Sequence[RunSnapshot], monitor_id: str | None) -> None:
        """After the commit: memory never runs ahead of the file."""
        if monitor_id is not None:
            self.monitors.add((provider, monitor_id))
        for s in snapshots:
            prev = self.runs.get((provider, s.run_id))
            if prev is None:
                prev = self.runs[(provider, s.run_id)] = RunRecord(s.monitor_id, s.status, s.terminal)
            elif prev.status not in TERMINAL_STATUSES:
                prev.status = s.status
            prev.done = prev.done or s.terminal
            prev.events.update(e.id for e in s.events)

    def purge_finished(self, finished_before: float) -> int:
        """Forget runs that finished before ``finished_before`` (and their events); returns how many."""
        db = self.db
        gone = db.execute(
            "SELECT provider, run_id FROM runs WHERE done = 1 AND updated_at < ?", (finished_before,)
        ).fetchall()
        if not gone:
            return 0
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM run_events WHERE provider = ? AND run_id = ?", gone)
            db.executemany("DELETE FROM runs WHERE provider = ? AND run_id = ?", gone)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for provider, run_id in gone:
            self.runs.pop((provider, run_id), None)
        return len(gone)
