"""The outbox in PostgreSQL: the notification log every instance sends from.

A row is written in the transaction of the change that decided it (:meth:`PgOutbox.enqueue`, inside a
record). A sender claims due rows with ``SELECT ... FOR UPDATE SKIP LOCKED``: two senders, in one
instance or in two, never claim one row; a claim names its sender and runs out at ``claimed_until``
(``delivery.claim_timeout`` after it was taken, renewed while a long batch is sent), so the rows of an
instance that died go back to pending and another sends them. Claim times are on the senders' clocks:
keep the hosts' clocks in step (NTP); a skew shortens or lengthens a dead sender's claims by as much.

Nothing is kept in memory: every call is one short statement on a pooled connection, from the event
loop or a sending thread alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool

from runwatch.store.interfaces import Claimed, Fence, Notification, OutboxItem
from runwatch.store.postgres.connect import Target, failures
from runwatch.store.postgres.fence import fenced
from runwatch.store.sqlite.outbox import ERROR_LIMIT, claimed_rows

_ENQUEUE = (
    "INSERT INTO runwatch_notifications (id, channel, rule, severity, title, alert, detected_at, created_at,"
    " next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
_CLAIM = (
    "UPDATE runwatch_notifications SET claimed_by = %s, claimed_until = %s WHERE seq IN ("
    " SELECT seq FROM runwatch_notifications WHERE channel = %s AND state = 'pending'"
    " AND next_attempt_at <= %s AND (claimed_until IS NULL OR claimed_until < %s)"
    " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING seq, alert, attempts, created_at"
)
_RENEW = (
    "UPDATE runwatch_notifications SET claimed_until = %s"
    " WHERE seq = ANY(%s) AND claimed_by = %s AND state = 'pending' RETURNING seq"
)
_RELEASE = "UPDATE runwatch_notifications SET claimed_by = NULL, claimed_until = NULL WHERE seq = ANY(%s)"
_DELIVERED = (
    "UPDATE runwatch_notifications SET state = 'sent', finished_at = %s, attempts = attempts + 1,"
    " claimed_by = NULL, claimed_until = NULL WHERE seq = %s"
)
_RETRY = (
    "UPDATE runwatch_notifications SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s,"
    " claimed_by = NULL, claimed_until = NULL WHERE seq = %s"
)
_DEAD = (
    "UPDATE runwatch_notifications SET state = 'dead', attempts = attempts + 1, last_error = %s,"
    " finished_at = %s, claimed_by = NULL, claimed_until = NULL WHERE seq = %s"
)
_SILENCED = (
    "UPDATE runwatch_notifications SET state = 'silenced', last_error = %s, finished_at = %s,"
    " claimed_by = NULL, claimed_until = NULL WHERE seq = %s"
)
_SILENCED_IDS = "SELECT id FROM runwatch_notifications WHERE state = 'silenced' AND id = ANY(%s)"
_FINISHED_AT = "SELECT id, state, finished_at FROM runwatch_notifications WHERE id = ANY(%s)"
_UNSILENCE = (
    "UPDATE runwatch_notifications SET state = 'pending', next_attempt_at = %s, finished_at = NULL,"
    " last_error = NULL WHERE state = 'silenced' AND id = ANY(%s)"
)
_EXPIRE = (
    "UPDATE runwatch_notifications SET state = 'dead', finished_at = %s,"
    " last_error = 'expired: still pending after max_age'"
    " || coalesce(' (last error: ' || last_error || ')', '')"
    " WHERE channel = %s AND state = 'pending' AND created_at < %s"
    " AND (claimed_until IS NULL OR claimed_until < %s)"
)
_NEXT_DUE = "SELECT min(next_attempt_at) FROM runwatch_notifications WHERE channel = %s AND state = 'pending'"
_COUNTS = "SELECT channel, state, count(*) FROM runwatch_notifications GROUP BY channel, state"
_PENDING = "SELECT count(*) FROM runwatch_notifications WHERE state = 'pending' AND channel = ANY(%s)"
_OLDEST = (
    "SELECT channel, min(created_at) FROM runwatch_notifications WHERE state = 'pending' GROUP BY channel"
)
_ITEMS = (
    "SELECT id, channel, rule, severity, state, attempts, created_at, next_attempt_at, finished_at,"
    " last_error, title FROM runwatch_notifications"
    " WHERE (%(state)s::text IS NULL OR state = %(state)s)"
    " AND (%(channel)s::text IS NULL OR channel = %(channel)s)"
    " ORDER BY seq DESC LIMIT %(limit)s"
)
_RESET = (
    "UPDATE runwatch_notifications SET state = 'pending', attempts = 0, next_attempt_at = %(now)s,"
    " created_at = %(now)s, finished_at = NULL, claimed_by = NULL, claimed_until = NULL"
    " WHERE (%(channel)s::text IS NULL OR channel = %(channel)s)"
)
_REPLAY_IDS = _RESET + " AND id = ANY(%(ids)s) AND (claimed_until IS NULL OR claimed_until < %(now)s)"
_REPLAY_DEAD = _RESET + " AND state = 'dead'"
_PURGE = "DELETE FROM runwatch_notifications WHERE state = ANY(%s) AND finished_at < %s"
_KNOWN = "SELECT id FROM runwatch_notifications WHERE id = ANY(%s)"
_CHANNELS = "SELECT DISTINCT channel FROM runwatch_notifications WHERE state = 'pending'"


class PgOutbox:
    """The notification log of one PostgreSQL state, shared by every instance on it."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], target: Target) -> None:
        self.pool = pool
        self.target = target

    def close(self) -> None:
        """The pool belongs to the state, which closes it."""

    def _rows(self, sql: str, params: Any = None) -> list[Any]:
        with failures(self.target), self.pool.connection() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def _count(self, sql: str, params: Any) -> int:
        with failures(self.target), self.pool.connection() as conn:
            return conn.execute(sql, params).rowcount

    # -- written by the recorder, in its transaction ------------------------------------------------
    @staticmethod
    def enqueue(cur: psycopg.Cursor[Any], notifications: Iterable[Notification], now: float) -> int:
        """Queue each notification once (its id is stable, so a decision made again is a no-op)."""
        rows = [
            (a.id, a.channel, a.rule, a.severity, a.title, orjson.dumps(a.stored()).decode(),
             a.detected_at, now, now)
            for a in (n.alert for n in notifications)
        ]  # fmt: skip
        if not rows:
            return 0
        cur.executemany(_ENQUEUE, rows)
        return max(0, cur.rowcount)

    # -- the delivery side ----------------------------------------------------------------------------
    def claim(self, channel: str, now: float, limit: int, owner: str, lease: float) -> list[Claimed]:
        """Up to ``limit`` due rows of ``channel``, oldest first, claimed for ``lease`` seconds; rows
        another sender is claiming this very moment are skipped, not waited for."""
        return claimed_rows(self._rows(_CLAIM, (owner, now + lease, channel, now, now, limit)))

    def renew(self, seqs: Sequence[int], owner: str, until: float) -> set[int]:
        return {int(r[0]) for r in self._rows(_RENEW, (until, list(seqs), owner))}

    def release(self, seqs: Sequence[int]) -> None:
        if seqs:
            self._count(_RELEASE, (list(seqs),))

    def delivered(self, seq: int, now: float) -> None:
        self._count(_DELIVERED, (now, seq))

    def retry(self, seq: int, error: str, at: float) -> None:
        self._count(_RETRY, (error[:ERROR_LIMIT], at, seq))

    def dead(self, seq: int, error: str, now: float) -> None:
        self._count(_DEAD, (error[:ERROR_LIMIT], now, seq))

    def silenced(self, seq: int, reason: str, now: float) -> None:
        self._count(_SILENCED, (reason[:ERROR_LIMIT], now, seq))

    def silenced_ids(self, ids: Sequence[str]) -> set[str]:
        return {str(r[0]) for r in self._rows(_SILENCED_IDS, (list(ids),))} if ids else set()

    def finished_at(self, ids: Sequence[str]) -> dict[str, float | None]:
        """When each of these left the queue (None: pending); ids retention deleted are absent."""
        rows = self._rows(_FINISHED_AT, (list(ids),)) if ids else []
        return {
            str(i): None if state == "pending" or done is None else float(done) for i, state, done in rows
        }

    def unsilence(self, ids: Sequence[str], now: float, *, fence: Fence | None = None) -> int:
        """Silenced rows back to pending, due now (only rows still ``silenced``: a release that races
        another sends once). A tick's write: with ``fence``, only while its lease holds."""
        if not ids:
            return 0
        with failures(self.target), self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            fenced(cur, fence)
            return cur.execute(_UNSILENCE, (now, list(ids))).rowcount

    def expire(self, channel: str, created_before: float, now: float) -> int:
        return self._count(_EXPIRE, (now, channel, created_before, now))

    def next_due(self, channel: str) -> float | None:
        value = self._rows(_NEXT_DUE, (channel,))[0][0]
        return None if value is None else float(value)

    # -- metrics and the operator's commands ----------------------------------------------------------
    def counts(self) -> dict[tuple[str, str], int]:
        return {(str(c), str(s)): int(n) for c, s, n in self._rows(_COUNTS)}

    def pending_count(self, channels: Sequence[str]) -> int:
        return int(self._rows(_PENDING, (list(channels),))[0][0]) if channels else 0

    def oldest_pending(self) -> dict[str, float]:
        return {str(c): float(t) for c, t in self._rows(_OLDEST)}

    def items(self, *, state: str | None, channel: str | None, limit: int | None) -> list[OutboxItem]:
        """Newest first."""
        rows = self._rows(_ITEMS, {"state": state, "channel": channel, "limit": limit})
        return [OutboxItem(*row) for row in rows]

    def replay(self, ids: Sequence[str], *, dead: bool, channel: str | None, now: float) -> int:
        """Back to pending, due now, attempts reset, same id; a row being sent (claimed) is left alone."""
        changed = 0
        if ids:
            changed += self._count(_REPLAY_IDS, {"now": now, "channel": channel, "ids": list(ids)})
        if dead:
            changed += self._count(_REPLAY_DEAD, {"now": now, "channel": channel})
        return changed

    def purge(self, finished_before: float, states: Sequence[str]) -> int:
        return self._count(_PURGE, (list(states), finished_before))

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        return {str(r[0]) for r in self._rows(_KNOWN, (list(ids),))} if ids else set()

    def channels(self) -> set[str]:
        return {str(r[0]) for r in self._rows(_CHANNELS)}
