"""Run state in PostgreSQL; in memory the same as the SQLite store keeps (what a poll needs).

The memory (unfinished runs with the events already reported, a hash per finished run, counts by
status, monitors seen, catch-up cursors) and how a poll changes it are the SQLite store's own
(:class:`~runwatch.store.sqlite.runs.SqliteRuns`, inherited); only the SQL is this module's. That memory
is right while this instance is the one writer of its providers' runs (the poller that holds their
lease): an instance that takes over a provider from another reads its runs again first
(``reload(provider)``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from runwatch.model import RunSnapshot
from runwatch.store.interfaces import CatchUp, RunRecord, StuckMark
from runwatch.store.postgres.connect import Loaded, failures, only
from runwatch.store.sqlite.runs import SqliteRuns, stuck_rows

_LOAD_FINISHED = "SELECT provider, run_id FROM runwatch_runs WHERE done{only}"
_LOAD_COUNTS = (
    "SELECT provider, status, count(*) FROM runwatch_runs WHERE true{only} GROUP BY provider, status"
)
_LOAD_UNFINISHED = (
    "SELECT provider, run_id, monitor_id, status, coalesce(created_at, updated_at) FROM runwatch_runs"
    " WHERE NOT done{only}"
)
_LOAD_EVENTS = (
    "SELECT e.provider, e.run_id, e.event_id FROM runwatch_run_events e"
    " JOIN runwatch_runs r ON r.provider = e.provider AND r.run_id = e.run_id WHERE NOT r.done{only}"
)
_LOAD_STUCK = (
    "SELECT s.provider, s.run_id, s.stuck_after FROM runwatch_run_stuck s"
    " JOIN runwatch_runs r ON r.provider = s.provider AND r.run_id = s.run_id WHERE NOT r.done{only}"
)
_LOAD_MONITORS = "SELECT provider, monitor_id FROM runwatch_monitors WHERE true{only}"
_LOAD_CATCH_UP = "SELECT provider, monitor_id, cursors, baseline FROM runwatch_catch_up WHERE true{only}"
_RUN = "SELECT monitor_id, status FROM runwatch_runs WHERE provider = %s AND run_id = %s"
_LISTED = (
    "SELECT monitor_id FROM runwatch_monitor_state WHERE provider = %s AND coalesce(status, '') <> 'deleted'"
)
_SET_CATCH_UP = (
    "INSERT INTO runwatch_catch_up (provider, monitor_id, cursors, baseline) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (provider, monitor_id) DO UPDATE SET cursors = excluded.cursors,"
    " baseline = excluded.baseline"
)
_DROP_CATCH_UP = "DELETE FROM runwatch_catch_up WHERE provider = %s AND monitor_id = %s"
_RETIRE = "UPDATE runwatch_runs SET done = true, updated_at = %s WHERE provider = %s AND run_id = %s"
_SEEN_MONITOR = (
    "INSERT INTO runwatch_monitors (provider, monitor_id, first_seen) VALUES (%s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
_SET_RUN = (
    "INSERT INTO runwatch_runs (provider, run_id, monitor_id, status, done, updated_at, created_at)"
    " VALUES (%s, %s, %s, %s, %s <> 0, %s, %s) ON CONFLICT (provider, run_id) DO UPDATE SET"
    " monitor_id = excluded.monitor_id, status = excluded.status, done = excluded.done,"
    " updated_at = excluded.updated_at, created_at = excluded.created_at"
)
_ADD_EVENT = (
    "INSERT INTO runwatch_run_events (provider, run_id, event_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
)
_ADD_STUCK = (
    "INSERT INTO runwatch_run_stuck (provider, run_id, stuck_after) VALUES (%s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
_AGED_OUT = "SELECT provider, run_id, status FROM runwatch_runs WHERE done AND updated_at < %s"
_DROP_EVENTS = "DELETE FROM runwatch_run_events WHERE provider = %s AND run_id = %s"
_DROP_STUCK = "DELETE FROM runwatch_run_stuck WHERE provider = %s AND run_id = %s"
_DROP_RUN = "DELETE FROM runwatch_runs WHERE provider = %s AND run_id = %s"


class PgRuns(Loaded, SqliteRuns):
    """Runs, monitors seen and events reported, in PostgreSQL; written only inside a record."""

    def load(self, conn: psycopg.Connection[Any], provider: str | None) -> None:
        """Add one provider's runs (None: all) to memory: at start, and when this instance takes over
        polling it."""
        cond, args = only(provider)
        joined, _ = only(provider, "r.provider")
        self.remember(
            conn.execute(_LOAD_FINISHED.format(only=cond), args).fetchall(),
            conn.execute(_LOAD_COUNTS.format(only=cond), args).fetchall(),
            conn.execute(_LOAD_UNFINISHED.format(only=cond), args).fetchall(),
            conn.execute(_LOAD_EVENTS.format(only=joined), args).fetchall(),
            conn.execute(_LOAD_STUCK.format(only=joined), args).fetchall(),
            conn.execute(_LOAD_MONITORS.format(only=cond), args).fetchall(),
            conn.execute(_LOAD_CATCH_UP.format(only=cond), args).fetchall(),
        )

    def run(self, provider: str, run_id: str) -> RunRecord | None:
        """The record of a run; a finished one is read from the database (without its event ids)."""
        rec = self.runs.get((provider, run_id))
        if rec is not None or self.is_done(provider, run_id) is None:
            return rec
        with failures(self.target), self.pool.connection() as conn:
            row = conn.execute(_RUN, (provider, run_id)).fetchone()
        return None if row is None else RunRecord(str(row[0]), str(row[1]), True)

    def listed_monitors(self, provider: str) -> list[str]:
        with failures(self.target), self.pool.connection() as conn:
            return [str(r[0]) for r in conn.execute(_LISTED, (provider,))]

    def write(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("PgRuns writes with save(), inside the state's transaction")

    def save(
        self,
        cur: psycopg.Cursor[Any],
        provider: str,
        snapshots: Sequence[RunSnapshot],
        now: float,
        monitor_id: str | None,
        retired: Sequence[str],
        catch_up: CatchUp | None,
    ) -> None:
        """The rows for what a poll saw, in the caller's transaction."""
        if catch_up is not None and self.catch_up_changes(provider, monitor_id, catch_up):
            if catch_up.cursors:
                cursors = json.dumps(catch_up.cursors)
                cur.execute(_SET_CATCH_UP, (provider, monitor_id, cursors, catch_up.baseline))
            else:
                cur.execute(_DROP_CATCH_UP, (provider, monitor_id))
        if retired:
            cur.executemany(_RETIRE, [(now, provider, r) for r in retired])
        if monitor_id is not None and (provider, monitor_id) not in self.monitors:
            cur.execute(_SEEN_MONITOR, (provider, monitor_id, now))
        run_rows, event_rows = self.rows(provider, snapshots, now)
        if run_rows:
            cur.executemany(_SET_RUN, run_rows)
        if event_rows:
            cur.executemany(_ADD_EVENT, event_rows)

    def mark_stuck(self, marks: Sequence[StuckMark]) -> None:
        raise TypeError("PgRuns writes with save_stuck(), inside the state's transaction")

    def save_stuck(self, cur: psycopg.Cursor[Any], marks: Sequence[StuckMark]) -> None:
        """The rows for the stuck thresholds runs crossed, in the caller's transaction."""
        if marks:
            cur.executemany(_ADD_STUCK, stuck_rows(marks))

    def purge_finished(self, finished_before: float) -> int:
        """Forget runs that finished before ``finished_before`` (and their events); returns how many."""
        with failures(self.target), self.pool.connection() as conn:
            gone = conn.execute(_AGED_OUT, (finished_before,)).fetchall()
            if not gone:
                return 0
            keys = [(p, r) for p, r, _ in gone]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_DROP_EVENTS, keys)
                cur.executemany(_DROP_STUCK, keys)
                cur.executemany(_DROP_RUN, keys)
        self.forget(gone)
        return len(gone)
