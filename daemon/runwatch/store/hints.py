"""Pushes waiting for their read, in SQLite (table ``push_hints``), and in memory the ones still waiting.

:meth:`SqliteHints.add` commits before the push is answered, so a ``kill -9`` right after the answer
still reads the run after the restart. The :class:`~runwatch.store.State` consumes hints inside the
transaction that records the read they asked for (:meth:`answered`, :meth:`write_consumed`, then
:meth:`apply_consumed` after the commit), so memory never runs ahead of the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence

from runwatch.model import RunSnapshot
from runwatch.store.interfaces import Hint

#: Called once a hint is consumed by the read of what it named: (the hint, when it was read).
OnRead = Callable[[Hint, float], None]


class SqliteHints:
    """The ``push_hints`` table and, per (provider, monitor), the hints not consumed yet."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        #: The daemon's hook for ``runwatch_push_to_read_seconds`` (None: nobody measures).
        self.on_read: OnRead | None = None
        self._pending: dict[tuple[str, str], dict[str, Hint]] = {}
        rows = db.execute(
            "SELECT provider, event_id, monitor_id, run_id, kind, received_at FROM push_hints"
            " WHERE consumed_at IS NULL ORDER BY received_at"
        )
        for p, e, m, r, k, at in rows:
            self._keep(Hint(str(p), str(e), str(m), str(r), str(k), float(at)))

    def _keep(self, hint: Hint) -> None:
        self._pending.setdefault((hint.provider, hint.monitor_id), {})[hint.event_id] = hint

    # -- the Hints interface ----------------------------------------------------------------------------
    def add(self, hint: Hint, *, renew: bool = False) -> bool:
        if hint.event_id in self._pending.get((hint.provider, hint.monitor_id), {}):
            return False  # waiting already: no write at all
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
        if cur.rowcount != 1:
            return False
        self._keep(hint)
        return True

    def pending(self, provider: str) -> list[Hint]:
        found = [h for (p, _), hints in self._pending.items() if p == provider for h in hints.values()]
        return sorted(found, key=lambda h: h.received_at)

    def expire(self, provider: str, received_before: float, now: float) -> list[Hint]:
        old = [h for h in self.pending(provider) if h.received_at < received_before]
        if old:
            self.db.executemany(
                "UPDATE push_hints SET consumed_at = ? WHERE provider = ? AND event_id = ?",
                [(now, h.provider, h.event_id) for h in old],
            )
            self._drop(old)
        return old

    def purge(self, consumed_before: float) -> int:
        cur = self.db.execute("DELETE FROM push_hints WHERE consumed_at < ?", (consumed_before,))
        return cur.rowcount

    # -- consumed by a record ---------------------------------------------------------------------------
    def answered(
        self,
        provider: str,
        monitor_id: str | None,
        snapshots: Sequence[RunSnapshot],
        retired: Sequence[str],
        is_done: Callable[[str, str], bool | None],
        before: float | None,
    ) -> tuple[list[Hint], set[str]]:
        """The hints a read of ``monitor_id`` that began at ``before`` answers, and the runs it read:
        hints received by then that name the monitor as a whole, a run it read, or a run recorded
        finished (a poll got there first). Nothing when ``before`` is None (not a read)."""
        hints = self._pending.get((provider, monitor_id or "")) if before is not None else None
        if not hints or before is None:
            return [], set()
        read = {s.run_id for s in snapshots} | set(retired)
        found = [
            h
            for h in hints.values()
            if h.received_at <= before
            and (not h.run_id or h.run_id in read or is_done(provider, h.run_id) is True)
        ]
        return found, read

    def write_consumed(self, hints: Sequence[Hint], now: float) -> None:
        """The rows; the caller holds the transaction."""
        self.db.executemany(
            "UPDATE push_hints SET consumed_at = ? WHERE provider = ? AND event_id = ?",
            [(now, h.provider, h.event_id) for h in hints],
        )

    def apply_consumed(self, hints: Sequence[Hint], read: Collection[str], now: float) -> None:
        """After the commit: out of memory, and measured when the read was of what they named."""
        self._drop(hints)
        if self.on_read is not None:
            for h in hints:
                if not h.run_id or h.run_id in read:
                    self.on_read(h, now)

    def _drop(self, hints: Sequence[Hint]) -> None:
        for h in hints:
            key = (h.provider, h.monitor_id)
            left = self._pending.get(key)
            if left is not None:
                left.pop(h.event_id, None)
                if not left:
                    del self._pending[key]
