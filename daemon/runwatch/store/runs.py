"""Run state in SQLite plus an in-memory copy of the run table, so a poll reads no rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

from runwatch.model import TERMINAL_STATUSES, RunSnapshot
from runwatch.store.interfaces import RunRecord


class SqliteRuns:
    """Runs and monitors seen, and the events already reported; written only inside a record.

    Besides the run table it keeps an index of the unfinished runs per monitor, updated as runs are
    recorded, so a source asking "what is unfinished here" costs a dict lookup, not a scan.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.runs: dict[tuple[str, str], RunRecord] = {}
        self.monitors: set[tuple[str, str]] = set()
        self._unfinished: dict[tuple[str, str], set[str]] = {}
        for provider, run_id, monitor_id, status, done in db.execute(
            "SELECT provider, run_id, monitor_id, status, done FROM runs"
        ):
            self.runs[(provider, run_id)] = RunRecord(monitor_id, status, bool(done))
            if not done:
                self._unfinished.setdefault((provider, monitor_id), set()).add(run_id)
        for provider, run_id, event_id in db.execute("SELECT provider, run_id, event_id FROM run_events"):
            rec = self.runs.get((provider, run_id))
            if rec is not None:
                rec.events.add(event_id)
        self.monitors = {(p, m) for p, m in db.execute("SELECT provider, monitor_id FROM monitors")}

    def run(self, provider: str, run_id: str) -> RunRecord | None:
        return self.runs.get((provider, run_id))

    def is_done(self, provider: str, run_id: str) -> bool | None:
        rec = self.runs.get((provider, run_id))
        return None if rec is None else rec.done

    def unfinished(self, provider: str, monitor_id: str) -> Collection[str]:
        return self._unfinished.get((provider, monitor_id), ())

    def knows_monitor(self, provider: str, monitor_id: str) -> bool:
        return (provider, monitor_id) in self.monitors

    def status_counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for (provider, _), rec in self.runs.items():
            out[(provider, rec.status)] = out.get((provider, rec.status), 0) + 1
        return out

    def write(
        self,
        provider: str,
        snapshots: Sequence[RunSnapshot],
        now: float,
        monitor_id: str | None,
        retired: Sequence[str] = (),
    ) -> None:
        """The rows for what a poll saw; the caller holds the transaction."""
        db = self.db
        if retired:
            db.executemany(
                "UPDATE runs SET done = 1, updated_at = ? WHERE provider = ? AND run_id = ?",
                [(now, provider, r) for r in retired],
            )
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

    def apply(
        self,
        provider: str,
        snapshots: Sequence[RunSnapshot],
        monitor_id: str | None,
        retired: Sequence[str] = (),
    ) -> None:
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
            self._index(provider, s.run_id, prev)
        for run_id in retired:
            rec = self.runs.get((provider, run_id))
            if rec is not None:
                rec.done = True
                self._index(provider, run_id, rec)

    def _index(self, provider: str, run_id: str, rec: RunRecord) -> None:
        key = (provider, rec.monitor_id)
        if rec.done:
            left = self._unfinished.get(key)
            if left is not None:
                left.discard(run_id)
                if not left:
                    del self._unfinished[key]
        else:
            self._unfinished.setdefault(key, set()).add(run_id)

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
