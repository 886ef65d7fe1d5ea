"""Open alerts in PostgreSQL; in memory the same copy the SQLite store keeps, indexed by monitor.

The memory and how a record changes it are the SQLite store's (inherited); only the SQL is this
module's. It is right while this instance is the one writer of open alerts (the poller that holds the
lease): an instance that takes over a provider reads its alerts again first (``reload(provider)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from runwatch.store.alert_state import AlertUpdate
from runwatch.store.postgres.connect import Loaded, only
from runwatch.store.sqlite.alerts import SqliteAlerts

_LOAD = "SELECT key, data FROM runwatch_alerts{only}"
_DROP = "DELETE FROM runwatch_alerts WHERE key = %s"
_SET = (
    "INSERT INTO runwatch_alerts (key, rule, provider, monitor_id, data) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (key) DO UPDATE SET rule = excluded.rule, provider = excluded.provider,"
    " monitor_id = excluded.monitor_id, data = excluded.data"
)


class PgAlerts(Loaded, SqliteAlerts):
    """Alerts pending or firing; written only inside a record's transaction, applied after it."""

    def load(self, conn: psycopg.Connection[Any], provider: str | None) -> None:
        """Add the open alerts of one provider's groups (None: all) to memory."""
        cond, args = only(provider, first=True)
        self.remember(conn.execute(_LOAD.format(only=cond), args).fetchall())

    def write(self, updates: Sequence[AlertUpdate]) -> None:
        raise TypeError("PgAlerts writes with save(), inside the state's transaction")

    def save(self, cur: psycopg.Cursor[Any], updates: Sequence[AlertUpdate]) -> None:
        """Inside the caller's transaction."""
        for u in updates:
            if u.alert is None:
                cur.execute(_DROP, (u.key,))
            else:
                g = u.alert.group
                data = u.alert.to_json()
                cur.execute(_SET, (u.key, u.alert.rule, g.get("provider", ""), g.get("monitor_id", ""), data))
