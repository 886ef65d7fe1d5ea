"""Monitors as their providers' listings last showed them, in PostgreSQL, with the SQLite store's copy
in memory (inherited; only the SQL is this module's).

The copy is right while this instance is the one writer of its providers' monitors (the poller that
holds their lease): an instance that takes over a provider reads its monitors again first
(``reload(provider)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from runwatch.store.interfaces import MonitorRecord
from runwatch.store.postgres.connect import Loaded, failures, only
from runwatch.store.sqlite.monitors import BASELINE_KEY, SqliteMonitors, row

_LOAD = (
    "SELECT provider, monitor_id, status, raw, due, next_due, last_started, missed_due, missed_grace"
    " FROM runwatch_monitor_state{only}"
)
_LOAD_BASELINED = "SELECT key FROM runwatch_meta WHERE starts_with(key, 'monitors_baseline_done:')"
_LOAD_BASELINED_ONE = "SELECT key FROM runwatch_meta WHERE key = %s"
_SET = (
    "INSERT INTO runwatch_monitor_state (provider, monitor_id, status, raw, due, next_due, last_started,"
    " missed_due, missed_grace, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (provider, monitor_id) DO UPDATE SET status = excluded.status, raw = excluded.raw,"
    " due = excluded.due, next_due = excluded.next_due, last_started = excluded.last_started,"
    " missed_due = excluded.missed_due, missed_grace = excluded.missed_grace,"
    " updated_at = excluded.updated_at"
)
_SET_BASELINED = (
    "INSERT INTO runwatch_meta (key, value) VALUES (%s, '1') ON CONFLICT (key) DO UPDATE SET value = '1'"
)
_DELETED_BEFORE = (
    "DELETE FROM runwatch_monitor_state WHERE status = 'deleted' AND updated_at < %s"
    " RETURNING provider, monitor_id"
)


class PgMonitors(Loaded, SqliteMonitors):
    """The ``runwatch_monitor_state`` table and its in-memory copy, keyed by (provider, monitor_id)."""

    def load(self, conn: psycopg.Connection[Any], provider: str | None) -> None:
        """Add one provider's monitors (None: all) to memory, and whether its first listing was
        recorded."""
        cond, args = only(provider, first=True)
        baselined = (
            conn.execute(_LOAD_BASELINED)
            if provider is None
            else conn.execute(_LOAD_BASELINED_ONE, (BASELINE_KEY.format(provider=provider),))
        )
        self.remember(conn.execute(_LOAD.format(only=cond), args).fetchall(), baselined.fetchall())

    def write(self, updates: Sequence[MonitorRecord], now: float, baselined: str | None) -> None:
        raise TypeError("PgMonitors writes with save(), inside the state's transaction")

    def save(
        self, cur: psycopg.Cursor[Any], updates: Sequence[MonitorRecord], now: float, baselined: str | None
    ) -> None:
        """Inside the caller's transaction."""
        if updates:
            cur.executemany(_SET, [row(r, now) for r in updates])
        if baselined is not None and baselined not in self.baselined:
            cur.execute(_SET_BASELINED, (BASELINE_KEY.format(provider=baselined),))

    def purge_deleted(self, before: float) -> int:
        """Forget monitors recorded as deleted before ``before``; returns how many."""
        with failures(self.target), self.pool.connection() as conn:
            gone = conn.execute(_DELETED_BEFORE, (before,)).fetchall()
        for provider, monitor_id in gone:
            self._records.pop((str(provider), str(monitor_id)), None)
        return len(gone)
