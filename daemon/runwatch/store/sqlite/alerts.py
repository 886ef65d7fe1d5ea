"""Open alerts (the lifecycle's state) in SQLite, with an in-memory copy indexed by monitor (shared with
the PostgreSQL store, which has only its own SQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from runwatch.store.alert_state import AlertUpdate, OpenAlert

_TABLE = """
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY, rule TEXT NOT NULL, provider TEXT NOT NULL, monitor_id TEXT NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID
"""


class SqliteAlerts:
    """Alerts pending or firing; written only inside a recorder's transaction, applied after it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute(_TABLE)
        self.empty()
        self._read(None)

    def empty(self) -> None:
        """Memory with nothing in it (before the first read)."""
        self.open: dict[str, OpenAlert] = {}
        self._by_monitor: dict[tuple[str, str], set[str]] = {}

    def reload(self, provider: str) -> None:
        """Read the alerts of one provider's groups afresh (another instance led it meanwhile)."""
        for key in [k for k, a in self.open.items() if a.group.get("provider", "") == provider]:
            self._drop(key)
        self._read(provider)

    def _read(self, provider: str | None) -> None:
        """The open alerts of one provider's groups (or all), from the file."""
        if provider is None:
            self.remember(self.db.execute("SELECT key, data FROM alerts"))
        else:
            self.remember(self.db.execute("SELECT key, data FROM alerts WHERE provider = ?", (provider,)))

    def remember(self, rows: Iterable[Any]) -> None:
        """Add to memory the store's rows (key, data as JSON), whatever the backend that read them."""
        for key, data in rows:
            self._put(OpenAlert.from_json(str(key), str(data)))

    def _put(self, alert: OpenAlert) -> None:
        self.open[alert.key] = alert
        where = (alert.group.get("provider", ""), alert.group.get("monitor_id", ""))
        self._by_monitor.setdefault(where, set()).add(alert.key)

    def _drop(self, key: str) -> None:
        alert = self.open.pop(key, None)
        if alert is None:
            return
        where = (alert.group.get("provider", ""), alert.group.get("monitor_id", ""))
        keys = self._by_monitor.get(where)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_monitor[where]

    def get(self, key: str) -> OpenAlert | None:
        return self.open.get(key)

    def for_monitor(self, provider: str, monitor_id: str) -> list[OpenAlert]:
        """Alerts whose group names this monitor, and those grouped more widely (no monitor_id)."""
        keys = self._by_monitor.get((provider, monitor_id), set()) | self._by_monitor.get(
            (provider, ""), set()
        )
        return [self.open[k] for k in keys]

    def firing(self) -> int:
        return sum(1 for a in self.open.values() if a.firing)

    def write(self, updates: Sequence[AlertUpdate]) -> None:
        """Inside the caller's transaction."""
        for u in updates:
            if u.alert is None:
                self.db.execute("DELETE FROM alerts WHERE key = ?", (u.key,))
            else:
                g = u.alert.group
                self.db.execute(
                    "INSERT OR REPLACE INTO alerts (key, rule, provider, monitor_id, data)"
                    " VALUES (?,?,?,?,?)",
                    (u.key, u.alert.rule, g.get("provider", ""), g.get("monitor_id", ""), u.alert.to_json()),
                )

    def apply(self, updates: Sequence[AlertUpdate]) -> None:
        """After the commit."""
        for u in updates:
            self._drop(u.key)
            if u.alert is not None:
                self._put(u.alert)
