"""Pushes waiting for their read, in PostgreSQL (table ``runwatch_push_hints``), shared by every
instance: a push that reaches a standby is recorded here and read by the provider's leader. Memory and
consuming are :class:`runwatch.store.hints.PendingHints`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from runwatch.store.hints import PendingHints
from runwatch.store.interfaces import Hint
from runwatch.store.postgres.connect import Target, failures

_WAITING = (
    "SELECT provider, event_id, monitor_id, run_id, kind, received_at FROM runwatch_push_hints"
    " WHERE consumed_at IS NULL{only} ORDER BY received_at"
)
_INSERT = (
    "INSERT INTO runwatch_push_hints (provider, event_id, monitor_id, run_id, kind, received_at)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (provider, event_id) {conflict}"
)
_RENEW = (
    "DO UPDATE SET received_at = excluded.received_at, monitor_id = excluded.monitor_id,"
    " run_id = excluded.run_id, kind = excluded.kind, consumed_at = NULL"
    " WHERE runwatch_push_hints.consumed_at IS NOT NULL"
)
_MARK = "UPDATE runwatch_push_hints SET consumed_at = %s WHERE provider = %s AND event_id = %s"


class PgHints(PendingHints):
    """The ``runwatch_push_hints`` table."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], target: Target) -> None:
        self.pool = pool
        self.target = target
        super().__init__(self._waiting(None))

    def _waiting(self, provider: str | None) -> list[Hint]:
        only, args = ("", ()) if provider is None else (" AND provider = %s", (provider,))
        with failures(self.target), self.pool.connection() as conn:
            rows = conn.execute(_WAITING.format(only=only), args).fetchall()
        return [Hint(str(p), str(e), str(m), str(r), str(k), float(at)) for p, e, m, r, k, at in rows]

    def reload_provider(self, provider: str) -> None:
        self.reload(provider, self._waiting(provider))

    def _insert(self, hint: Hint, renew: bool) -> bool:
        sql = _INSERT.format(conflict=_RENEW if renew else "DO NOTHING")
        args = (hint.provider, hint.event_id, hint.monitor_id, hint.run_id, hint.kind, hint.received_at)
        with failures(self.target), self.pool.connection() as conn:
            return conn.execute(sql, args).rowcount == 1

    def _mark(self, hints: Sequence[Hint], now: float) -> None:
        with failures(self.target), self.pool.connection() as conn, conn.transaction():
            self.save_consumed(conn.cursor(), hints, now)

    def purge(self, consumed_before: float) -> int:
        with failures(self.target), self.pool.connection() as conn:
            return conn.execute(
                "DELETE FROM runwatch_push_hints WHERE consumed_at < %s", (consumed_before,)
            ).rowcount

    @staticmethod
    def save_consumed(cur: psycopg.Cursor[Any], hints: Sequence[Hint], now: float) -> None:
        """The rows, in the record's own transaction."""
        if hints:
            cur.executemany(_MARK, [(now, h.provider, h.event_id) for h in hints])
