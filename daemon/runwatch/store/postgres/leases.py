"""Leases and heartbeats in PostgreSQL, for several instances on one state. All of its SQL is here.

Expiry is on the **database's clock** (``clock_timestamp()``), never on an instance's: the instances'
clocks may disagree, the database is the one judge they share. Each call is one statement in its own
transaction: taking a lease is an upsert that only replaces a lease that ran out (two instances asking
at once: one wins, the other waits for its row lock and then sees it held), and the token grows by one
with each new holder. A write fenced by a lease checks it in its own transaction with
``SELECT 1 FROM runwatch_leases WHERE name=%s AND holder=%s AND token=%s AND expires_at > <db now>
FOR SHARE`` (the store's side of :class:`~runwatch.store.interfaces.Fence`).

The tables (``runwatch_leases``, ``runwatch_instances``) are the schema's (:mod:`.schema`): opening
the leases migrates it as the store does, under the same advisory lock, so instances starting together
make them once, whichever part opens first.

Every call is bounded: the connection gives up on a silent server after a few seconds (TCP user
timeout, keepalives, a statement timeout), so a renewal cannot hang past the lease; a broken connection
is opened again on the next call. It is a connection of its own, not one of the store's pool: a pool
busy with senders must not delay a renewal. Errors are :class:`~runwatch.errors.StateError` naming
host, port and database, never the password.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from runwatch.clock import Clock
from runwatch.errors import StateError
from runwatch.store.leases import InstanceRecord, Lease
from runwatch.store.postgres.connect import Target, explain
from runwatch.store.postgres.schema import migrate, require_current

#: The database's clock, in unix seconds.
DB_NOW: LiteralString = "extract(epoch from clock_timestamp())::double precision"
#: Seconds a statement, a connection attempt or a silent peer may take before the call fails.
CALL_TIMEOUT = 5


class PostgresLeases:
    """:class:`~runwatch.store.leases.Leases` and :class:`~runwatch.store.leases.Instances` on one
    PostgreSQL database.

    ``clock`` is for tests that drive time: the database then compares against that clock's time,
    given with each statement, instead of its own (everything else is the same SQL).
    """

    shared = True

    def __init__(self, target: Target | str, *, clock: Clock | None = None, create: bool = True) -> None:
        self.target = target if isinstance(target, Target) else Target(target)
        self.where = self.target.where
        params = self.target.params
        extra: dict[str, str | int] = {
            "connect_timeout": CALL_TIMEOUT,
            "keepalives": 1,
            "keepalives_idle": CALL_TIMEOUT,
            "keepalives_interval": 1,
            "keepalives_count": 2,
            "tcp_user_timeout": CALL_TIMEOUT * 1000,
        }
        self.kwargs = {**self.target.kwargs(), **{k: v for k, v in extra.items() if k not in params}}
        self.clock = clock
        self._now: LiteralString = "%(now)s::double precision" if clock is not None else DB_NOW
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            conn = self._connection()
            try:  # the schema's tables; a command (create=False) only checks there is a state
                if create:
                    migrate(conn, self.where)
                else:
                    require_current(conn, self.where)
            except BaseException as exc:
                conn.close()
                if isinstance(exc, psycopg.Error):
                    raise self._error(exc) from None
                raise

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.target.url, **self.kwargs)
                self._conn.execute(f"SET statement_timeout = {CALL_TIMEOUT * 1000}")
            except psycopg.Error as exc:
                self._conn = None
                raise self._error(exc) from None
        return self._conn

    def _error(self, exc: psycopg.Error) -> StateError:
        return explain(exc, self.target)

    def _run(self, sql: LiteralString, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """One statement in its own transaction; its rows."""
        if self.clock is not None:
            params = {**params, "now": self.clock.now()}
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.execute(sql.replace("{now}", self._now), params)
                return cur.fetchall() if cur.description is not None else [(cur.rowcount,)]
            except psycopg.Error as exc:
                if conn.broken:
                    self._conn = None
                raise self._error(exc) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- leases ---------------------------------------------------------------------------------------
    def acquire(self, name: str, holder: str, ttl: float) -> int | None:
        rows = self._run(
            "WITH t AS (SELECT {now} AS now)"
            " INSERT INTO runwatch_leases AS l (name, holder, token, acquired_at, expires_at)"
            " SELECT %(name)s, %(holder)s, 1, t.now, t.now + %(ttl)s FROM t"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = l.token + 1,"
            " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at"
            " WHERE l.expires_at <= excluded.acquired_at"
            " RETURNING token",
            {"name": name, "holder": holder, "ttl": ttl},
        )
        return int(rows[0][0]) if rows else None

    def renew(self, name: str, holder: str, token: int, ttl: float) -> bool:
        rows = self._run(
            "WITH t AS (SELECT {now} AS now)"
            " UPDATE runwatch_leases SET expires_at = t.now + %(ttl)s FROM t"
            " WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s AND expires_at > t.now"
            " RETURNING token",
            {"name": name, "holder": holder, "token": token, "ttl": ttl},
        )
        return bool(rows)

    def release(self, name: str, holder: str, token: int) -> None:
        self._run(
            "WITH t AS (SELECT {now} AS now)"
            " UPDATE runwatch_leases SET expires_at = t.now FROM t"
            " WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s AND expires_at > t.now",
            {"name": name, "holder": holder, "token": token},
        )

    def leases(self) -> list[Lease]:
        rows = self._run(
            "SELECT name, holder, token, acquired_at, expires_at, expires_at > {now}"
            " FROM runwatch_leases ORDER BY name",
            {},
        )
        return [Lease(str(n), str(h), int(t), float(a), float(e), bool(held)) for n, h, t, a, e, held in rows]

    # -- instances ------------------------------------------------------------------------------------
    def heartbeat(self, name: str, digest: str, polls: Mapping[str, float]) -> None:
        self._run(
            "INSERT INTO runwatch_instances (name, last_seen, digest, polls)"
            " VALUES (%(name)s, {now}, %(digest)s, %(polls)s)"
            " ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen, digest = excluded.digest,"
            " polls = excluded.polls",
            {"name": name, "digest": digest, "polls": Jsonb(dict(polls))},
        )

    def instances(self) -> list[InstanceRecord]:
        rows = self._run(
            "SELECT name, last_seen, digest, greatest(0, {now} - last_seen), polls"
            " FROM runwatch_instances ORDER BY last_seen DESC",
            {},
        )
        return [
            InstanceRecord(
                str(n), float(s), str(d), float(age), {str(k): float(v) for k, v in dict(p).items()}
            )
            for n, s, d, age, p in rows
        ]
