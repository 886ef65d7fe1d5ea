"""Silences added with ``runwatch silence add``, in PostgreSQL: shared by every instance and the
command (the daemon re-reads them every few seconds; nothing is kept here)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from runwatch.store.interfaces import Silence
from runwatch.store.postgres.connect import Target, failures

_ADD = (
    "INSERT INTO runwatch_silences (id, matchers, starts_at, ends_at, comment, created_by)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
_EXPIRE = "UPDATE runwatch_silences SET expired_at = %s WHERE id = %s AND expired_at IS NULL"
_ALL = (
    "SELECT id, matchers, starts_at, ends_at, comment, created_by, expired_at FROM runwatch_silences"
    " ORDER BY starts_at"
)


class PgSilences:
    """The CLI's silences (table ``runwatch_silences``)."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], target: Target) -> None:
        self.pool = pool
        self.target = target

    def close(self) -> None:
        """The pool belongs to the state, which closes it."""

    def add(
        self, matchers: Mapping[str, str], starts_at: float, ends_at: float, comment: str, created_by: str
    ) -> Silence:
        silence = Silence(
            f"sil_{secrets.token_hex(6)}", dict(matchers), starts_at, ends_at, comment, created_by
        )
        with failures(self.target), self.pool.connection() as conn:
            conn.execute(_ADD, (silence.id, json.dumps(silence.matchers), starts_at, ends_at, comment,
                                created_by))  # fmt: skip
        return silence

    def expire(self, silence_id: str, now: float) -> bool:
        with failures(self.target), self.pool.connection() as conn:
            return conn.execute(_EXPIRE, (now, silence_id)).rowcount > 0

    def all(self) -> list[Silence]:
        with failures(self.target), self.pool.connection() as conn:
            rows = conn.execute(_ALL).fetchall()
        return [
            Silence(
                str(i), json.loads(m), float(s), float(e), str(c), str(b), None if x is None else float(x)
            )
            for i, m, s, e, c, b, x in rows
        ]
