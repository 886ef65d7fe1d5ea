"""The outbox: the notification log in SQLite, from decision to delivery or dead letter.

A row is written in the same transaction as the change that decided it (:meth:`SqliteOutbox.enqueue`
runs inside the recorder's transaction). A delivery worker *claims* due rows before sending them
(``claimed_by``/``claimed_until``), so two senders never send one row; then records the outcome in
one statement per row. The window in which a notification can be sent twice is between the channel's
acknowledgement and that statement's commit (tens of microseconds, plus a crash landing exactly
there); webhook receivers close it by deduping on ``webhook-id``.

The outbox has a connection of its own, used from the delivery threads and the event loop under a
lock: every call is one short autocommit statement, and none of them can land inside (or be rolled
back with) a recorder's transaction on the main connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from runwatch.model import Alert
from runwatch.store.interfaces import Claimed, Fence, Notification, OutboxItem
from runwatch.store.sqlite.database import connect

#: Longest error text kept per row (the reason is also in the log line).
ERROR_LIMIT = 500


class SqliteOutbox:
    """The notification log of one state file."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path, create=False)
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- written by the recorder, in its transaction ------------------------------------------------
    @staticmethod
    def enqueue(db: sqlite3.Connection, notifications: Iterable[Notification], now: float) -> int:
        """Queue each notification once (its id is stable, so a decision made again is a no-op)."""
        new = 0
        for n in notifications:
            a = n.alert
            cur = db.execute(
                "INSERT OR IGNORE INTO notifications (id, channel, rule, severity, title, alert,"
                " detected_at, created_at, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (a.id, a.channel, a.rule, a.severity, a.title, orjson.dumps(a.stored()),
                 a.detected_at, now, now),
            )  # fmt: skip
            new += cur.rowcount
        return new

    # -- the delivery side ----------------------------------------------------------------------------
    def _exec(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.db.execute(sql, params)

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self.lock:
            return self.db.execute(sql, params).fetchall()

    def claim(self, channel: str, now: float, limit: int, owner: str, lease: float) -> list[Claimed]:
        """Up to ``limit`` due rows of ``channel``, oldest first, claimed for ``lease`` seconds."""
        rows = self._all(
            "UPDATE notifications SET claimed_by = ?, claimed_until = ? WHERE seq IN ("
            " SELECT seq FROM notifications WHERE channel = ? AND state = 'pending'"
            " AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)"
            " ORDER BY seq LIMIT ?) RETURNING seq, alert, attempts, created_at",
            (owner, now + lease, channel, now, now, limit),
        )
        return claimed_rows(rows)

    def renew(self, seqs: Sequence[int], owner: str, until: float) -> set[int]:
        """Extend ``owner``'s claims on these rows (one batch: a few dozen); returns those it still holds."""
        marks = ",".join("?" * len(seqs))
        rows = self._all(
            "UPDATE notifications SET claimed_until = ? WHERE claimed_by = ? AND state = 'pending'"
            f" AND seq IN ({marks}) RETURNING seq",
            (until, owner, *seqs),
        )
        return {int(r[0]) for r in rows}

    def release(self, seqs: Sequence[int]) -> None:
        """Give claimed rows back untouched (a batch cut short by a failing channel or shutdown)."""
        with self.lock:
            self.db.executemany(
                "UPDATE notifications SET claimed_by = NULL, claimed_until = NULL WHERE seq = ?",
                [(s,) for s in seqs],
            )

    def release_all(self) -> None:
        """At start, under the state lock: claims left by a process that died are void."""
        self._exec(
            "UPDATE notifications SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by IS NOT NULL"
        )

    def delivered(self, seq: int, now: float) -> None:
        self._exec(
            "UPDATE notifications SET state = 'sent', finished_at = ?, attempts = attempts + 1,"
            " claimed_by = NULL, claimed_until = NULL WHERE seq = ?",
            (now, seq),
        )

    def retry(self, seq: int, error: str, at: float) -> None:
        self._exec(
            "UPDATE notifications SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
            " claimed_by = NULL, claimed_until = NULL WHERE seq = ?",
            (error[:ERROR_LIMIT], at, seq),
        )

    def dead(self, seq: int, error: str, now: float) -> None:
        self._exec(
            "UPDATE notifications SET state = 'dead', attempts = attempts + 1, last_error = ?,"
            " finished_at = ?, claimed_by = NULL, claimed_until = NULL WHERE seq = ?",
            (error[:ERROR_LIMIT], now, seq),
        )

    def silenced(self, seq: int, reason: str, now: float) -> None:
        """Held back by a silence when it would have been sent: finished, not sent."""
        self._exec(
            "UPDATE notifications SET state = 'silenced', last_error = ?, finished_at = ?,"
            " claimed_by = NULL, claimed_until = NULL WHERE seq = ?",
            (reason[:ERROR_LIMIT], now, seq),
        )

    def _by_ids(self, sql: str, ids: Sequence[str]) -> list[Any]:
        """``sql`` ending in ``id IN ({marks})`` over ``ids``, 500 at a time (SQLite's bound on them)."""
        rows: list[Any] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows += self._all(sql.format(marks=",".join("?" * len(chunk))), chunk)
        return rows

    def silenced_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these notifications a silence held back (state ``silenced``)."""
        sql = "SELECT id FROM notifications WHERE state = 'silenced' AND id IN ({marks})"
        return {str(r[0]) for r in self._by_ids(sql, ids)}

    def finished_at(self, ids: Sequence[str]) -> dict[str, float | None]:
        """When each of these notifications left the queue (sent, dead or silenced); None while it is
        pending. Ids the log no longer holds (retention) are absent."""
        sql = "SELECT id, state, finished_at FROM notifications WHERE id IN ({marks})"
        return {
            str(i): None if state == "pending" or done is None else float(done)
            for i, state, done in self._by_ids(sql, ids)
        }

    def unsilence(self, ids: Sequence[str], now: float, *, fence: Fence | None = None) -> int:
        """Silenced rows back to pending, due now: their silence ended while their alert is still open.

        Only rows still ``silenced`` move, so a release that races another (or a replay) sends once.
        """
        changed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            changed += self._exec(
                "UPDATE notifications SET state = 'pending', next_attempt_at = ?, finished_at = NULL,"
                f" last_error = NULL WHERE state = 'silenced' AND id IN ({marks})",
                (now, *chunk),
            ).rowcount
        return changed

    def expire(self, channel: str, created_before: float, now: float) -> int:
        """Pending rows older than the channel's ``max_age`` become dead letters; returns how many."""
        cur = self._exec(
            "UPDATE notifications SET state = 'dead', finished_at = ?,"
            " last_error = 'expired: still pending after max_age'"
            " || coalesce(' (last error: ' || last_error || ')', '')"
            " WHERE channel = ? AND state = 'pending' AND created_at < ?"
            " AND (claimed_until IS NULL OR claimed_until < ?)",
            (now, channel, created_before, now),
        )
        return cur.rowcount

    def next_due(self, channel: str) -> float | None:
        row = self._all(
            "SELECT MIN(next_attempt_at) FROM notifications WHERE channel = ? AND state = 'pending'",
            (channel,),
        )
        value = row[0][0] if row else None
        return None if value is None else float(value)

    # -- metrics and the operator's commands ----------------------------------------------------------
    def counts(self) -> dict[tuple[str, str], int]:
        return {
            (str(c), str(s)): int(n)
            for c, s, n in self._all(
                "SELECT channel, state, COUNT(*) FROM notifications GROUP BY channel, state"
            )
        }

    def pending_count(self, channels: Sequence[str]) -> int:
        """Pending rows of these channels (reads only the pending index, however long the log)."""
        if not channels:
            return 0
        marks = ",".join("?" * len(channels))
        row = self._all(
            f"SELECT COUNT(*) FROM notifications WHERE state = 'pending' AND channel IN ({marks})",
            tuple(channels),
        )
        return int(row[0][0])

    def oldest_pending(self) -> dict[str, float]:
        return {
            str(c): float(t)
            for c, t in self._all(
                "SELECT channel, MIN(created_at) FROM notifications WHERE state = 'pending' GROUP BY channel"
            )
        }

    def items(self, *, state: str | None, channel: str | None, limit: int | None) -> list[OutboxItem]:
        """Newest first."""
        where, params = _filters(state=state, channel=channel)
        sql = (
            "SELECT id, channel, rule, severity, state, attempts, created_at, next_attempt_at, finished_at,"
            f" last_error, title FROM notifications{where} ORDER BY seq DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [OutboxItem(*row) for row in self._all(sql, params)]

    def replay(self, ids: Sequence[str], *, dead: bool, channel: str | None, now: float) -> int:
        """Back to pending, due now, attempts reset; the id (``webhook-id``) stays the same.

        A row a worker has claimed (it is being sent right now) is left alone: replaying it would let
        a second worker send it beside the first.
        """
        reset = (
            "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = ?, created_at = ?,"
            " finished_at = NULL, claimed_by = NULL, claimed_until = NULL"
        )
        changed = 0
        if ids:
            where, params = _filters(state=None, channel=channel)
            extra = " AND" if where else " WHERE"
            marks = ",".join("?" * len(ids))
            changed += self._exec(
                f"{reset}{where}{extra} id IN ({marks}) AND (claimed_until IS NULL OR claimed_until < ?)",
                (now, now, *params, *ids, now),
            ).rowcount
        if dead:
            where, params = _filters(state="dead", channel=channel)
            changed += self._exec(f"{reset}{where}", (now, now, *params)).rowcount
        return changed

    def purge(self, finished_before: float, states: Sequence[str]) -> int:
        """Delete finished (sent/dead) rows that finished before the given time; returns how many."""
        marks = ",".join("?" * len(states))
        return self._exec(
            f"DELETE FROM notifications WHERE state IN ({marks}) AND finished_at < ?",
            (*states, finished_before),
        ).rowcount

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        marks = ",".join("?" * len(ids))
        return {str(r[0]) for r in self._all(f"SELECT id FROM notifications WHERE id IN ({marks})", ids)}

    def channels(self) -> set[str]:
        return {
            str(r[0]) for r in self._all("SELECT DISTINCT channel FROM notifications WHERE state = 'pending'")
        }


def claimed_rows(rows: Iterable[Any]) -> list[Claimed]:
    """Claimed rows (seq, alert as JSON, attempts, created_at) as the senders take them, oldest first."""
    out = [
        Claimed(int(seq), Alert.from_payload(orjson.loads(alert)), int(att), float(created))
        for seq, alert, att, created in rows
    ]
    out.sort(key=lambda c: c.seq)
    return out


def _filters(*, state: str | None, channel: str | None) -> tuple[str, tuple[object, ...]]:
    clauses: list[str] = []
    params: list[object] = []
    if state is not None:
        clauses.append("state = ?")
        params.append(state)
    if channel is not None:
        clauses.append("channel = ?")
        params.append(channel)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
