"""A channel's last send times in PostgreSQL (table ``runwatch_send_windows``), one budget for every
instance sending from the database; see :class:`runwatch.store.interfaces.SendLog`.

One row per rate-limited channel holding its last sends (at most the rate's ``count``). A start is one
``UPDATE`` whose condition counts the row's sends in the window: an update locks the row, and when two
instances decide at once the second waits, then tests its condition again on the row the first wrote
(PostgreSQL re-checks an updated row under ``READ COMMITTED``), so it sees the first's send. One
statement, one round trip per send. A channel's first start makes its row.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from runwatch.store.postgres.connect import Target, failures

_READ = "SELECT sends FROM runwatch_send_windows WHERE channel = %(channel)s"
#: The window test is :func:`runwatch.store.send_window.in_window`'s, in SQL; the row keeps the newest
#: ``count`` times.
_START = """
UPDATE runwatch_send_windows w SET sends = ARRAY(
    SELECT t FROM (
        SELECT t FROM unnest(w.sends || %(now)s::float8) AS t ORDER BY t DESC LIMIT %(count)s
    ) newest ORDER BY t)
WHERE channel = %(channel)s
  AND (SELECT count(*) FROM unnest(w.sends) AS t WHERE %(now)s < t + %(period)s) < %(count)s
"""
_MAKE = (
    "INSERT INTO runwatch_send_windows (channel, sends) VALUES (%(channel)s, ARRAY[%(now)s::float8])"
    " ON CONFLICT DO NOTHING"
)


class PgSends:
    """The ``runwatch_send_windows`` table."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], target: Target) -> None:
        self.pool = pool
        self.target = target

    def recent(self, channel: str) -> list[float]:
        with failures(self.target), self.pool.connection() as conn:
            row = conn.execute(_READ, {"channel": channel}).fetchone()
        return [] if row is None else sorted(float(t) for t in row[0])

    def start(self, channel: str, now: float, count: int, period: float) -> bool:
        args = {"channel": channel, "now": now, "count": count, "period": period}
        with failures(self.target), self.pool.connection() as conn:
            for _ in range(2):  # a second round only when another sender made the row meanwhile
                if conn.execute(_START, args).rowcount == 1:
                    return True
                if conn.execute(_READ, args).fetchone() is not None:
                    return False  # the window is full
                if conn.execute(_MAKE, args).rowcount == 1:
                    return True
        return False
