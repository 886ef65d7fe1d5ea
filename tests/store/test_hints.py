"""Pushes waiting for their read: durable when added, once per event id, consumed only by the record of
a read that began after them and read what they named."""

from __future__ import annotations

from pathlib import Path

from runwatch.model import RunSnapshot
from runwatch.store import Hint, State


def hint(event: str = "evt_1", monitor: str = "m1", run: str = "r1", at: float = 10.0) -> Hint:
    return Hint("exa", event, monitor, run, "run.completed", at)


def snap(run_id: str, status: str = "completed", monitor: str = "m1") -> RunSnapshot:
    return RunSnapshot("exa", monitor, run_id, status, {"id": run_id, "status": status})


def test_a_hint_is_durable_once_added_and_its_event_id_acts_once(tmp_path: Path) -> None:
    state = State(tmp_path)
    assert state.hints.add(hint())
    assert not state.hints.add(hint())  # Exa's retry of the same event
    state.close()  # nothing else was written: the add alone committed it
    again = State(tmp_path)
    assert again.hints.pending("exa") == [hint()]
    assert not again.hints.add(hint())  # still a repeat after a restart
    again.close()


def test_a_read_that_began_after_the_push_consumes_it_in_its_record(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.hints.add(hint(at=10.0))
    seen: list[tuple[str, float]] = []
    state.hints.on_read = lambda h, now: seen.append((h.event_id, now))
    # A read that began before the push came cannot answer it (it may predate what the push says).
    state.record("exa", [snap("r1")], [], 12.0, monitor_id="m1", hints_before=9.0)
    assert state.hints.pending("exa") == [hint(at=10.0)]
    # Not a read (a listing, the clock): no hint is touched.
    state.record("exa", [snap("r1")], [], 12.0, monitor_id="m1")
    assert state.hints.pending("exa")
    # The run recorded finished already (by the record above): a later read answers it.
    state.record("exa", [], [], 13.0, monitor_id="m1", hints_before=11.0)
    assert state.hints.pending("exa") == []
    assert seen == []  # consumed, but the read did not bring that run: not a push-to-read time
    state.close()
    assert State(tmp_path).hints.pending("exa") == []  # consumed in the file too


def test_a_run_hint_waits_for_its_run_and_a_monitor_hint_for_any_read(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.hints.add(hint("evt_run", run="r2", at=1.0))
    state.hints.add(Hint("exa", "evt_mon", "m1", "", "monitor", 1.0))
    seen: list[str] = []
    state.hints.on_read = lambda h, now: seen.append(h.event_id)
    # The read shows another run: the monitor-wide hint is answered, the run's is not (not visible yet).
    assert state.record("exa", [snap("r1", "running")], [], 2.0, monitor_id="m1", hints_before=2.0) == 0
    assert [h.event_id for h in state.hints.pending("exa")] == ["evt_run"]
    # A read of the same monitor that saw nothing new still consumes what it answers.
    state.record("exa", [snap("r1", "running"), snap("r2", "created")], [], 3.0, monitor_id="m1",
                 hints_before=3.0)  # fmt: skip
    assert state.hints.pending("exa") == []
    assert seen == ["evt_mon", "evt_run"]
    state.close()


def test_other_monitors_reads_leave_a_hint_alone(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.hints.add(hint(monitor="m1", run="r9"))
    state.record("exa", [snap("r9", monitor="m2")], [], 20.0, monitor_id="m2", hints_before=20.0)
    assert len(state.hints.pending("exa")) == 1
    state.close()


def test_expired_hints_are_given_up_and_purged_ones_forgotten(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.hints.add(hint("old", at=1.0))
    state.hints.add(hint("new", at=50.0))
    assert [h.event_id for h in state.hints.expire("exa", received_before=10.0, now=60.0)] == ["old"]
    assert [h.event_id for h in state.hints.pending("exa")] == ["new"]
    assert not state.hints.add(hint("old", at=61.0))  # given up, still remembered: not a new push
    assert state.hints.purge(consumed_before=61.0) == 1
    assert state.hints.add(hint("old", at=62.0))  # forgotten: new again
    state.close()


def test_renew_makes_a_consumed_repeat_a_new_push_but_not_a_waiting_one(tmp_path: Path) -> None:
    state = State(tmp_path)
    h = Hint("olostep", "body_1", "monitor_a", "", "monitor", 1.0)
    assert state.hints.add(h, renew=True)
    assert not state.hints.add(h, renew=True)  # waiting: a repeat
    state.record("olostep", [], [], 2.0, monitor_id="monitor_a", hints_before=2.0)
    assert state.hints.pending("olostep") == []
    assert state.hints.add(Hint("olostep", "body_1", "monitor_a", "", "monitor", 3.0), renew=True)
    assert [x.received_at for x in state.hints.pending("olostep")] == [3.0]
    state.close()
