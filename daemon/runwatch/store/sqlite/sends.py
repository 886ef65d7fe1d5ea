"""A channel's last send times in SQLite (table ``send_windows``), for its ``rate``; see
:class:`runwatch.store.interfaces.SendLog`.

One row per rate-limited channel holding its last sends (a JSON list, at most the rate's ``count``):
small and bounded whatever the rate. It uses the outbox's connection and lock, the delivery threads'
own; :meth:`SqliteSends.start` reads and writes the row under that lock (one autocommit write).
"""

from __future__ import annotations

import sqlite3
import threading

import orjson

from runwatch.store.send_window import admit


class SqliteSends:
    """The ``send_windows`` table of the state file."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self.db = db
        self.lock = lock

    def _read(self, channel: str) -> list[float]:
        row = self.db.execute("SELECT sends FROM send_windows WHERE channel = ?", (channel,)).fetchone()
        return [] if row is None else [float(t) for t in orjson.loads(row[0])]

    def recent(self, channel: str) -> list[float]:
        with self.lock:
            return self._read(channel)

    def start(self, channel: str, now: float, count: int, period: float) -> bool:
        # Read and write under the lock every sender of this state takes (the state directory's lock
        # keeps other processes out): no other start comes between them.
        with self.lock:
            kept = admit(self._read(channel), now, count, period)
            if kept is None:
                return False
            self.db.execute(
                "INSERT INTO send_windows (channel, sends) VALUES (?, ?)"
                " ON CONFLICT (channel) DO UPDATE SET sends = excluded.sends",
                (channel, orjson.dumps(kept).decode()),
            )
        return True
