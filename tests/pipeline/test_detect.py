"""The pure diff: each change once, in the order it happened, with the provider's own time."""

from __future__ import annotations

from runwatch.model import ChangeKind, RunEvent, RunSnapshot
from runwatch.pipeline.detect import diff
from runwatch.store import RunRecord


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


def test_occurred_at_comes_from_the_provider_when_it_says() -> None:
    s = RunSnapshot("exa", "m1", "r1", "failed", {}, "quota", finished_at=90.0, changed_at=90.0)
    [c] = diff(RunRecord("m1", "running", False), s, 100.0)
    assert (c.occurred_at, c.detected_at) == (90.0, 100.0)
    [e] = diff(RunRecord("m1", "running", False), snap("running", (ev("e1", 5_000, "node_start"),)), 100.0)
    assert e.occurred_at == 5.0


def test_an_event_is_not_a_status_change() -> None:
    [e] = diff(RunRecord("m1", "running", False), snap("running", (ev("e1", 1, "node_start"),)), 1.0)
    assert (e.kind, e.to_status) == (ChangeKind.RUN_EVENT, None)
