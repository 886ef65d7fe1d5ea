"""Leases and heartbeats in the SQLite state file: one instance, always the leader.

The state directory's lock already makes the daemon the only writer, so :meth:`SqliteLeases.acquire`
always succeeds; what is kept is the token (it grows with every acquisition, across restarts too, so
a token is never given twice) and when and by whom it was taken, for ``runwatch status``. Two tiny
tables (``leases``, ``instances``) created on first use, like the silences: an older runwatch ignores
them. A connection of its own, used from the leadership loop's worker thread and by ``runwatch
status`` beside a running daemon.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path

from runwatch.clock import Clock, SystemClock
from runwatch.store.leases import InstanceRecord, Lease
from runwatch.store.sqlite.database import connect

_TABLES = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL,
    acquired_at REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    name TEXT PRIMARY KEY, last_seen REAL NOT NULL, digest TEXT NOT NULL, polls TEXT NOT NULL
);
"""


class SqliteLeases:
    """:class:`~runwatch.store.leases.Leases` and :class:`~runwatch.store.leases.Instances` of one
    state file; times come from ``clock`` (the daemon's)."""

    shared = False

    def __init__(self, path: Path, clock: Clock | None = None, *, create: bool = True) -> None:
        self.db = connect(path, create=False)
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        if create:
            self.db.executescript(_TABLES)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _has_tables(self) -> bool:
        """A state no daemon of this version has run on yet has none (``status`` reads it as empty)."""
        row = self.db.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('leases', 'instances')")
        return int(row.fetchone()[0]) == 2

    # -- leases ---------------------------------------------------------------------------------------
    def acquire(self, name: str, holder: str, ttl: float) -> int | None:
        now = self.clock.now()
        with self._lock:
            row = self.db.execute(
                "INSERT INTO leases (name, holder, token, acquired_at, expires_at) VALUES (?, ?, 1, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = leases.token + 1,"
                " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at RETURNING token",
                (name, holder, now, now + ttl),
            ).fetchone()
        return int(row[0])

    def renew(self, name: str, holder: str, token: int, ttl: float) -> bool:
        with self._lock:
            cur = self.db.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND token = ?",
                (self.clock.now() + ttl, name, holder, token),
            )
        return cur.rowcount == 1

    def release(self, name: str, holder: str, token: int) -> None:
        with self._lock:
            self.db.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND token = ?",
                (self.clock.now(), name, holder, token),
            )

    def leases(self) -> list[Lease]:
        now = self.clock.now()
        with self._lock:
            if not self._has_tables():
                return []
            rows = self.db.execute(
                "SELECT name, holder, token, acquired_at, expires_at FROM leases ORDER BY name"
            ).fetchall()
        return [Lease(str(n), str(h), int(t), float(a), float(e), float(e) > now) for n, h, t, a, e in rows]

    # -- instances ------------------------------------------------------------------------------------
    def heartbeat(self, name: str, digest: str, polls: Mapping[str, float]) -> None:
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO instances (name, last_seen, digest, polls) VALUES (?, ?, ?, ?)",
                (name, self.clock.now(), digest, json.dumps(dict(polls), sort_keys=True)),
            )

    def instances(self) -> list[InstanceRecord]:
        now = self.clock.now()
        with self._lock:
            if not self._has_tables():
                return []
            rows = self.db.execute(
                "SELECT name, last_seen, digest, polls FROM instances ORDER BY last_seen DESC"
            ).fetchall()
        return [
            InstanceRecord(str(n), float(s), str(d), max(0.0, now - float(s)), _polls(p))
            for n, s, d, p in rows
        ]


def _polls(text: object) -> dict[str, float]:
    try:
        data = json.loads(str(text))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}
