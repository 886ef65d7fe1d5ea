"""A channel's last send times in PostgreSQL (table ``runwatch_send_windows``), one budget for every
instance sending from the database; see :class:`runwatch.store.interfaces.SendLog` and
:class:`runwatch.store.send_window.Ring`.

One row per rate-limited channel: its last sends (at most the rate's ``count``) as a ring, and the index
of the oldest. A start is one ``UPDATE`` that writes one slot, on condition that the oldest slot is a
period old: an update locks the row, and when two instances decide at once the second waits, then
tests its condition again on the row the first wrote (PostgreSQL re-checks an updated row under
``READ COMMITTED``), so it sees the first's send. One statement per send, whatever the rate. A
channel's first start makes its row; a ring whose shape no longer fits the rate (a reload changed
``count``) is reshaped under the row's lock first.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from runwatch.store.postgres.connect import Target, failures
from runwatch.store.send_window import Ring

_READ = "SELECT sends, head FROM runwatch_send_windows WHERE channel = %(channel)s"
#: :meth:`Ring.admit` in SQL (arrays count from 1 here): append while the ring is not full, else
#: overwrite the oldest slot if it is a period old.
_START = """
UPDATE runwatch_send_windows SET
    sends[CASE WHEN cardinality(sends) < %(count)s THEN cardinality(sends) + 1 ELSE head + 1 END] = %(now)s,
    head = CASE WHEN cardinality(sends) < %(count)s THEN 0 ELSE (head + 1) %% %(count)s END
WHERE channel = %(channel)s AND (
    cardinality(sends) < %(count)s AND head = 0
    OR cardinality(sends) = %(count)s AND head < %(count)s AND %(now)s >= sends[head + 1] + %(period)s)
"""
_MAKE = (
    "INSERT INTO runwatch_send_windows (channel, sends, head) VALUES (%(channel)s, ARRAY[%(now)s::float8], 0)"
    " ON CONFLICT DO NOTHING"
)
_RESHAPE = "UPDATE runwatch_send_windows SET sends = %(sends)s, head = 0 WHERE channel = %(channel)s"


class PgSends:
    """The ``runwatch_send_windows`` table."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], target: Target) -> None:
        self.pool = pool
        self.target = target

    def recent(self, channel: str) -> list[float]:
        with failures(self.target), self.pool.connection() as conn:
            row = conn.execute(_READ, {"channel": channel}).fetchone()
        return [] if row is None else Ring([float(t) for t in row[0]], int(row[1])).ordered()

    def start(self, channel: str, now: float, count: int, period: float) -> bool:
        args = {"channel": channel, "now": now, "count": count, "period": period}
        with failures(self.target), self.pool.connection() as conn:
            for _ in range(3):  # again only after making or reshaping the row
                if conn.execute(_START, args).rowcount == 1:
                    return True
                row = conn.execute(_READ, args).fetchone()
                if row is None:
                    if conn.execute(_MAKE, args).rowcount == 1:
                        return True
                    continue  # another sender made it meanwhile
                if Ring(list(row[0]), int(row[1])).fits(count):
                    return False  # the window is full
                with conn.transaction():
                    row = conn.execute(_READ + " FOR UPDATE", args).fetchone()
                    ring = Ring([float(t) for t in row[0]], int(row[1])) if row else Ring([])
                    if row is not None and not ring.fits(count):
                        conn.execute(_RESHAPE, {"channel": channel, "sends": ring.reshaped(count).sends})
        return False
