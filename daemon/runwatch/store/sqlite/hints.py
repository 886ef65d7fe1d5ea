"""Pushes waiting for their read, in SQLite (table ``push_hints``); memory and consuming are
:class:`runwatch.store.hints.PendingHints`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from runwatch.store.hints import PendingHints
from runwatch.store.interfaces import Hint

_WAITING = (
    "SELECT provider, event_id, monitor_id, run_id, kind, received_at FROM push_hints"
    " WHERE consumed_at IS NULL{only} ORDER BY received_at"
)
_MARK = "UPDATE push_hints SET consumed_at = ? WHERE provider = ? AND event_id = ?"


class SqliteHints(PendingHints):
    """The ``push_hints`` table of the state file."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        super().__init__(self._waiting(None))

    def _waiting(self, provider: str | None) -> list[Hint]:
        only, args = ("", ()) if provider is None else (" AND provider = ?", (provider,))
        rows = self.db.execute(_WAITING.format(only=only), args)
        return [Hint(str(p), str(e), str(m), str(r), str(k), float(at)) for p, e, m, r, k, at in rows]

    def reload_provider(self, provider: str) -> None:
        self.reload(provider, self._waiting(provider))

    def _insert(self, hint: Hint, renew: bool) -> bool:
        conflict = (
            "DO UPDATE SET received_at = excluded.received_at, monitor_id = excluded.monitor_id,"
            " run_id = excluded.run_id, kind = excluded.kind, consumed_at = NULL"
            " WHERE push_hints.consumed_at IS NOT NULL"
            if renew
            else "DO NOTHING"
        )
        cur = self.db.execute(
            "INSERT INTO push_hints (provider, event_id, monitor_id, run_id, kind, received_at)"
            f" VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider, event_id) {conflict}",
            (hint.provider, hint.event_id, hint.monitor_id, hint.run_id, hint.kind, hint.received_at),
        )
        return cur.rowcount == 1

    def _mark(self, hints: Sequence[Hint], now: float) -> None:
        self.write_consumed(hints, now)

    def purge(self, consumed_before: float) -> int:
        cur = self.db.execute("DELETE FROM push_hints WHERE consumed_at < ?", (consumed_before,))
        return cur.rowcount

    def write_consumed(self, hints: Sequence[Hint], now: float) -> None:
        """The rows; inside the caller's transaction when it holds one."""
        self.db.executemany(_MARK, [(now, h.provider, h.event_id) for h in hints])
