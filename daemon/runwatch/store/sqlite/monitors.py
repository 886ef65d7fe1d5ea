"""Monitors as their providers' listings last showed them, in SQLite, with a copy in memory.

Written only inside a recorder's transaction (with the notifications the listing or the missed-run
check decided), applied to memory after the commit: a restart reads back exactly what was decided.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from runwatch.store.interfaces import MonitorRecord

#: Meta key set (in the listing's own transaction) once a provider's monitors were first recorded.
BASELINE_KEY = "monitors_baseline_done:{provider}"


class SqliteMonitors:
    """The ``monitor_state`` table and its in-memory copy, keyed by (provider, monitor_id)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.empty()
        self._read(None)

    def empty(self) -> None:
        """Memory with nothing in it (before the first read)."""
        self._records: dict[tuple[str, str], MonitorRecord] = {}
        self.baselined: set[str] = set()

    def reload(self, provider: str) -> None:
        """Read one provider's monitors afresh (another instance led it meanwhile)."""
        self._records = {k: v for k, v in self._records.items() if k[0] != provider}
        self.baselined.discard(provider)
        self._read(provider)

    def _read(self, provider: str | None) -> None:
        """One provider's monitors (or all) and whether its first listing was recorded, from the file."""
        only, args = ("", ()) if provider is None else (" WHERE provider = ?", (provider,))
        pattern = BASELINE_KEY.format(provider="%" if provider is None else provider)
        self.remember(
            self.db.execute(
                "SELECT provider, monitor_id, status, raw, due, next_due, last_started, missed_due,"
                f" missed_grace FROM monitor_state{only}",
                args,
            ),
            self.db.execute("SELECT key FROM meta WHERE key LIKE ?", (pattern,)),
        )

    def remember(self, rows: Iterable[Any], baselined: Iterable[Any]) -> None:
        """Add to memory the store's rows (monitors; the baseline meta keys), whatever the backend."""
        for row in rows:
            provider, monitor_id, status, raw, due, next_due, started, missed_due, missed_grace = row
            self._records[(str(provider), str(monitor_id))] = MonitorRecord(
                str(provider), str(monitor_id), status, _load(raw), due, next_due, started, missed_due,
                float(missed_grace or 0.0),
            )  # fmt: skip
        self.baselined.update(str(k).split(":", 1)[1] for (k,) in baselined)

    def get(self, provider: str, monitor_id: str) -> MonitorRecord | None:
        """A copy: a stage changes it and hands it back to be recorded."""
        rec = self._records.get((provider, monitor_id))
        return None if rec is None else replace(rec)

    def raw(self, provider: str, monitor_id: str) -> Mapping[str, Any]:
        rec = self._records.get((provider, monitor_id))
        return rec.raw if rec is not None else {}

    def records(self) -> list[MonitorRecord]:
        return [replace(r) for r in self._records.values()]

    def due_by(self, at: float) -> list[MonitorRecord]:
        """Copies of the records whose watched run was due at or before ``at`` (what a tick looks at:
        a few, not every monitor every second)."""
        return [replace(r) for r in self._records.values() if r.due is not None and r.due <= at]

    def write(self, updates: Sequence[MonitorRecord], now: float, baselined: str | None) -> None:
        """Inside the caller's transaction."""
        self.db.executemany(
            "INSERT OR REPLACE INTO monitor_state (provider, monitor_id, status, raw, due, next_due,"
            " last_started, missed_due, missed_grace, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [row(r, now) for r in updates],
        )
        if baselined is not None and baselined not in self.baselined:
            self.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')",
                (BASELINE_KEY.format(provider=baselined),),
            )

    def purge_deleted(self, before: float) -> int:
        """Forget monitors recorded as deleted before ``before``; returns how many. (One that is
        listed again later comes back as a monitor that appeared.)"""
        db = self.db
        gone = db.execute(
            "SELECT provider, monitor_id FROM monitor_state WHERE status = 'deleted' AND updated_at < ?",
            (before,),
        ).fetchall()
        if not gone:
            return 0
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM monitor_state WHERE provider = ? AND monitor_id = ?", gone)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for provider, monitor_id in gone:
            self._records.pop((str(provider), str(monitor_id)), None)
        return len(gone)

    def apply(self, updates: Sequence[MonitorRecord], baselined: str | None) -> None:
        """After the commit."""
        for r in updates:
            self._records[(r.provider, r.monitor_id)] = replace(r)
        if baselined is not None:
            self.baselined.add(baselined)


def row(r: MonitorRecord, now: float) -> tuple[object, ...]:
    """A record as its row: provider, monitor_id, status, raw (JSON), due, next_due, last_started,
    missed_due, missed_grace, updated_at."""
    return (
        r.provider, r.monitor_id, r.status, json.dumps(dict(r.raw), default=str), r.due, r.next_due,
        r.last_started, r.missed_due, r.missed_grace, now,
    )  # fmt: skip


def _load(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
