"""A SQLite state read out whole, table by table, for ``runwatch state copy`` (the reading side).

Each :class:`Table` carries the rows as SQLite holds them, under the names of the SQLite tables and
columns; the PostgreSQL side (:mod:`runwatch.store.postgres.restore`) writes them into its own tables.
Claims are not carried over: no sender holds a row of a state no daemon runs on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Every table a state holds, with the columns that are copied, in an order that restores safely.
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "monitors": ("provider", "monitor_id", "first_seen"),
    "monitor_state": (
        "provider", "monitor_id", "status", "raw", "due", "next_due", "last_started", "missed_due",
        "missed_grace", "updated_at",
    ),
    "catch_up": ("provider", "monitor_id", "cursors", "baseline"),
    "runs": ("provider", "run_id", "monitor_id", "status", "done", "updated_at", "created_at"),
    "run_events": ("provider", "run_id", "event_id"),
    "run_stuck": ("provider", "run_id", "stuck_after"),
    "notifications": (
        "seq", "id", "channel", "rule", "severity", "title", "alert", "detected_at", "created_at", "state",
        "attempts", "next_attempt_at", "last_error", "finished_at",
    ),
    "alerts": ("key", "rule", "provider", "monitor_id", "data"),
    "silences": ("id", "matchers", "starts_at", "ends_at", "comment", "created_by", "expired_at"),
    "send_windows": ("channel", "sends", "head"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the state: its name and columns (as in SQLite) and its rows."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def dump(db: sqlite3.Connection) -> Iterator[Table]:
    """Every table of the state, whole (the meta key ``schema_version`` is the store's own, left out;
    a table an older runwatch never made is empty)."""
    present = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for name, columns in TABLES.items():
        if name not in present:
            yield Table(name, columns, [])
            continue
        where = " WHERE key != 'schema_version'" if name == "meta" else ""
        rows = db.execute(f"SELECT {', '.join(columns)} FROM {name}{where}").fetchall()
        yield Table(name, columns, rows)
