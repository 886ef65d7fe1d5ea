"""The SQLite state of one state directory: the parts opened on one file, one transaction to record.

:class:`SqliteState` is what the daemon opens (taking the directory's lock, creating or migrating the
file); :class:`SqliteShared` (and :func:`open_outbox`) what the operator's commands open beside a
running daemon (no lock, no create).

One daemon per state directory (the lock): a :class:`~runwatch.store.interfaces.Fence` is accepted
and has nothing to check.
"""

from __future__ import annotations

from pathlib import Path

from runwatch.errors import StateError
from runwatch.store.alert_state import OpenAlert
from runwatch.store.interfaces import Fence
from runwatch.store.recording import Recording, Write
from runwatch.store.sqlite.alerts import SqliteAlerts
from runwatch.store.sqlite.database import STATE_FILE, check_readable, open_state
from runwatch.store.sqlite.hints import SqliteHints
from runwatch.store.sqlite.lock import StateLock
from runwatch.store.sqlite.monitors import SqliteMonitors
from runwatch.store.sqlite.outbox import SqliteOutbox
from runwatch.store.sqlite.runs import SqliteRuns
from runwatch.store.sqlite.sends import SqliteSends
from runwatch.store.sqlite.silences import SilenceStore


class SqliteState(Recording):
    """The daemon's state directory, held exclusively: runs, outbox and meta, one transaction to record."""

    hints: SqliteHints

    def __init__(self, state_dir: Path) -> None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state_dir {state_dir}: {exc.strerror}") from None
        self.lock = StateLock(state_dir)
        self.path = state_dir / STATE_FILE
        try:
            self.db = open_state(self.path)
            self.runs = SqliteRuns(self.db)
            self.alerts = SqliteAlerts(self.db)
            self.monitors = SqliteMonitors(self.db)
            self.hints = SqliteHints(self.db)
            self.outbox = SqliteOutbox(self.path)
            self.silences = SilenceStore(self.path)
            self.sends = SqliteSends(self.outbox.db, self.outbox.lock)
        except BaseException:
            self.lock.release()
            raise
        self.outbox.release_all()

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self.silences.close()
        self.outbox.close()
        self.db.close()
        self.lock.release()

    # -- meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str, *, fence: Fence | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def first_meta(self, key: str, value: str) -> str:
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
        found = self.get_meta(key)
        assert found is not None
        return found

    # -- the recorder (see runwatch.store.recording) --------------------------------------------------
    def write(self, w: Write, fence: Fence | None) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            self.runs.write(w.provider, w.snapshots, w.now, w.monitor_id, w.retired, w.catch_up)
            new_rows = SqliteOutbox.enqueue(db, w.notifications, w.now)
            self.alerts.write(w.alert_updates)
            self.monitors.write(w.monitor_updates, w.now, w.baselined)
            self.runs.mark_stuck(w.stuck)
            self.hints.write_consumed(w.hints, w.now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new_rows


class SqliteShared:
    """The outbox, silences and meta keys of an existing state, for the operator's commands (works
    while the daemon runs: no lock, WAL lets both read and write)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.outbox = open_outbox(state_dir)
        try:
            self.silences = SilenceStore(self.path)
        except BaseException:
            self.outbox.close()
            raise

    @property
    def where(self) -> str:
        return str(self.path)

    def get_meta(self, key: str) -> str | None:
        with self.outbox.lock:
            row = self.outbox.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def open_alerts(self) -> list[OpenAlert]:
        with self.outbox.lock:
            return list(SqliteAlerts(self.outbox.db).open.values())

    def close(self) -> None:
        self.silences.close()
        self.outbox.close()


def open_outbox(state_dir: Path) -> SqliteOutbox:
    """The outbox of an existing state, for operator commands (works while the daemon runs)."""
    outbox = SqliteOutbox(state_dir / STATE_FILE)
    try:
        check_readable(outbox.db, state_dir / STATE_FILE)
    except BaseException:
        outbox.close()
        raise
    return outbox
