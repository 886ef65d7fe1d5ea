"""The SQLite state: its lock, broken or newer files, and migrations of older ones (what every store
does is in test_interfaces.py, run against each)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runwatch.errors import StateCorruptError, StateError, StateLockedError, StateTooNewError
from runwatch.model import RunEvent, RunSnapshot, notification_id
from runwatch.store import MonitorRecord, Notification, State, StuckMark, open_outbox
from runwatch.store.interfaces import Claimed
from runwatch.store.sqlite.database import SCHEMA_VERSION
from tests.conftest import make_alert


def snap(status: str, run_id: str = "r1", events: tuple[RunEvent, ...] = ()) -> RunSnapshot:
    return RunSnapshot("exa", "m1", run_id, status, {"id": run_id, "status": status}, events=events)


def test_a_second_daemon_on_the_same_state_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    code = f"import pathlib, sys; from runwatch.store import State; State(pathlib.Path({str(tmp_path)!r}));"
    code += " print('ok', flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
            with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
                State(tmp_path)
        finally:
            holder.kill()
    State(tmp_path).close()  # the kernel dropped the dead holder's lock


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "runwatch.sqlite3").write_bytes(b"this is not sqlite at all, just text " * 100)
    with pytest.raises(StateCorruptError, match="is not a runwatch state"):
        State(tmp_path)


def test_a_directory_in_place_of_the_state_file(tmp_path: Path) -> None:
    (tmp_path / "runwatch.sqlite3").mkdir()
    with pytest.raises(StateError, match="is a directory"):
        State(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_state_dir(tmp_path: Path) -> None:  # pragma: no cover - CI runs as root
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StateError):
            State(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_a_newer_state_is_refused(tmp_path: Path) -> None:
    State(tmp_path).close()
    db = sqlite3.connect(tmp_path / "runwatch.sqlite3")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StateTooNewError, match="newer runwatch"):
        State(tmp_path)


def test_operator_view_needs_an_existing_state(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no state at"):
        open_outbox(tmp_path)


def test_a_0_1_state_is_migrated_keeping_its_queue(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "runwatch.sqlite3")
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, dedup_key TEXT NOT NULL UNIQUE,
            channel TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, title TEXT NOT NULL,
            body TEXT NOT NULL, change_key TEXT NOT NULL, detected_at REAL NOT NULL, created_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL, last_error TEXT, sent_at REAL);
        INSERT INTO outbox (dedup_key, channel, rule, severity, title, body, change_key, detected_at,
            created_at, next_attempt_at) VALUES ('exa:r1:status:failed|rule|ch', 'ch', 'rule', 'critical',
            'old title', 'old body', 'exa:r1:status:failed', 1.0, 1.0, 1.0);
        """
    )
    db.commit()
    db.close()
    state = State(tmp_path)
    [c] = state.outbox.claim("ch", 2.0, 10, "me", 60)
    assert (c.alert.title, c.alert.body, c.alert.provider, c.alert.run_id) == (
        "old title",
        "old body",
        "exa",
        "r1",
    )
    assert c.alert.id == notification_id("exa:r1:status:failed", "rule", "ch")  # the id 0.2 would derive
    state.close()


def test_a_v2_state_is_migrated_to_v3_keeping_its_runs_and_baselining_monitors_silently(
    tmp_path: Path,
) -> None:
    state = State(tmp_path)
    state.record("exa", [snap("running", "live")], [Notification(make_alert(1))], 1.0, monitor_id="m1")
    state.set_meta("baseline_done:exa", "1")
    state.close()
    # What 0.2 (schema v2) left: no monitor_state table, version 2.
    db = sqlite3.connect(tmp_path / "runwatch.sqlite3")
    db.execute("DROP TABLE monitor_state")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="older runwatch"):
        open_outbox(tmp_path)  # operator commands wait for the daemon to upgrade it
    state = State(tmp_path)
    assert state.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert list(state.runs.unfinished("exa", "m1")) == ["live"]
    assert [c.alert.run_id for c in state.outbox.claim("ch", 2.0, 10, "me", 60)] == ["run_1"]
    assert state.monitors.records() == [] and state.monitors.baselined == set()  # first listing: silent
    rec = MonitorRecord("exa", "m1", "enabled", {"id": "m1", "metadata": {"team": "data"}}, due=100.0)
    state.record("exa", [], [], 3.0, monitor_updates=[rec], baselined="exa")
    state.close()
    again = State(tmp_path)
    assert again.monitors.get("exa", "m1") == rec and again.monitors.baselined == {"exa"}
    assert again.runs.listed_monitors("exa") == ["m1"]
    again.close()


def vm_steps(db: sqlite3.Connection, call: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions one outbox call executes (each row a query visits costs
    some): what grows with the rows it reads, whatever the cache holds."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.set_progress_handler(count, 1)
    try:
        call()
    finally:
        db.set_progress_handler(None, 1)
    return steps


def outbox_costs(state_dir: Path, backlog: int) -> tuple[int, int]:
    """(expire, claim) in VM steps, on ``backlog`` pending rows and ten that max_age has passed for."""
    state = State(state_dir)
    state.record("exa", [], [Notification(make_alert(i, at=0.1)) for i in range(10)], 0.1)
    state.record("exa", [], [Notification(make_alert(i)) for i in range(10, 10 + backlog)], 1.0)
    out = state.outbox
    expire = vm_steps(out.db, lambda: out.expire("ch", created_before=0.5, now=2.0))
    assert out.counts() == {("ch", "dead"): 10, ("ch", "pending"): backlog}
    claimed: list[Claimed] = []
    claim = vm_steps(out.db, lambda: claimed.extend(out.claim("ch", 2.0, 10, "me", 60)))
    assert [c.alert.run_id for c in claimed] == [f"run_{i}" for i in range(10, 20)]
    state.close()
    return expire, claim


def test_claim_and_expire_read_only_the_rows_they_return_or_change(tmp_path: Path) -> None:
    """Run every second (expire) and every batch (claim): their cost must not grow with the backlog."""
    expire_1k, claim_1k = outbox_costs(tmp_path / "1k", 1000)
    expire_10k, claim_10k = outbox_costs(tmp_path / "10k", 10000)
    assert expire_10k <= expire_1k * 1.2, (expire_1k, expire_10k)
    assert claim_10k <= claim_1k * 1.2, (claim_1k, claim_10k)


def test_a_state_with_the_old_pending_index_gets_the_covering_ones(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.record("exa", [], [Notification(make_alert(1))], 1.0)
    state.close()
    # What a state written before looked like: one pending index on (channel, seq).
    db = sqlite3.connect(tmp_path / "runwatch.sqlite3")
    db.execute("DROP INDEX notifications_due")
    db.execute("DROP INDEX notifications_expiry")
    db.execute("CREATE INDEX notifications_pending ON notifications (channel, seq) WHERE state = 'pending'")
    db.commit()
    db.close()
    state = State(tmp_path)
    names = {r[0] for r in state.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"notifications_due", "notifications_expiry"} <= names and "notifications_pending" not in names
    assert [c.alert.run_id for c in state.outbox.claim("ch", 2.0, 10, "me", 60)] == ["run_1"]
    state.close()


def test_a_runs_creation_time_and_the_stuck_thresholds_it_crossed_survive_a_restart(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.record("exa", [snap("created", "seen")], [], 100.0, monitor_id="m1")  # no provider time
    state.record("exa", [snap("running", "seen")], [], 150.0, monitor_id="m1")
    dated = RunSnapshot("exa", "m1", "dated", "running", {"id": "dated"}, created_at=42.0)
    state.record("exa", [dated], [], 160.0, monitor_id="m1")
    stuck = StuckMark("exa", "seen", (30.0,))
    assert state.record("", [], [Notification(make_alert(1))], 170.0, stuck=[stuck]) == 1
    state.close()
    again = State(tmp_path)
    seen, dated_rec = again.runs.runs[("exa", "seen")], again.runs.runs[("exa", "dated")]
    assert (seen.created_at, seen.stuck) == (100.0, {30.0})  # first seen, not its last change
    assert (dated_rec.created_at, dated_rec.stuck) == (42.0, set())  # the provider's time
    again.close()


def test_a_v3_state_is_migrated_to_v4_and_its_runs_count_from_their_last_record(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.record("exa", [snap("running", "live")], [], 100.0, monitor_id="m1")
    state.close()
    # What schema v3 left: no creation times, no stuck thresholds.
    db = sqlite3.connect(tmp_path / "runwatch.sqlite3")
    db.execute("ALTER TABLE runs DROP COLUMN created_at")
    db.execute("DROP TABLE run_stuck")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    state = State(tmp_path)
    assert state.get_meta("schema_version") == "4"
    assert state.runs.runs[("exa", "live")].created_at == 100.0  # updated_at, as before
    dated = RunSnapshot("exa", "m1", "live", "running", {"id": "live"}, created_at=42.0)
    state.record("exa", [dated], [], 200.0, monitor_id="m1")  # a poll brings the provider's time
    state.record("", [], [], 201.0, stuck=[StuckMark("exa", "live", (60.0,))])
    state.close()
    again = State(tmp_path)
    rec = again.runs.runs[("exa", "live")]
    assert (rec.created_at, rec.stuck) == (42.0, {60.0})
    again.close()
