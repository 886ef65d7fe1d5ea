"""What runwatch has seen (SQLite, WAL) and the pure diff from what it saw before to what it sees now.

The state is what makes a restart safe: a run's last reported status and the ids of the events already
reported survive, so nothing is reported twice and a transition that happened while the daemon was
down is reported (once) on the next poll. The notifications decided for a change are written in the
same transaction that marks the change as seen (the outbox), so a crash between the two cannot lose
an alert or send it twice.

SQLite calls run on the event loop: in WAL mode with ``synchronous=NORMAL`` a commit does not fsync
and costs well under a millisecond; a poll commits once per monitor, not per run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runwatch.model import TERMINAL_STATUSES, Change, ChangeKind, RunSnapshot

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS monitors (
    provider TEXT NOT NULL, monitor_id TEXT NOT NULL, first_seen REAL NOT NULL,
    PRIMARY KEY (provider, monitor_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    provider TEXT NOT NULL, run_id TEXT NOT NULL, monitor_id TEXT NOT NULL,
    status TEXT NOT NULL, done INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (provider, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_events (
    provider TEXT NOT NULL, run_id TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (provider, run_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL,
    title TEXT NOT NULL, body TEXT NOT NULL, change_key TEXT NOT NULL,
    detected_at REAL NOT NULL, created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL, last_error TEXT, sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, channel, next_attempt_at);
"""


@dataclass(slots=True)
class RunRecord:
    """The state of one run, as last recorded."""

    monitor_id: str
    status: str
    done: bool
    events: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Notification:
    """One decided notification for one channel: a row of the outbox."""

    channel: str
    rule: str
    severity: str
    title: str
    body: str
    change_key: str
    detected_at: float

    @property
    def dedup_key(self) -> str:
        return f"{self.change_key}|{self.rule}|{self.channel}"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    channel: str
    rule: str
    severity: str
    title: str
    body: str
    detected_at: float
    attempts: int


def diff(prev: RunRecord | None, snap: RunSnapshot, now: float) -> list[Change]:
    """Changes between what was recorded and what is seen now, in the order they happened.

    A status is reported when it differs from the recorded one (so a jump created -> failed is one
    change with ``from_status='created'``); a terminal status is final, so a later different answer
    is not a change. Events are reported once each, sorted by timestamp.
    """
    changes: list[Change] = []
    base = dict(provider=snap.provider, monitor_id=snap.monitor_id, run_id=snap.run_id, run=snap.raw)
    status_change: Change | None = None
    if prev is None or (prev.status != snap.status and prev.status not in TERMINAL_STATUSES):
        status_change = Change(
            key=f"{snap.provider}:{snap.run_id}:status:{snap.status}",
            kind=ChangeKind.RUN_STATUS,
            from_status=prev.status if prev else None,
            to_status=snap.status,
            failed_reason=snap.failed_reason,
            detected_at=now,
            **base,  # type: ignore[arg-type]
        )
    seen = prev.events if prev else set()
    new_events = sorted((e for e in snap.events if e.id not in seen), key=lambda e: (e.ts_ms, e.id))
    event_changes = [
        Change(
            key=f"{snap.provider}:{snap.run_id}:event:{e.id}",
            kind=ChangeKind.RUN_EVENT,
            event=e,
            from_status=prev.status if prev else None,
            to_status=snap.status,
            failed_reason=e.error or snap.failed_reason,
            detected_at=now,
            **base,  # type: ignore[arg-type]
        )
        for e in new_events
    ]
    # A run that just started is reported before its steps; one that just ended, after them.
    if status_change is not None and not snap.terminal:
        changes.append(status_change)
        status_change = None
    changes.extend(event_changes)
    if status_change is not None:
        changes.append(status_change)
    return changes


class Store:
    """The SQLite file plus an in-memory copy of the run table, so a poll reads no rows."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            raise RuntimeError(
                f"state {path} was written by a newer runwatch (schema {version} > {SCHEMA_VERSION})"
            )
        self.runs: dict[tuple[str, str], RunRecord] = {}
        self.monitors: set[tuple[str, str]] = set()
        self._load()

    def _load(self) -> None:
        for provider, run_id, monitor_id, status, done in self.db.execute(
            "SELECT provider, run_id, monitor_id, status, done FROM runs"
        ):
            self.runs[(provider, run_id)] = RunRecord(monitor_id, status, bool(done))
        for provider, run_id, event_id in self.db.execute(
            "SELECT provider, run_id, event_id FROM run_events"
        ):
            rec = self.runs.get((provider, run_id))
            if rec is not None:
                rec.events.add(event_id)
        self.monitors = {(p, m) for p, m in self.db.execute("SELECT provider, monitor_id FROM monitors")}

    def close(self) -> None:
        self.db.close()

    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- runs -------------------------------------------------------------------------------------
    def run(self, provider: str, run_id: str) -> RunRecord | None:
        return self.runs.get((provider, run_id))

    def knows_monitor(self, provider: str, monitor_id: str) -> bool:
        return (provider, monitor_id) in self.monitors

    def record(
        self,
        provider: str,
        snapshots: Sequence[RunSnapshot],
        notifications: Iterable[Notification],
        now: float,
        *,
        monitor_id: str | None = None,
    ) -> int:
        """Record what was seen and what was decided about it, in one transaction.

        Returns how many notifications were new (a change decided again after a crash is not
        queued twice: the outbox's unique key makes the insert a no-op).
        """
        new_rows = 0
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if monitor_id is not None and (provider, monitor_id) not in self.monitors:
                db.execute(
                    "INSERT OR IGNORE INTO monitors (provider, monitor_id, first_seen) VALUES (?, ?, ?)",
                    (provider, monitor_id, now),
                )
            run_rows: list[tuple[str, str, str, str, int, float]] = []
            event_rows: list[tuple[str, str, str]] = []
            for s in snapshots:
                prev = self.runs.get((provider, s.run_id))
                seen = prev.events if prev else set()
                fresh = [e.id for e in s.events if e.id not in seen]
                status = prev.status if prev and prev.status in TERMINAL_STATUSES else s.status
                run_rows.append((provider, s.run_id, s.monitor_id, status, int(s.terminal), now))
                event_rows.extend((provider, s.run_id, eid) for eid in fresh)
            db.executemany(
                "INSERT OR REPLACE INTO runs (provider, run_id, monitor_id, status, done, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                run_rows,
            )
            db.executemany(
                "INSERT OR IGNORE INTO run_events (provider, run_id, event_id) VALUES (?, ?, ?)", event_rows
            )
            for n in notifications:
                cur = db.execute(
                    "INSERT OR IGNORE INTO outbox (dedup_key, channel, rule, severity, title, body,"
                    " change_key, detected_at, created_at, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        n.dedup_key,
                        n.channel,
                        n.rule,
                        n.severity,
                        n.title,
                        n.body,
                        n.change_key,
                        n.detected_at,
                        now,
                        now,
                    ),
                )
                new_rows += cur.rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        # Only after the commit: memory never runs ahead of the file.
        if monitor_id is not None:
            self.monitors.add((provider, monitor_id))
        for s in snapshots:
            prev = self.runs.get((provider, s.run_id))
            if prev is None:
                prev = self.runs[(provider, s.run_id)] = RunRecord(s.monitor_id, s.status, s.terminal)
            elif prev.status not in TERMINAL_STATUSES:
                prev.status = s.status
            prev.done = prev.done or s.terminal
            prev.events.update(e.id for e in s.events)
        return new_rows

    def status_counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for (provider, _), rec in self.runs.items():
            out[(provider, rec.status)] = out.get((provider, rec.status), 0) + 1
        return out

    # -- outbox -----------------------------------------------------------------------------------
    def due(self, channel: str, now: float, limit: int = 50) -> list[OutboxRow]:
        rows = self.db.execute(
            "SELECT id, channel, rule, severity, title, body, detected_at, attempts FROM outbox"
            " WHERE state = 'pending' AND channel = ? AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (channel, now, limit),
        ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def next_due_at(self, channel: str) -> float | None:
        row = self.db.execute(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND channel = ?", (channel,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def pending_count(self, channel: str) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND channel = ?", (channel,)
        ).fetchone()
        return int(row[0])

    def oldest_pending_at(self, channel: str) -> float | None:
        """When the oldest pending notification of ``channel`` was decided (for its age gauge)."""
        row = self.db.execute(
            "SELECT MIN(created_at) FROM outbox WHERE state = 'pending' AND channel = ?", (channel,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def pending_channels(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT DISTINCT channel FROM outbox WHERE state = 'pending'")}

    def mark_sent(self, row_id: int, now: float) -> None:
        self.db.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1 WHERE id = ?",
            (now, row_id),
        )

    def mark_failed(self, row_id: int, error: str, next_attempt_at: float | None) -> None:
        """Schedule a retry, or (``next_attempt_at=None``) give up: the row stays as a dead letter."""
        if next_attempt_at is None:
            self.db.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error, row_id),
            )
        else:
            self.db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (error, next_attempt_at, row_id),
            )

    def outbox_summary(self) -> list[tuple[str, str, int]]:
        return [
            (str(c), str(s), int(n))
            for c, s, n in self.db.execute(
                "SELECT channel, state, COUNT(*) FROM outbox GROUP BY channel, state ORDER BY channel, state"
            )
        ]

    def dump_outbox(self) -> list[dict[str, object]]:
        cur = self.db.execute("SELECT * FROM outbox ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]
