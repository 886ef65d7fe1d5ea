"""The pure diff and the SQLite store: each change once, across restarts."""

from __future__ import annotations

from pathlib import Path

from runwatch.model import ChangeKind, RunEvent, RunSnapshot
from runwatch.state import Notification, RunRecord, Store, diff


def snap(
    status: str, events: tuple[RunEvent, ...] = (), run_id: str = "r1", reason: str | None = None
) -> RunSnapshot:
    return RunSnapshot("exa", "m1", run_id, status, {"id": run_id, "status": status}, reason, events=events)


def ev(eid: str, ts: int, name: str) -> RunEvent:
    return RunEvent(eid, ts, name, f"{name} happened")


def test_first_sight_reports_status_with_empty_from() -> None:
    [c] = diff(None, snap("running"), 10.0)
    assert (c.kind, c.from_status, c.to_status, c.detected_at) == (
        ChangeKind.RUN_STATUS,
        None,
        "running",
        10.0,
    )


def test_jumped_transition_is_one_change_from_last_recorded() -> None:
    [c] = diff(RunRecord("m1", "created", False), snap("failed", reason="quota"), 1.0)
    assert (c.from_status, c.to_status, c.failed_reason) == ("created", "failed", "quota")
    assert c.key == "exa:r1:status:failed"


def test_same_status_is_no_change_and_terminal_is_final() -> None:
    assert diff(RunRecord("m1", "running", False), snap("running"), 1.0) == []
    assert diff(RunRecord("m1", "failed", True), snap("completed"), 1.0) == []


def test_events_once_each_in_ts_order_status_after_when_terminal() -> None:
    events = (ev("e3", 300, "run_complete"), ev("e1", 100, "work_received"), ev("e2", 200, "node_start"))
    prev = RunRecord("m1", "running", False, {"e1"})
    changes = diff(prev, snap("completed", events), 1.0)
    assert [(c.kind, c.event.name if c.event else c.to_status) for c in changes] == [
        (ChangeKind.RUN_EVENT, "node_start"),
        (ChangeKind.RUN_EVENT, "run_complete"),
        (ChangeKind.RUN_STATUS, "completed"),
    ]


def test_new_run_status_comes_before_its_first_events() -> None:
    changes = diff(None, snap("running", (ev("e1", 1, "work_received"),)), 1.0)
    assert [c.kind for c in changes] == [ChangeKind.RUN_STATUS, ChangeKind.RUN_EVENT]


def test_store_survives_reopen_and_outbox_dedups(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    s1 = snap("running", (ev("e1", 1, "work_received"),))
    note = Notification("ch", "rule", "critical", "t", "b", "exa:r1:status:running", 1.0)
    assert store.record("exa", [s1], [note], 5.0, monitor_id="m1") == 1
    store.close()

    again = Store(path)
    rec = again.run("exa", "r1")
    assert rec is not None and (rec.status, rec.done, rec.events) == ("running", False, {"e1"})
    assert again.knows_monitor("exa", "m1")
    # The same decision recorded again (say, after a crash before the cursor moved) is not queued twice.
    assert again.record("exa", [s1], [note], 6.0, monitor_id="m1") == 0
    rows = again.due("ch", 10.0)
    assert [r.title for r in rows] == ["t"]
    again.mark_failed(rows[0].id, "boom", 20.0)
    assert again.due("ch", 10.0) == [] and again.next_due_at("ch") == 20.0
    again.mark_sent(rows[0].id, 21.0)
    assert again.pending_count("ch") == 0
    assert again.outbox_summary() == [("ch", "sent", 1)]


def test_terminal_status_not_overwritten(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    store.record("exa", [snap("failed")], [], 1.0)
    store.record("exa", [snap("running")], [], 2.0)
    rec = store.run("exa", "r1")
    assert rec is not None and (rec.status, rec.done) == ("failed", True)
    store.close()
    rec2 = Store(tmp_path / "s.sqlite3").run("exa", "r1")
    assert rec2 is not None and rec2.status == "failed"
