"""The state in one PostgreSQL database: every part on one connection pool, one transaction to record.

:class:`PostgresState` is what the daemon opens: it connects, creates or migrates the schema (once,
whoever starts first), loads what the parts keep in memory and opens the pool. :class:`PostgresShared`
is what the operator's commands open (never creates a state). Several instances may open one database:
there is no lock on it (a poller's writes carry a :class:`~runwatch.store.interfaces.Fence` instead);
the daemon still holds its ``state_dir``'s lock, so ``runwatch reload`` finds its pid there.

What is kept in memory (runs a poll needs, open alerts, monitors) is right while this instance is the
one writer of it, which the leadership gives: an instance that starts polling a provider after another
reads that provider's part again (``reload(provider)`` of the runs, alerts and monitors). The outbox,
silences and meta keys are read from the database each time.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from runwatch.store.alert_state import OpenAlert
from runwatch.store.interfaces import Fence
from runwatch.store.postgres.alerts import PgAlerts
from runwatch.store.postgres.connect import Target, connect, failures, open_pool
from runwatch.store.postgres.fence import fenced
from runwatch.store.postgres.hints import PgHints
from runwatch.store.postgres.monitors import PgMonitors
from runwatch.store.postgres.outbox import PgOutbox
from runwatch.store.postgres.runs import PgRuns
from runwatch.store.postgres.schema import migrate, require_current, too_new, version
from runwatch.store.postgres.sends import PgSends
from runwatch.store.postgres.silences import PgSilences
from runwatch.store.recording import Recording, Write
from runwatch.store.sqlite.lock import StateLock

_GET_META = "SELECT value FROM runwatch_meta WHERE key = %s"
_SET_META = (
    "INSERT INTO runwatch_meta (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
#: The row made by this statement, else the one it met (a statement sees its own insert only through
#: RETURNING, and the conflicting row only through a second read).
_FIRST_META = (
    "WITH made AS (INSERT INTO runwatch_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING"
    " RETURNING value) SELECT value FROM made UNION ALL SELECT value FROM runwatch_meta WHERE key = %s"
)
_OPEN_ALERTS = "SELECT key, data FROM runwatch_alerts"


class PostgresState(Recording):
    """The daemon's state in PostgreSQL: runs, alerts, monitors, outbox, silences and meta."""

    runs: PgRuns
    alerts: PgAlerts
    monitors: PgMonitors

    def __init__(self, target: Target, *, lock: StateLock | None = None) -> None:
        self.target = target
        self.lock = lock
        try:
            with connect(target) as conn, failures(target):
                migrate(conn, target.where)
            self.pool = open_pool(target)
        except BaseException:
            self._unlock()
            raise
        try:
            self.runs = PgRuns(self.pool, target)
            self.alerts = PgAlerts(self.pool, target)
            self.monitors = PgMonitors(self.pool, target)
            self.hints = PgHints(self.pool, target)
            self.outbox = PgOutbox(self.pool, target)
            self.silences = PgSilences(self.pool, target)
            self.sends = PgSends(self.pool, target)
        except BaseException:
            self.close()
            raise

    @property
    def where(self) -> str:
        return self.target.where

    def close(self) -> None:
        self.pool.close()
        self._unlock()

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # -- meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        return get_meta(self.pool, self.target, key)

    def set_meta(self, key: str, value: str, *, fence: Fence | None = None) -> None:
        with failures(self.target), self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            fenced(cur, fence)
            cur.execute(_SET_META, (key, value))

    def first_meta(self, key: str, value: str) -> str:
        with failures(self.target), self.pool.connection() as conn:
            row = conn.execute(_FIRST_META, (key, value, key)).fetchone()
        assert row is not None
        return str(row[0])

    # -- the recorder (see runwatch.store.recording) --------------------------------------------------
    def write(self, w: Write, fence: Fence | None) -> int:
        with failures(self.target), self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            fenced(cur, fence)
            self.runs.save(cur, w.provider, w.snapshots, w.now, w.monitor_id, w.retired, w.catch_up)
            new_rows = PgOutbox.enqueue(cur, w.notifications, w.now)
            self.alerts.save(cur, w.alert_updates)
            self.monitors.save(cur, w.monitor_updates, w.now, w.baselined)
            self.runs.save_stuck(cur, w.stuck)
            PgHints.save_consumed(cur, w.hints, w.now)
        return new_rows


class PostgresShared:
    """The outbox, silences and meta keys of an existing PostgreSQL state, for the operator's commands."""

    def __init__(self, target: Target) -> None:
        self.target = target
        with connect(target) as conn, failures(target):
            require_current(conn, target.where)
        self.pool = open_pool(target, size=2)
        self.outbox = PgOutbox(self.pool, target)
        self.silences = PgSilences(self.pool, target)

    @property
    def where(self) -> str:
        return self.target.where

    def get_meta(self, key: str) -> str | None:
        return get_meta(self.pool, self.target, key)

    def open_alerts(self) -> list[OpenAlert]:
        with failures(self.target), self.pool.connection() as conn:
            return [OpenAlert.from_json(str(k), str(d)) for k, d in conn.execute(_OPEN_ALERTS)]

    def close(self) -> None:
        self.pool.close()


def probe(target: Target) -> int:
    """Connect and read the schema version the database holds (0: none yet), without changing it; a
    StateError line if it cannot be used (unreachable, login refused, missing, newer schema)."""
    with connect(target) as conn, failures(target):
        found = version(conn)
    too_new(found, target.where)
    return found


def get_meta(pool: ConnectionPool[psycopg.Connection[Any]], target: Target, key: str) -> str | None:
    with failures(target), pool.connection() as conn:
        row = conn.execute(_GET_META, (key,)).fetchone()
    return None if row is None else str(row[0])
