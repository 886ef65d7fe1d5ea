"""A SQLite state written into an empty PostgreSQL database, for ``runwatch state copy`` (the writing
side): every table in one transaction, so a copy is all there or not at all.

The database must hold no runwatch state yet (an empty database, or one where only the schema was
created): copying over another state would mix two histories. The migration lock is held meanwhile,
so a daemon starting on the database waits for the copy to finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from runwatch.errors import StateError
from runwatch.store.postgres.connect import Target, connect, failures
from runwatch.store.postgres.schema import MIGRATION_LOCK, TABLES, migrate
from runwatch.store.sqlite.dump import Table
from runwatch.store.sqlite.sends import unpack

#: Columns whose SQLite form differs: integers that mean true/false are booleans here, packed floats
#: arrays.
_CONVERT: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("runs", "done"): bool,
    ("catch_up", "baseline"): bool,
    ("send_windows", "sends"): unpack,
}
_HELD = "SELECT EXISTS (SELECT 1 FROM {table}{where})"
_SEQ = (
    "SELECT setval(pg_get_serial_sequence('runwatch_notifications', 'seq'),"
    " coalesce((SELECT max(seq) FROM runwatch_notifications), 0) + 1, false)"
)


def restore(target: Target, tables: Iterable[Table]) -> dict[str, int]:
    """Write ``tables`` into the database ``target`` names (creating the schema if it is empty); returns
    the rows written per table. StateError, writing nothing, if the database already holds a state."""
    copied: dict[str, int] = {}
    with connect(target) as conn, failures(target):
        migrate(conn, target.where)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            held = [t for t in TABLES if _holds(conn, t)]
            if held:
                raise StateError(
                    f"state database {target.where} already holds a runwatch state ({', '.join(held)} not "
                    "empty); copy only into an empty database"
                )
            with conn.cursor() as cur:
                for table in tables:
                    copied[table.name] = _copy(cur, table)
                cur.execute(_SEQ)
    return copied


def _holds(conn: psycopg.Connection[Any], table: str) -> bool:
    where = " WHERE key <> 'schema_version'" if table == "runwatch_meta" else ""
    row = conn.execute(_HELD.format(table=table, where=where)).fetchone()
    return bool(row and row[0])


def _copy(cur: psycopg.Cursor[Any], table: Table) -> int:
    convert = [_CONVERT.get((table.name, c), _value) for c in table.columns]
    sql = f"COPY runwatch_{table.name} ({', '.join(table.columns)}) FROM STDIN"
    with cur.copy(sql) as copy:
        for row in table.rows:
            copy.write_row([f(v) for f, v in zip(convert, row, strict=True)])
    return len(table.rows)


def _value(v: Any) -> Any:
    """JSON SQLite kept as a blob (the outbox's alerts, written as bytes) becomes the text it is."""
    return v.decode() if isinstance(v, bytes) else v
