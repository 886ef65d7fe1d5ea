"""A channel's last send times in SQLite (table ``send_windows``), for its ``rate``; see
:class:`runwatch.store.interfaces.SendLog` and :class:`runwatch.store.send_window.Ring`.

One row per rate-limited channel: its last sends (at most the rate's ``count``, packed as 8-byte
floats) and the index of the oldest. It uses the outbox's connection and lock, the delivery threads'
own; :meth:`SqliteSends.start` reads and writes the row under that lock (one autocommit write), and
the state directory's lock keeps other processes out, so no other start comes between the two.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array

from runwatch.store.send_window import Ring


def pack(times: list[float]) -> bytes:
    return array("d", times).tobytes()


def unpack(blob: bytes) -> list[float]:
    return array("d", blob).tolist()


class SqliteSends:
    """The ``send_windows`` table of the state file."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self.db = db
        self.lock = lock

    def _read(self, channel: str) -> Ring:
        row = self.db.execute("SELECT sends, head FROM send_windows WHERE channel = ?", (channel,)).fetchone()
        return Ring([]) if row is None else Ring(unpack(row[0]), int(row[1]))

    def recent(self, channel: str) -> list[float]:
        with self.lock:
            return self._read(channel).ordered()

    def start(self, channel: str, now: float, count: int, period: float) -> bool:
        with self.lock:
            ring = self._read(channel)
            if not ring.admit(now, count, period):
                return False
            self.db.execute(
                "INSERT INTO send_windows (channel, sends, head) VALUES (?, ?, ?) ON CONFLICT (channel)"
                " DO UPDATE SET sends = excluded.sends, head = excluded.head",
                (channel, pack(ring.sends), ring.head),
            )
        return True
