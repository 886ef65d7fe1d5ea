"""A channel's last send times in PostgreSQL (table ``runwatch_send_windows``), one budget for every
instance sending from the database; see :class:`runwatch.store.interfaces.SendLog`.

One row per rate-limited channel holding its last sends (at most the rate's ``count``). A start locks
that row (``SELECT ... FOR UPDATE``), so two instances deciding at once take turns: the second sees
the first's send. A channel's first start makes its row (``ON CONFLICT DO NOTHING``, then locks it).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from runwatch.store.postgres.connect import Target, failures
from runwatch.store.send_window import admit

_READ = "SELECT sends FROM runwatch_send_windows WHERE channel = %s"
_LOCK = _READ + " FOR UPDATE"
_MAKE = "INSERT INTO runwatch_send_windows (channel, sends) VALUES (%s, '{}') ON CONFLICT DO NOTHING"
_WRITE = "UPDATE runwatch_send_windows SET sends = %s WHERE channel = %s"


class PgSends:
    """The ``runwatch_send_windows`` table."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], target: Target) -> None:
        self.pool = pool
        self.target = target

    def recent(self, channel: str) -> list[float]:
        with failures(self.target), self.pool.connection() as conn:
            row = conn.execute(_READ, (channel,)).fetchone()
        return [] if row is None else sorted(float(t) for t in row[0])

    def start(self, channel: str, now: float, count: int, period: float) -> bool:
        with failures(self.target), self.pool.connection() as conn, conn.transaction():
            row = conn.execute(_LOCK, (channel,)).fetchone()
            if row is None:
                conn.execute(_MAKE, (channel,))
                row = conn.execute(_LOCK, (channel,)).fetchone()
            assert row is not None
            kept = admit([float(t) for t in row[0]], now, count, period)
            if kept is None:
                return False
            conn.execute(_WRITE, (kept, channel))
        return True
