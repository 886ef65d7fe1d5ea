"""Silences added with ``runwatch silence add``, kept in the state file beside the outbox, so the
command and a running daemon share them. Matching and muting is :mod:`runwatch.pipeline.silences`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from runwatch.errors import StateError
from runwatch.store.interfaces import Silence
from runwatch.store.sqlite.database import connect

_TABLE = """
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL, ends_at REAL NOT NULL,
    comment TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL DEFAULT '', expired_at REAL
)
"""


class SilenceStore:
    """The CLI's silences, in the state file (table ``silences``, created on first use).

    It has a connection of its own: the daemon reads it from the delivery threads, the CLI writes it
    beside a running daemon (WAL lets both).
    """

    def __init__(self, path: Path) -> None:
        self.db = connect(path, create=False)
        self.db.execute(_TABLE)

    def close(self) -> None:
        self.db.close()

    def add(
        self, matchers: Mapping[str, str], starts_at: float, ends_at: float, comment: str, created_by: str
    ) -> Silence:
        silence = Silence(
            f"sil_{secrets.token_hex(6)}", dict(matchers), starts_at, ends_at, comment, created_by
        )
        self.db.execute(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by)"
            " VALUES (?,?,?,?,?,?)",
            (silence.id, json.dumps(silence.matchers), starts_at, ends_at, comment, created_by),
        )
        return silence

    def expire(self, silence_id: str, now: float) -> bool:
        cur = self.db.execute(
            "UPDATE silences SET expired_at = ? WHERE id = ? AND expired_at IS NULL", (now, silence_id)
        )
        return cur.rowcount > 0

    def all(self) -> list[Silence]:
        try:
            rows = self.db.execute(
                "SELECT id, matchers, starts_at, ends_at, comment, created_by, expired_at FROM silences"
                " ORDER BY starts_at"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"silences: {exc}") from None
        return [
            Silence(
                str(i), json.loads(m), float(s), float(e), str(c), str(b), None if x is None else float(x)
            )
            for i, m, s, e, c, b, x in rows
        ]
