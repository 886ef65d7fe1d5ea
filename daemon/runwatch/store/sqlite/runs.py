"""Run state in SQLite, and in memory just what a poll needs, so a poll reads no rows."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from runwatch.model import TERMINAL_STATUSES, RunSnapshot
from runwatch.store.interfaces import CatchUp, RunRecord, StuckMark

#: A run row as a record writes it: provider, run, monitor, status, done, updated_at, created_at.
RunRow = tuple[str, str, str, str, int, float, float]


def _key(provider: str, run_id: str) -> int:
    return hash((provider, run_id))


def _created_moved(prev: RunRecord, snap: RunSnapshot) -> bool:
    """The poll brings a creation time other than the recorded one (the provider's, where the record
    had only when runwatch first saw the run)."""
    return snap.created_at is not None and snap.created_at != prev.created_at


def stuck_rows(marks: Sequence[StuckMark]) -> list[tuple[str, str, float]]:
    """The (provider, run, stuck_after) rows for the thresholds runs crossed."""
    return [(m.provider, m.run_id, t) for m in marks for t in m.thresholds]


class SqliteRuns:
    """Runs and monitors seen, and the events already reported; written only inside a record.

    Memory holds what a poll needs and nothing more: the unfinished runs (status, creation time, the
    event ids already reported and the stuck thresholds crossed), an index of them per monitor, and
    for each finished run only a 64-bit hash of its id (to skip it in a listing). A finished run's row
    stays in the file; :meth:`run` reads it from there. So 100,000 finished runs cost a few MB and
    start in a fraction of a second. The memory and how a record changes it are shared with the
    PostgreSQL store (:class:`~runwatch.store.postgres.runs.PgRuns`); only the SQL differs.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.empty()
        self._read(None)

    def empty(self) -> None:
        """Memory with nothing in it (before the first read)."""
        self.runs: dict[tuple[str, str], RunRecord] = {}
        self.monitors: set[tuple[str, str]] = set()
        self._unfinished: dict[tuple[str, str], set[str]] = {}
        self._finished: set[int] = set()
        self._counts: dict[tuple[str, str], int] = {}
        self._catch_up: dict[tuple[str, str], CatchUp] = {}

    def reload(self, provider: str) -> None:
        """Read one provider's runs afresh: another instance led it meanwhile and recorded what this
        memory does not know. (A finished run's hash stays: finished is final.)"""
        self.runs = {k: v for k, v in self.runs.items() if k[0] != provider}
        self._unfinished = {k: v for k, v in self._unfinished.items() if k[0] != provider}
        self._counts = {k: n for k, n in self._counts.items() if k[0] != provider}
        self.monitors = {k for k in self.monitors if k[0] != provider}
        self._catch_up = {k: v for k, v in self._catch_up.items() if k[0] != provider}
        self._read(provider)

    def _read(self, provider: str | None) -> None:
        """What memory holds, of one provider (or all), from the file."""
        db = self.db
        only, args = ("", ()) if provider is None else (" AND provider = ?", (provider,))
        joined = only.replace("provider", "r.provider")
        self.remember(
            db.execute(f"SELECT provider, run_id FROM runs WHERE done = 1{only}", args),
            db.execute(
                f"SELECT provider, status, COUNT(*) FROM runs WHERE 1 = 1{only} GROUP BY provider, status",
                args,
            ),
            db.execute(
                "SELECT provider, run_id, monitor_id, status, COALESCE(created_at, updated_at) FROM runs"
                f" WHERE done = 0{only}",
                args,
            ),
            db.execute(
                "SELECT e.provider, e.run_id, e.event_id FROM run_events e"
                f" JOIN runs r ON r.provider = e.provider AND r.run_id = e.run_id WHERE r.done = 0{joined}",
                args,
            ),
            db.execute(
                "SELECT s.provider, s.run_id, s.stuck_after FROM run_stuck s"
                f" JOIN runs r ON r.provider = s.provider AND r.run_id = s.run_id WHERE r.done = 0{joined}",
                args,
            ),
            db.execute(f"SELECT provider, monitor_id FROM monitors WHERE 1 = 1{only}", args),
            db.execute(
                f"SELECT provider, monitor_id, cursors, baseline FROM catch_up WHERE 1 = 1{only}", args
            ),
        )

    def remember(
        self,
        finished: Iterable[Any],
        counts: Iterable[Any],
        unfinished: Iterable[Any],
        events: Iterable[Any],
        stuck: Iterable[Any],
        monitors: Iterable[Any],
        catch_up: Iterable[Any],
    ) -> None:
        """Add to memory the store's rows (finished runs, counts by status, unfinished runs with their
        creation time, their events and stuck thresholds, monitors seen, catch-up cursors), whatever
        the backend that read them."""
        self._finished.update(_key(p, r) for p, r in finished)
        for p, st, n in counts:
            self._counts[(p, st)] = int(n)
        # A row from before creation times were kept (NULL) counts from its last record until a poll
        # brings the provider's time (the backend's query gives updated_at for it).
        for p, run_id, monitor_id, status, since in unfinished:
            self.runs[(p, run_id)] = RunRecord(monitor_id, status, False, created_at=float(since))
            self._unfinished.setdefault((p, monitor_id), set()).add(run_id)
        for p, run_id, event_id in events:
            rec = self.runs.get((p, run_id))
            if rec is not None:
                rec.events.add(event_id)
        for p, run_id, after in stuck:
            rec = self.runs.get((p, run_id))
            if rec is not None:
                rec.stuck |= {float(after)}
        self.monitors.update((p, m) for p, m in monitors)
        self._catch_up.update(((p, m), CatchUp(tuple(json.loads(c)), bool(b))) for p, m, c, b in catch_up)

    def run(self, provider: str, run_id: str) -> RunRecord | None:
        """The record of a run; a finished one is read from the file (without its event ids)."""
        rec = self.runs.get((provider, run_id))
        if rec is not None or _key(provider, run_id) not in self._finished:
            return rec
        row = self.db.execute(
            "SELECT monitor_id, status FROM runs WHERE provider = ? AND run_id = ?", (provider, run_id)
        ).fetchone()
        return None if row is None else RunRecord(str(row[0]), str(row[1]), True)

    def is_done(self, provider: str, run_id: str) -> bool | None:
        rec = self.runs.get((provider, run_id))
        if rec is not None:
            return rec.done
        return True if _key(provider, run_id) in self._finished else None

    def unfinished(self, provider: str, monitor_id: str) -> Collection[str]:
        return self._unfinished.get((provider, monitor_id), ())

    def listed_monitors(self, provider: str) -> list[str]:
        """Monitors the last recorded listing showed, not deleted (read at the listing's idle pace)."""
        rows = self.db.execute(
            "SELECT monitor_id FROM monitor_state WHERE provider = ? AND COALESCE(status, '') != 'deleted'",
            (provider,),
        )
        return [str(r[0]) for r in rows]

    def knows_monitor(self, provider: str, monitor_id: str) -> bool:
        return (provider, monitor_id) in self.monitors

    def catch_up(self, provider: str, monitor_id: str) -> CatchUp | None:
        """Where reading the monitor's runs goes on next cycle, as the last poll recorded it."""
        return self._catch_up.get((provider, monitor_id))

    def backlog(self, provider: str, monitor_id: str) -> tuple[str, ...]:
        """The cursors the monitor's next poll goes on from (what a source reads of :meth:`catch_up`)."""
        got = self._catch_up.get((provider, monitor_id))
        return got.cursors if got is not None else ()

    def catch_up_changes(self, provider: str, monitor_id: str | None, catch_up: CatchUp | None) -> bool:
        """Whether recording ``catch_up`` would change the one recorded (None: leave it as it is)."""
        if catch_up is None or monitor_id is None:
            return False
        before = self._catch_up.get((provider, monitor_id))
        return before != catch_up if catch_up.cursors else before is not None

    def tracked(self) -> int:
        """Runs in the state, finished or not."""
        return len(self.runs) + len(self._finished)

    def status_counts(self) -> dict[tuple[str, str], int]:
        return {k: n for k, n in self._counts.items() if n}

    def changes(self, provider: str, snapshots: Sequence[RunSnapshot], monitor_id: str | None) -> bool:
        """Whether recording these snapshots would change anything (a new monitor, run, status, event or
        creation time)."""
        if monitor_id is not None and (provider, monitor_id) not in self.monitors:
            return True
        for s in snapshots:
            if _key(provider, s.run_id) in self._finished:
                continue
            prev = self.runs.get((provider, s.run_id))
            if prev is None or prev.status != s.status or s.terminal:
                return True
            if any(e.id not in prev.events for e in s.events) or _created_moved(prev, s):
                return True
        return False

    def write(
        self,
        provider: str,
        snapshots: Sequence[RunSnapshot],
        now: float,
        monitor_id: str | None,
        retired: Sequence[str] = (),
        catch_up: CatchUp | None = None,
    ) -> None:
        """The rows for what a poll saw; the caller holds the transaction."""
        db = self.db
        if catch_up is not None and self.catch_up_changes(provider, monitor_id, catch_up):
            if catch_up.cursors:
                db.execute(
                    "INSERT OR REPLACE INTO catch_up (provider, monitor_id, cursors, baseline)"
                    " VALUES (?, ?, ?, ?)",
                    (provider, monitor_id, json.dumps(catch_up.cursors), int(catch_up.baseline)),
                )
            else:
                db.execute(
                    "DELETE FROM catch_up WHERE provider = ? AND monitor_id = ?", (provider, monitor_id)
                )
        if retired:
            db.executemany(
                "UPDATE runs SET done = 1, updated_at = ? WHERE provider = ? AND run_id = ?",
                [(now, provider, r) for r in retired],
            )
        if monitor_id is not None and (provider, monitor_id) not in self.monitors:
            db.execute(
                "INSERT OR IGNORE INTO monitors (provider, monitor_id, first_seen) VALUES (?, ?, ?)",
                (provider, monitor_id, now),
            )
        run_rows, event_rows = self.rows(provider, snapshots, now)
        db.executemany(
            "INSERT OR REPLACE INTO runs (provider, run_id, monitor_id, status, done, updated_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            run_rows,
        )
        db.executemany(
            "INSERT OR IGNORE INTO run_events (provider, run_id, event_id) VALUES (?, ?, ?)", event_rows
        )

    def rows(
        self, provider: str, snapshots: Sequence[RunSnapshot], now: float
    ) -> tuple[list[RunRow], list[tuple[str, str, str]]]:
        """The run rows (:data:`RunRow`) and event rows (provider, run, event) that recording these
        snapshots writes: only what is new."""
        run_rows: list[RunRow] = []
        event_rows: list[tuple[str, str, str]] = []
        for s in snapshots:
            if _key(provider, s.run_id) in self._finished:
                continue  # terminal is final: a finished run's row is never written again
            prev = self.runs.get((provider, s.run_id))
            seen = prev.events if prev else set()
            fresh = [(provider, s.run_id, e.id) for e in s.events if e.id not in seen]
            if (
                prev is not None and prev.status == s.status and not s.terminal and not fresh
                and not _created_moved(prev, s)
            ):  # fmt: skip
                continue  # polled again, nothing new: no write (updated_at keeps its last change)
            status = prev.status if prev and prev.status in TERMINAL_STATUSES else s.status
            created = s.created_at if s.created_at is not None else prev.created_at if prev else now
            run_rows.append((provider, s.run_id, s.monitor_id, status, int(s.terminal), now, created))
            event_rows.extend(fresh)
        return run_rows, event_rows

    def mark_stuck(self, marks: Sequence[StuckMark]) -> None:
        """The rows for the stuck thresholds runs crossed; the caller holds the transaction."""
        self.db.executemany(
            "INSERT OR IGNORE INTO run_stuck (provider, run_id, stuck_after) VALUES (?, ?, ?)",
            stuck_rows(marks),
        )

    def apply_stuck(self, marks: Sequence[StuckMark]) -> None:
        """After the commit."""
        for m in marks:
            rec = self.runs.get((m.provider, m.run_id))
            if rec is not None:
                rec.stuck |= set(m.thresholds)

    def apply(
        self,
        provider: str,
        snapshots: Sequence[RunSnapshot],
        monitor_id: str | None,
        retired: Sequence[str] = (),
        now: float = 0.0,
        catch_up: CatchUp | None = None,
    ) -> None:
        """After the commit: memory never runs ahead of the file."""
        if monitor_id is not None:
            self.monitors.add((provider, monitor_id))
            if catch_up is not None and catch_up.cursors:
                self._catch_up[(provider, monitor_id)] = catch_up
            elif catch_up is not None:
                self._catch_up.pop((provider, monitor_id), None)
        counts = self._counts
        for s in snapshots:
            key = (provider, s.run_id)
            if _key(provider, s.run_id) in self._finished:
                continue  # finished before: its row did not change status (terminal is final)
            prev = self.runs.get(key)
            if prev is None:
                created = s.created_at if s.created_at is not None else now
                prev = self.runs[key] = RunRecord(s.monitor_id, s.status, False, created_at=created)
                counts[(provider, s.status)] = counts.get((provider, s.status), 0) + 1
            elif prev.status not in TERMINAL_STATUSES and prev.status != s.status:
                counts[(provider, prev.status)] -= 1
                counts[(provider, s.status)] = counts.get((provider, s.status), 0) + 1
                prev.status = s.status
            prev.events.update(e.id for e in s.events)
            if s.created_at is not None:
                prev.created_at = s.created_at
            if s.terminal or prev.status in TERMINAL_STATUSES:
                self._finish(provider, s.run_id, prev)
            else:
                self._unfinished.setdefault((provider, prev.monitor_id), set()).add(s.run_id)
        for run_id in retired:
            rec = self.runs.get((provider, run_id))
            if rec is not None:
                self._finish(provider, run_id, rec)

    def _finish(self, provider: str, run_id: str, rec: RunRecord) -> None:
        """A run is done: out of memory but for its id's hash."""
        self.runs.pop((provider, run_id), None)
        self._finished.add(_key(provider, run_id))
        key = (provider, rec.monitor_id)
        left = self._unfinished.get(key)
        if left is not None:
            left.discard(run_id)
            if not left:
                del self._unfinished[key]

    def purge_finished(self, finished_before: float) -> int:
        """Forget runs that finished before ``finished_before`` (and their events); returns how many."""
        db = self.db
        gone = db.execute(
            "SELECT provider, run_id, status FROM runs WHERE done = 1 AND updated_at < ?", (finished_before,)
        ).fetchall()
        if not gone:
            return 0
        db.execute("BEGIN IMMEDIATE")
        try:
            keys = [(p, r) for p, r, _ in gone]
            db.executemany("DELETE FROM run_events WHERE provider = ? AND run_id = ?", keys)
            db.executemany("DELETE FROM run_stuck WHERE provider = ? AND run_id = ?", keys)
            db.executemany("DELETE FROM runs WHERE provider = ? AND run_id = ?", keys)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.forget(gone)
        return len(gone)

    def forget(self, gone: Sequence[tuple[str, str, str]]) -> None:
        """After the commit that deleted these runs (provider, run id, status): out of memory too."""
        for provider, run_id, status in gone:
            self._finished.discard(_key(provider, run_id))
            self._counts[(provider, status)] = self._counts.get((provider, status), 1) - 1
