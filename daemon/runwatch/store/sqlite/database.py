"""Opening the SQLite state file: schema, migrations, and every way it can fail as one clear error.

WAL mode with ``synchronous=NORMAL``: a commit does not fsync, so a power cut may lose the last
moments (never corrupt the file); a process crash (``kill -9``) loses nothing committed. Readers
(``runwatch outbox list``) never block the daemon and the daemon never blocks them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from runwatch.errors import StateCorruptError, StateError, StateMissingError, StateTooNewError
from runwatch.model import ALERT_VERSION

SCHEMA_VERSION = 4
STATE_FILE = "runwatch.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS monitors (
    provider TEXT NOT NULL, monitor_id TEXT NOT NULL, first_seen REAL NOT NULL,
    PRIMARY KEY (provider, monitor_id)
) WITHOUT ROWID;
-- v3: each monitor as its provider's listing last showed it, and what the missed-run check decided.
CREATE TABLE IF NOT EXISTS monitor_state (
    provider TEXT NOT NULL, monitor_id TEXT NOT NULL, status TEXT, raw TEXT NOT NULL,
    due REAL, next_due REAL, last_started REAL, missed_due REAL, missed_grace REAL NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (provider, monitor_id)
) WITHOUT ROWID;
-- Where reading a monitor's runs goes on next cycle (a catch-up's cursors, newest first, as JSON), and
-- whether they lead into the history a first start is still recording (runs read from them are not
-- news). Written with the runs a poll read, in its transaction: a restart goes on where it stopped.
-- An older runwatch ignores the table (and forgets the catch-up, as it always did): same version.
CREATE TABLE IF NOT EXISTS catch_up (
    provider TEXT NOT NULL, monitor_id TEXT NOT NULL, cursors TEXT NOT NULL, baseline INTEGER NOT NULL,
    PRIMARY KEY (provider, monitor_id)
) WITHOUT ROWID;
-- Verified pushes (store/hints.py): written before the push is answered, consumed (consumed_at) in the
-- transaction that records the read they asked for; a consumed row keeps its event id for dedupe until
-- retention. An older runwatch ignores the table (pushes are hints; polling finds the same): same version.
CREATE TABLE IF NOT EXISTS push_hints (
    provider TEXT NOT NULL, event_id TEXT NOT NULL, monitor_id TEXT NOT NULL, run_id TEXT NOT NULL,
    kind TEXT NOT NULL, received_at REAL NOT NULL, consumed_at REAL,
    PRIMARY KEY (provider, event_id)
) WITHOUT ROWID;
-- A rate-limited channel's last send times (store/sqlite/sends.py: a ring of at most the rate's count,
-- packed 8-byte floats, and the index of the oldest): a restart frees no slot of a rate. An older
-- runwatch ignores the table: same version.
CREATE TABLE IF NOT EXISTS send_windows (
    channel TEXT PRIMARY KEY, sends BLOB NOT NULL, head INTEGER NOT NULL
) WITHOUT ROWID;
-- v4: created_at, when the run was created (the provider's time, else when first seen): what a
-- run.stuck rule's stuck_after counts from, across restarts (NULL in rows from before: updated_at).
CREATE TABLE IF NOT EXISTS runs (
    provider TEXT NOT NULL, run_id TEXT NOT NULL, monitor_id TEXT NOT NULL,
    status TEXT NOT NULL, done INTEGER NOT NULL, updated_at REAL NOT NULL, created_at REAL,
    PRIMARY KEY (provider, run_id)
) WITHOUT ROWID;
-- v4: the stuck_after thresholds a run has crossed (its run.stuck changes already decided), written in
-- the transaction that queues the notifications they caused; forgotten with the run.
CREATE TABLE IF NOT EXISTS run_stuck (
    provider TEXT NOT NULL, run_id TEXT NOT NULL, stuck_after REAL NOT NULL,
    PRIMARY KEY (provider, run_id, stuck_after)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_events (
    provider TEXT NOT NULL, run_id TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (provider, run_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, title TEXT NOT NULL,
    alert TEXT NOT NULL,
    detected_at REAL NOT NULL, created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL, last_error TEXT, finished_at REAL,
    claimed_by TEXT, claimed_until REAL
);
-- Partial indexes: a row leaves the pending ones when it is sent, so the claim reads only what is queued
-- and recording an outcome touches few pages. Each holds every column its queries test (`state` too:
-- SQLite does not count a partial index's own condition as covered), so the claim (notifications_due)
-- and max_age (notifications_expiry) find their rows in the index alone and read from the table only
-- the rows they return or change. A scan of the table would read every pending row whole: the columns
-- after `alert` lie behind the alert's overflow pages.
-- The pending index of schema 3 as first released, (channel, seq), gives way to these two. Indexes
-- only, so the schema version stays: an older runwatch opening the file makes its own again, and this
-- one drops it again.
DROP INDEX IF EXISTS notifications_pending;
CREATE INDEX IF NOT EXISTS notifications_due
    ON notifications (channel, seq, next_attempt_at, claimed_until, state) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_expiry
    ON notifications (channel, created_at, state) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_finished ON notifications (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_done ON runs (done, updated_at);
"""


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A configured connection to the state file, or StateError saying what is wrong and what to do."""
    if not create and not path.exists():
        raise StateMissingError(f"no state at {path}: has the daemon run with this config (state_dir)?")
    if path.exists() and path.is_dir():
        raise StateError(f"state file {path} is a directory; move it away or set another state_dir")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as exc:
        raise _explain(path, exc) from None
    except OSError as exc:
        raise StateError(f"cannot use state directory {path.parent}: {exc.strerror}") from None
    return db


def open_state(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) the state file for the daemon."""
    db = connect(path, create=True)
    try:
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise StateTooNewError(
                f"state {path} was written by a newer runwatch (schema {version} > {SCHEMA_VERSION}); "
                "upgrade runwatch, or point state_dir at a new directory"
            )
        if version is None or version < SCHEMA_VERSION:
            _migrate(db, version)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _explain(path, exc) from None
    except StateError:
        db.close()
        raise
    return db


def check_readable(db: sqlite3.Connection, path: Path) -> None:
    """For commands that only read: the file is a runwatch state this version understands."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _explain(path, exc) from None
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StateTooNewError(f"state {path} was written by a newer runwatch (schema {version})")
    if version < SCHEMA_VERSION:
        raise StateError(f"state {path} is from an older runwatch; start the daemon once to upgrade it")


def _explain(path: Path, exc: sqlite3.DatabaseError) -> StateError:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return StateCorruptError(
            f"state file {path} is not a runwatch state (SQLite) file: {text}; "
            "move it away (runwatch then starts afresh) or restore a backup"
        )
    if "readonly" in text or "read-only" in text:
        return StateError(f"state file {path} is read-only ({text}); runwatch needs to write its state_dir")
    if "unable to open" in text:
        return StateError(f"cannot open state file {path} ({text}); check state_dir and its permissions")
    return StateError(f"state file {path}: {text}")


def _migrate(db: sqlite3.Connection, version: int | None) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == 1:
            _v1_outbox_to_notifications(db)
        # v2 -> v3: the monitor_state table only (created empty by the schema above); the first
        # listing after the upgrade is a silent baseline (meta ``monitors_baseline_done:<provider>``).
        # v3 -> v4: runs.created_at (NULL: counted from updated_at until a poll brings the provider's
        # time) and the run_stuck table (created empty above: no threshold crossed yet).
        if not any(row[1] == "created_at" for row in db.execute("PRAGMA table_info(runs)")):
            db.execute("ALTER TABLE runs ADD COLUMN created_at REAL")
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _v1_outbox_to_notifications(db: sqlite3.Connection) -> None:
    """0.1.0 kept rendered text only; its rows become alerts with what they had."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone():
        return
    import hashlib

    rows = db.execute(
        "SELECT dedup_key, channel, rule, severity, title, body, change_key, detected_at, created_at,"
        " state, attempts, next_attempt_at, last_error, sent_at FROM outbox ORDER BY id"
    ).fetchall()
    for (
        dedup,
        channel,
        rule,
        sev,
        title,
        body,
        change_key,
        detected,
        created,
        state,
        att,
        nxt,
        err,
        sent,
    ) in rows:
        nid = "msg_" + hashlib.sha256(str(dedup).encode()).hexdigest()[:32]
        provider, _, rest = str(change_key).partition(":")
        run_id, _, kind = rest.partition(":")
        alert = {
            "id": nid, "version": ALERT_VERSION, "type": f"run.{kind.split(':')[0]}" if kind else "",
            "channel": channel, "provider": provider, "run_id": run_id, "rule": rule, "severity": sev,
            "title": title, "body": body, "detected_at": detected, "occurred_at": detected,
        }  # fmt: skip
        db.execute(
            "INSERT OR IGNORE INTO notifications (id, channel, rule, severity, title, alert, detected_at,"
            " created_at, state, attempts, next_attempt_at, last_error, finished_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                nid,
                channel,
                rule,
                sev,
                title,
                json.dumps(alert),
                detected,
                created,
                state,
                att,
                nxt,
                err,
                sent,
            ),
        )
    db.execute("DROP TABLE outbox")
