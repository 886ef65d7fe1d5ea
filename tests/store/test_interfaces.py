"""The state's interfaces, one suite for every store: SQLite in a state directory and a real PostgreSQL.

Each test opens the store the daemon opens (:func:`runwatch.store.open_state` on a Location) and
reopens it where what matters is what survives; the rows are counted with each backend's own SQL only
where no interface shows them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runwatch.errors import FencedOut, StateMissingError
from runwatch.model import RunEvent, RunSnapshot
from runwatch.store import (
    CatchUp,
    Fence,
    Hint,
    Location,
    MonitorRecord,
    Notification,
    StuckMark,
    open_leases,
    open_shared,
    open_state,
)
from runwatch.store.alert_state import AlertUpdate, OpenAlert
from runwatch.store.interfaces import Store
from tests.conftest import make_alert

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """Where a fresh, empty state is: a state directory, or an empty database."""
    if request.param == "sqlite":
        return Location(tmp_path / "state")
    return Location(tmp_path / "state", request.getfixturevalue("pg_url"))


@pytest.fixture
def state(where: Location) -> Iterator[Store]:
    st = open_state(where)
    yield st
    st.close()


def reopen(st: Store, where: Location) -> Store:
    st.close()
    return open_state(where)


def rows(where: Location, sql: str) -> int:
    """A count the interfaces do not show, in the backend's own SQL (``{t}``: the table prefix)."""
    if where.url is None:
        db = sqlite3.connect(where.state_dir / "runwatch.sqlite3")
        try:
            return int(db.execute(sql.format(t="")).fetchone()[0])
        finally:
            db.close()
    with psycopg.connect(where.url) as conn:
        row = conn.execute(sql.format(t="runwatch_")).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return int(row[0])


def snap(status: str, run_id: str = "r1", events: tuple[RunEvent, ...] = ()) -> RunSnapshot:
    return RunSnapshot("exa", "m1", run_id, status, {"id": run_id, "status": status}, events=events)


# -- runs and the recorder ----------------------------------------------------------------------------
def test_runs_and_outbox_survive_reopen_and_a_decision_is_queued_once(state: Store, where: Location) -> None:
    s1 = snap("running", events=(RunEvent("e1", 1, "work_received", "w"),))
    note = Notification(make_alert(1))
    assert state.record("exa", [s1], [note], 5.0, monitor_id="m1") == 1
    again = reopen(state, where)
    rec = again.runs.run("exa", "r1")
    assert rec is not None and (rec.status, rec.done, rec.events) == ("running", False, {"e1"})
    assert again.runs.knows_monitor("exa", "m1")
    # The same decision recorded again (after a crash before the record) is not queued twice.
    assert again.record("exa", [s1], [note], 6.0, monitor_id="m1") == 0
    [claimed] = again.outbox.claim("ch", 10.0, 10, "me", 60)
    assert claimed.alert == note.alert  # the alert comes back as data, whole
    again.close()


def test_a_poll_that_saw_nothing_new_writes_nothing(state: Store, where: Location) -> None:
    state.record("exa", [snap("running")], [], 1.0, monitor_id="m1")
    assert rows(where, "SELECT max(updated_at) FROM {t}runs") == 1
    state.record("exa", [snap("running")], [], 2.0, monitor_id="m1")
    assert rows(where, "SELECT max(updated_at) FROM {t}runs") == 1  # not written again


def test_terminal_status_is_not_overwritten(state: Store, where: Location) -> None:
    state.record("exa", [snap("failed")], [], 1.0)
    state.record("exa", [snap("running")], [], 2.0)
    rec = state.runs.run("exa", "r1")
    assert rec is not None and (rec.status, rec.done) == ("failed", True)
    again = reopen(state, where)
    rec2 = again.runs.run("exa", "r1")
    assert rec2 is not None and rec2.status == "failed"
    again.close()


def test_finished_runs_leave_memory_but_stay_known(state: Store, where: Location) -> None:
    state.record("exa", [snap("failed", f"f{i}") for i in range(500)], [], 1.0, monitor_id="m1")
    state.record("exa", [snap("running", "live")], [], 1.0, monitor_id="m1")
    runs = state.runs
    assert set(runs.runs) == {("exa", "live")}  # only the unfinished run is held in memory
    assert runs.is_done("exa", "f7") is True and runs.is_done("exa", "live") is False
    assert runs.is_done("exa", "never-seen") is None
    assert list(runs.unfinished("exa", "m1")) == ["live"]
    assert runs.tracked() == 501
    assert runs.status_counts() == {("exa", "failed"): 500, ("exa", "running"): 1}
    rec = runs.run("exa", "f7")  # read from the store on demand
    assert rec is not None and (rec.status, rec.done) == ("failed", True)
    state.record("exa", [snap("completed", "live")], [], 2.0, monitor_id="m1")
    assert state.runs.runs == {} and list(state.runs.unfinished("exa", "m1")) == []
    assert state.runs.status_counts() == {("exa", "failed"): 500, ("exa", "completed"): 1}
    again = reopen(state, where)
    assert again.runs.runs == {} and again.runs.tracked() == 501
    assert again.runs.is_done("exa", "live") is True
    assert again.runs.status_counts() == {("exa", "failed"): 500, ("exa", "completed"): 1}
    again.close()


def test_a_retired_run_is_done_without_a_status_change(state: Store, where: Location) -> None:
    state.record("exa", [snap("running", "ghost")], [], 1.0, monitor_id="m1")
    state.record("exa", [], [], 2.0, monitor_id="m1", retired=["ghost"])
    assert state.runs.is_done("exa", "ghost") is True
    assert list(state.runs.unfinished("exa", "m1")) == []
    rec = state.runs.run("exa", "ghost")
    assert rec is not None and rec.status == "running"  # no invented transition
    again = reopen(state, where)
    assert list(again.runs.unfinished("exa", "m1")) == []
    again.close()


def test_finished_runs_are_forgotten_after_keep_finished(state: Store, where: Location) -> None:
    state.record("exa", [snap("completed", "old", (RunEvent("e", 1, "x", "y"),))], [], 100.0)
    state.record("exa", [snap("running", "live")], [], 100.0)
    state.record("exa", [snap("completed", "new")], [], 500.0)
    assert state.runs.purge_finished(200.0) == 1
    assert state.runs.run("exa", "old") is None and state.runs.is_done("exa", "old") is None
    assert state.runs.run("exa", "live") is not None and state.runs.run("exa", "new") is not None
    assert state.runs.status_counts() == {("exa", "running"): 1, ("exa", "completed"): 1}
    assert rows(where, "SELECT count(*) FROM {t}run_events") == 0
    again = reopen(state, where)
    assert again.runs.run("exa", "old") is None
    again.close()


def test_catch_up_cursors_are_kept_with_the_runs_and_dropped_when_read_through(
    state: Store, where: Location
) -> None:
    state.record("exa", [snap("running")], [], 1.0, monitor_id="m1", catch_up=CatchUp(("c2", "c1"), True))
    again = reopen(state, where)
    assert again.runs.catch_up("exa", "m1") == CatchUp(("c2", "c1"), True)
    assert again.runs.backlog("exa", "m1") == ("c2", "c1")
    again.record("exa", [], [], 2.0, monitor_id="m1", catch_up=CatchUp())  # read through
    assert again.runs.catch_up("exa", "m1") is None
    third = reopen(again, where)
    assert third.runs.catch_up("exa", "m1") is None and third.runs.backlog("exa", "m1") == ()
    third.close()


# -- the outbox ---------------------------------------------------------------------------------------
def test_a_claimed_row_is_not_claimed_again_until_released_or_its_claim_runs_out(state: Store) -> None:
    state.record("exa", [], [Notification(make_alert(i)) for i in range(3)], 1.0)
    out = state.outbox
    first = out.claim("ch", 2.0, 2, "a", lease=60)
    assert [c.alert.run_id for c in first] == ["run_0", "run_1"]  # oldest first
    second = out.claim("ch", 2.0, 10, "b", lease=60)
    assert [c.alert.run_id for c in second] == ["run_2"]
    assert out.claim("ch", 2.0, 10, "b", lease=60) == []
    out.release([first[1].seq])
    assert [c.alert.run_id for c in out.claim("ch", 2.0, 10, "b", lease=60)] == ["run_1"]
    # A claimant that vanished: its claim runs out and the row is claimable again.
    assert [c.alert.run_id for c in out.claim("ch", 100.0, 10, "b", lease=60)] == ["run_0", "run_1", "run_2"]


def test_a_renewed_claim_holds_and_only_its_owner_renews_it(state: Store) -> None:
    state.record("exa", [], [Notification(make_alert(i)) for i in range(2)], 1.0)
    out = state.outbox
    mine = out.claim("ch", 1.0, 1, "a", lease=60)
    theirs = out.claim("ch", 1.0, 1, "b", lease=60)
    assert out.renew([mine[0].seq, theirs[0].seq], "a", 200.0) == {mine[0].seq}
    assert [c.id for c in out.claim("ch", 100.0, 10, "c", lease=60)] == [theirs[0].id]  # b's ran out at 61
    out.delivered(mine[0].seq, 150.0)
    assert out.renew([mine[0].seq], "a", 300.0) == set()  # settled: nothing to hold


def test_outcomes_retry_dead_expire_replay_purge(state: Store) -> None:
    out = state.outbox
    state.record("exa", [], [Notification(make_alert(i)) for i in range(4)], 1.0)
    c = out.claim("ch", 1.0, 10, "me", 60)
    out.delivered(c[0].seq, 2.0)
    out.retry(c[1].seq, "http_5xx: HTTP 503", 50.0)
    out.dead(c[2].seq, "http_4xx: HTTP 410", 3.0)
    out.release([c[3].seq])
    assert out.counts() == {("ch", "sent"): 1, ("ch", "pending"): 2, ("ch", "dead"): 1}
    assert out.next_due("ch") == 1.0 and out.next_due("other") is None
    assert out.pending_count(["ch", "other"]) == 2 and out.pending_count([]) == 0
    assert out.oldest_pending() == {"ch": 1.0}
    assert out.channels() == {"ch"}
    assert [x.alert.run_id for x in out.claim("ch", 10.0, 10, "me", 60)] == ["run_3"]
    # Expiry: pending rows decided before the cut-off go dead, with the last error kept.
    assert out.expire("ch", created_before=5.0, now=50.0) == 1  # run_1 (run_3 is claimed until 70)
    items = {i.id: i for i in out.items(state=None, channel=None, limit=None)}
    assert items[c[1].alert.id].state == "dead"
    assert "expired" in (items[c[1].alert.id].last_error or "")
    assert "HTTP 503" in (items[c[1].alert.id].last_error or "")
    assert (items[c[0].alert.id].attempts, items[c[0].alert.id].finished_at) == (1, 2.0)
    # Replay by id and all dead: back to pending, same id.
    assert out.known_ids([c[0].alert.id, "msg_nope"]) == {c[0].alert.id}
    assert out.replay([c[0].alert.id], dead=False, channel=None, now=300.0) == 1
    assert out.replay([], dead=True, channel="other", now=300.0) == 0
    assert out.replay([], dead=True, channel="ch", now=300.0) == 2
    assert out.counts() == {("ch", "pending"): 4}
    again = out.claim("ch", 300.0, 10, "me", 60)
    assert [x.id for x in again] == [x.id for x in c]  # run_3's claim ran out at 70
    assert again[0].attempts == 0  # a replay starts again
    for x in again[:3]:
        out.delivered(x.seq, 400.0)
    # Purge deletes only finished rows older than the cut-off.
    assert out.purge(399.0, ("sent", "dead")) == 0
    out.retry(again[3].seq, "connect: refused", 1000.0)
    assert out.purge(401.0, ("sent", "dead")) == 3
    assert out.counts() == {("ch", "pending"): 1}


def test_items_are_newest_first_and_filtered(state: Store) -> None:
    notes = [Notification(make_alert(1, channel="a")), Notification(make_alert(2, channel="b"))]
    state.record("exa", [], notes, 1.0)
    assert [i.channel for i in state.outbox.items(state=None, channel=None, limit=None)] == ["b", "a"]
    assert [i.channel for i in state.outbox.items(state=None, channel=None, limit=1)] == ["b"]
    assert [i.channel for i in state.outbox.items(state="pending", channel="a", limit=5)] == ["a"]
    assert state.outbox.items(state="dead", channel=None, limit=None) == []


def test_a_row_being_sent_is_not_replayed_beside_its_sender(state: Store) -> None:
    state.record("exa", [], [Notification(make_alert(1))], 1.0)
    [held] = state.outbox.claim("ch", 1.0, 10, "worker", lease=60)
    assert state.outbox.replay([held.id], dead=False, channel=None, now=2.0) == 0
    assert state.outbox.claim("ch", 2.0, 10, "other", lease=60) == []  # still the worker's alone
    assert state.outbox.replay([held.id], dead=False, channel=None, now=100.0) == 1  # claim ran out


def test_silenced_rows_come_back_once(state: Store) -> None:
    state.record("exa", [], [Notification(make_alert(i)) for i in range(2)], 1.0)
    c = state.outbox.claim("ch", 1.0, 10, "me", 60)
    state.outbox.silenced(c[0].seq, "silenced: silence sil_1", 2.0)
    state.outbox.silenced(c[1].seq, "silenced: silence sil_1", 2.0)
    ids = [x.id for x in c]
    assert state.outbox.silenced_ids([*ids, "msg_nope"]) == set(ids)
    assert state.outbox.unsilence(ids[:1], 3.0) == 1
    assert state.outbox.unsilence(ids[:1], 3.0) == 0  # a second release finds it pending: sends once
    assert state.outbox.counts() == {("ch", "pending"): 1, ("ch", "silenced"): 1}


def test_two_claimers_never_get_the_same_row(state: Store) -> None:
    state.record("exa", [], [Notification(make_alert(i)) for i in range(300)], 1.0)
    got: list[list[int]] = [[] for _ in range(6)]
    start = threading.Barrier(len(got))

    def claimer(k: int) -> None:
        start.wait()
        while batch := state.outbox.claim("ch", 2.0, 7, f"sender-{k}", 60):
            got[k].extend(c.seq for c in batch)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(len(got))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [s for g in got for s in g]
    assert len(claimed) == 300 and len(set(claimed)) == 300


# -- a channel's rate: its last send times ------------------------------------------------------------
def test_a_send_window_holds_count_sends_in_any_period_and_survives_reopen(
    state: Store, where: Location
) -> None:
    sends = state.sends
    assert sends.recent("ch") == []
    assert [sends.start("ch", t, 2, 1.0) for t in (10.0, 10.2, 10.5, 10.99)] == [True, True, False, False]
    assert sends.start("other", 10.5, 2, 1.0)  # each channel has its own budget
    assert sends.start("ch", 11.0, 2, 1.0)  # 10.0 is a whole period old
    assert sends.recent("ch") == [10.2, 11.0]
    state = reopen(state, where)
    try:
        assert not state.sends.start("ch", 11.1, 2, 1.0)  # a restart frees no slot
        assert state.sends.start("ch", 12.0, 2, 1.0)
        for t in range(13, 40):  # the row keeps the last `count` times only, whatever the history
            assert state.sends.start("ch", float(t), 2, 1.0)
        assert state.sends.recent("ch") == [38.0, 39.0]
        assert rows(where, "SELECT count(*) FROM {t}send_windows") == 2
    finally:
        state.close()


def test_a_send_window_follows_a_rate_whose_count_changed(state: Store) -> None:
    """A reload that changes ``count`` keeps the last sends: the newest ``count`` of them decide."""
    sends = state.sends
    assert all(sends.start("r", t, 3, 1.0) for t in (0.0, 0.1, 0.2))
    assert not sends.start("r", 0.5, 2, 1.0)  # 2/s now: 0.1 and 0.2 are within the second
    assert sends.start("r", 1.15, 2, 1.0)  # 0.1 is a second old
    assert sends.recent("r") == [0.2, 1.15]
    assert sends.start("r", 1.16, 4, 1.0) and sends.start("r", 1.17, 4, 1.0)  # 4/s: fewer than 4 kept
    assert not sends.start("r", 1.18, 4, 1.0)  # 0.2, 1.15, 1.16, 1.17 are within the second
    assert sends.start("r", 1.2, 4, 1.0)
    assert sends.recent("r") == [1.15, 1.16, 1.17, 1.2]


def test_senders_at_once_take_no_more_slots_than_the_rate(state: Store, where: Location) -> None:
    """Six senders (on a shared store: also a second instance's) ask for slots at the same moments:
    each window admits exactly its count, whoever asks."""
    second = Location(where.state_dir.with_name("second"), where.url)
    others = [open_state(second)] if where.url is not None else []
    try:
        stores = [state, *others]
        taken: list[list[float]] = [[] for _ in range(6)]
        start = threading.Barrier(len(taken))

        def sender(k: int) -> None:
            sends = stores[k % len(stores)].sends
            for step in range(20):
                start.wait(30)  # in step: every sender asks at each moment
                now = 100.0 + step * 0.5
                if sends.start("ch", now, 3, 1.0):
                    taken[k].append(now)

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(len(taken))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        starts = sorted(t for got in taken for t in got)
        crowded = [(a, b) for a, b in zip(starts, starts[3:], strict=False) if b - a < 1.0]
        assert not crowded, starts
        assert len(starts) == 30, starts  # and each window is used to the full: 3 at each whole second
        for other in others:
            assert other.sends.recent("ch") == state.sends.recent("ch") == [109.0] * 3
    finally:
        for other in others:
            other.close()


# -- alerts, monitors, silences, meta -----------------------------------------------------------------
def test_open_alerts_are_kept_and_found_by_monitor(state: Store, where: Location) -> None:
    a = OpenAlert("rule|m1", "rule", {"provider": "exa", "monitor_id": "m1"}, firing=True, opened_at=5.0)
    b = OpenAlert("wide|exa", "wide", {"provider": "exa"}, matches=[1.0, 2.0])
    state.record("exa", [], [], 5.0, alert_updates=[AlertUpdate(a.key, a), AlertUpdate(b.key, b)])
    again = reopen(state, where)
    assert again.alerts.get(a.key) == a and again.alerts.firing() == 1
    assert {x.key for x in again.alerts.for_monitor("exa", "m1")} == {a.key, b.key}
    assert {x.key for x in again.alerts.for_monitor("exa", "m2")} == {b.key}
    again.record("exa", [], [], 6.0, alert_updates=[AlertUpdate(a.key, None)])
    assert again.alerts.get(a.key) is None and set(again.alerts.open) == {b.key}
    third = reopen(again, where)
    assert set(third.alerts.open) == {b.key}
    third.close()


def test_monitors_are_kept_with_their_schedule_and_the_first_listing_is_known(
    state: Store, where: Location
) -> None:
    assert state.monitors.records() == [] and not state.monitors.baselined
    m1 = MonitorRecord("exa", "m1", "enabled", {"id": "m1", "metadata": {"team": "data"}}, due=100.0)
    gone = MonitorRecord("exa", "m2", "deleted", {"id": "m2"})
    state.record("exa", [], [], 3.0, monitor_updates=[m1, gone], baselined="exa")
    again = reopen(state, where)
    assert again.monitors.get("exa", "m1") == m1 and set(again.monitors.baselined) == {"exa"}
    assert again.monitors.raw("exa", "m1") == {"id": "m1", "metadata": {"team": "data"}}
    assert again.monitors.due_by(100.0) == [m1] and again.monitors.due_by(99.0) == []
    assert again.runs.listed_monitors("exa") == ["m1"]
    assert again.monitors.purge_deleted(2.0) == 0 and again.monitors.purge_deleted(4.0) == 1
    assert again.monitors.get("exa", "m2") is None
    third = reopen(again, where)
    assert [r.monitor_id for r in third.monitors.records()] == ["m1"]
    third.close()


def test_silences_are_shared_with_the_commands(state: Store, where: Location) -> None:
    s = state.silences.add({"provider": "exa"}, 10.0, 20.0, "deploy", "ana")
    shared = open_shared(where)
    try:
        [seen] = shared.silences.all()
        assert seen == s and seen.active(15.0) and not seen.active(25.0)
        assert shared.silences.expire(s.id, 12.0) and not shared.silences.expire(s.id, 13.0)
    finally:
        shared.close()
    [expired] = state.silences.all()
    assert expired.expired_at == 12.0 and not expired.active(15.0)


def test_meta_keys_survive_reopen_and_the_commands_read_them(state: Store, where: Location) -> None:
    assert state.get_meta("first_start") is None
    state.set_meta("first_start", "123.5")
    state.set_meta("first_start", "124.5")
    again = reopen(state, where)
    assert again.get_meta("first_start") == "124.5"
    shared = open_shared(where)
    try:
        assert shared.get_meta("first_start") == "124.5"
        assert shared.outbox.counts() == {}
        assert where.url is None or shared.where == again.where
    finally:
        shared.close()
    again.close()


def test_the_first_writer_of_a_first_meta_key_wins(state: Store, where: Location) -> None:
    """``first_start``: instances starting together on one state agree on it, and it never moves."""
    assert state.first_meta("first_start", "100.0") == "100.0"
    assert state.first_meta("first_start", "200.0") == "100.0"
    if where.url is not None:
        other = open_state(Location(where.state_dir.with_name("second"), where.url))
        try:
            assert other.first_meta("first_start", "300.0") == "100.0"
        finally:
            other.close()
    again = reopen(state, where)
    try:
        assert again.first_meta("first_start", "400.0") == "100.0"
    finally:
        again.close()


def test_the_commands_never_create_a_state(where: Location) -> None:
    with pytest.raises(StateMissingError, match=r"no (runwatch )?state"):
        open_shared(where)


# -- fencing --------------------------------------------------------------------------------------------
def test_a_write_whose_lease_is_gone_writes_nothing_on_a_shared_store(state: Store, where: Location) -> None:
    fence = Fence("poll:exa", "runwatch-a", 7)
    note = Notification(make_alert(1))
    alert = OpenAlert("rule|m1", "rule", {"provider": "exa", "monitor_id": "m1"}, firing=True)
    monitor = MonitorRecord("exa", "m1", "enabled", {"id": "m1"})

    def write() -> None:
        state.record("exa", [snap("failed")], [note], 5.0, monitor_id="m1", fence=fence,
                     alert_updates=[AlertUpdate(alert.key, alert)], monitor_updates=[monitor])  # fmt: skip
        state.set_meta("baseline_done:exa", "1", fence=fence)

    if where.url is None:  # one instance per state directory: nothing to fence, the write is made
        write()
        assert state.outbox.counts() == {("ch", "pending"): 1}
        return
    with psycopg.connect(where.url) as conn:  # the lease passed to runwatch-b (token 8)
        conn.execute(
            "INSERT INTO runwatch_leases VALUES ('poll:exa', 'runwatch-b', 8,"
            " extract(epoch from clock_timestamp()), extract(epoch from clock_timestamp()) + 60)"
        )
    with pytest.raises(FencedOut, match="poll:exa"):
        state.record("exa", [snap("failed")], [note], 5.0, monitor_id="m1", fence=fence,
                     alert_updates=[AlertUpdate(alert.key, alert)], monitor_updates=[monitor])  # fmt: skip
    with pytest.raises(FencedOut):
        state.set_meta("baseline_done:exa", "1", fence=fence)
    for table in ("runs", "notifications", "alerts", "monitor_state", "monitors"):
        assert rows(where, f"SELECT count(*) FROM {{t}}{table}") == 0, table
    assert state.get_meta("baseline_done:exa") is None
    assert state.runs.run("exa", "r1") is None and state.alerts.open == {}  # memory did not move either
    with psycopg.connect(where.url) as conn:  # runwatch-a holds it again, with a newer token
        conn.execute("UPDATE runwatch_leases SET holder = 'runwatch-a', token = 9")
    with pytest.raises(FencedOut):
        write()  # token 7 is an old holder's, whoever holds the lease now
    fence = Fence("poll:exa", "runwatch-a", 9)
    write()
    assert state.outbox.counts() == {("ch", "pending"): 1}
    with psycopg.connect(where.url) as conn:  # expired, by the database's clock: refused again
        conn.execute("UPDATE runwatch_leases SET expires_at = extract(epoch from clock_timestamp()) - 1")
    with pytest.raises(FencedOut):
        state.set_meta("baseline_done:exa", "2", fence=fence)


def test_a_silence_release_from_a_fenced_tick_changes_nothing(state: Store, where: Location) -> None:
    state.record("exa", [], [Notification(make_alert(1))], 1.0)
    [c] = state.outbox.claim("ch", 1.0, 10, "me", 60)
    state.outbox.silenced(c.seq, "silenced: silence sil_1", 2.0)
    stale = Fence("poll:exa", "runwatch-a", 1)
    if where.url is None:
        assert state.outbox.unsilence([c.id], 3.0, fence=stale) == 1
        return
    with pytest.raises(FencedOut):
        state.outbox.unsilence([c.id], 3.0, fence=stale)  # no lease row at all
    assert state.outbox.counts() == {("ch", "silenced"): 1}


# -- reading one provider again (an instance taking over its polling) ----------------------------------
def memory(st: Store, provider: str) -> tuple[object, ...]:
    """What the parts keep in memory of one provider, comparable."""
    runs = st.runs
    mine = {k: v for k, v in runs.runs.items() if k[0] == provider}
    monitors = {r.monitor_id: r for r in st.monitors.records() if r.provider == provider}
    return (
        mine,
        {k: n for k, n in runs.status_counts().items() if k[0] == provider},
        {m: sorted(runs.unfinished(provider, m)) for m in ("m1", "m2")},
        {m: runs.catch_up(provider, m) for m in ("m1", "m2")},
        {m: runs.knows_monitor(provider, m) for m in ("m1", "m2")},
        {k: a for k, a in st.alerts.open.items() if a.group.get("provider") == provider},
        monitors,
        provider in st.monitors.baselined,
    )


def record_some(st: Store, provider: str, now: float) -> None:
    """Runs (with events, a creation time, a stuck mark), a catch-up, monitors, an open alert."""
    live = RunSnapshot(provider, "m1", "live", "running", {}, events=(RunEvent("e1", 1, "x", "y"),),
                       created_at=now - 50)  # fmt: skip
    alert = OpenAlert(f"rule|{provider}", "rule", {"provider": provider, "monitor_id": "m1"}, firing=True)
    st.record(provider, [live, RunSnapshot(provider, "m1", "done", "failed", {})], [], now, monitor_id="m1",
              catch_up=CatchUp(("c1",), False), alert_updates=[AlertUpdate(alert.key, alert)],
              monitor_updates=[MonitorRecord(provider, "m1", "enabled", {"id": "m1"}, due=now + 60)],
              baselined=provider)  # fmt: skip
    st.record(provider, [], [], now, stuck=[StuckMark(provider, "live", (30.0,))])


def test_reload_reads_one_providers_part_again_and_leaves_the_others(state: Store, where: Location) -> None:
    record_some(state, "exa", 100.0)
    record_some(state, "olostep", 100.0)
    exa, olostep = memory(state, "exa"), memory(state, "olostep")
    assert exa[0][("exa", "live")].stuck == {30.0} and exa[0][("exa", "live")].created_at == 50.0
    for part in (state.runs, state.alerts, state.monitors):
        part.reload("exa")
    assert memory(state, "exa") == exa and memory(state, "olostep") == olostep  # nothing lost or moved
    if where.url is None:
        return  # one writer per state directory: memory is never behind the file
    other = open_state(Location(where.state_dir.parent / "other", where.url))  # another instance
    try:  # while it leads exa: the live run fails, a new one starts, the alert resolves, m2 appears
        other.record("exa", [RunSnapshot("exa", "m1", "live", "failed", {}),
                             RunSnapshot("exa", "m2", "new", "running", {}, created_at=150.0)], [], 200.0,
                     monitor_id="m2", alert_updates=[AlertUpdate("rule|exa", None)],
                     monitor_updates=[MonitorRecord("exa", "m2", "enabled", {"id": "m2"})])  # fmt: skip
        other.record("exa", [], [], 200.0, stuck=[StuckMark("exa", "new", (30.0, 60.0))])
        other.record("olostep", [RunSnapshot("olostep", "m2", "theirs", "running", {})], [], 200.0)
    finally:
        other.close()
    assert memory(state, "exa") == exa  # memory was read before they wrote
    for part in (state.runs, state.alerts, state.monitors):
        part.reload("exa")
    runs = state.runs
    assert set(k for k in runs.runs if k[0] == "exa") == {("exa", "new")}
    new = runs.run("exa", "new")
    assert new is not None and (new.created_at, new.stuck) == (150.0, {30.0, 60.0})
    assert runs.is_done("exa", "live") is True and runs.knows_monitor("exa", "m2")
    assert list(runs.unfinished("exa", "m1")) == [] and list(runs.unfinished("exa", "m2")) == ["new"]
    assert runs.status_counts()[("exa", "failed")] == 2 and runs.status_counts()[("exa", "running")] == 1
    assert state.alerts.get("rule|exa") is None and state.alerts.get("rule|olostep") is not None
    assert state.monitors.get("exa", "m2") is not None and "exa" in state.monitors.baselined
    assert memory(state, "olostep") == olostep  # not reloaded: their olostep run is not known here
    assert runs.is_done("olostep", "theirs") is None


# -- run.stuck across restarts: creation times and the thresholds crossed -----------------------------
def test_a_runs_creation_time_and_its_stuck_marks_survive_reopen(state: Store, where: Location) -> None:
    told = RunSnapshot("exa", "m1", "told", "running", {}, created_at=40.0)
    state.record("exa", [told, snap("running", "untold")], [], 100.0, monitor_id="m1")
    note = Notification(make_alert(1))
    assert state.record("exa", [], [note], 110.0, stuck=[StuckMark("exa", "told", (60.0,))]) == 1
    runs = state.runs
    assert runs.runs[("exa", "told")].created_at == 40.0 and runs.runs[("exa", "told")].stuck == {60.0}
    assert runs.runs[("exa", "untold")].created_at == 100.0  # when first seen
    again = reopen(state, where)
    told_rec, untold = again.runs.runs[("exa", "told")], again.runs.runs[("exa", "untold")]
    assert (told_rec.created_at, told_rec.stuck) == (40.0, {60.0})
    assert (untold.created_at, untold.stuck) == (100.0, frozenset())
    # A later poll that brings the provider's own creation time records it (and only that).
    later = RunSnapshot("exa", "m1", "untold", "running", {"id": "untold"}, created_at=90.0)
    again.record("exa", [later], [], 120.0, monitor_id="m1")
    third = reopen(again, where)
    assert third.runs.runs[("exa", "untold")].created_at == 90.0
    assert rows(where, "SELECT count(*) FROM {t}run_stuck") == 1
    # A finished run is forgotten with its marks.
    third.record("exa", [RunSnapshot("exa", "m1", "told", "failed", {})], [], 130.0, monitor_id="m1")
    assert third.runs.purge_finished(200.0) == 1
    assert rows(where, "SELECT count(*) FROM {t}run_stuck") == 0
    third.close()


def test_finished_at_says_when_each_notification_left_the_queue(state: Store) -> None:
    state.record("exa", [], [Notification(make_alert(i)) for i in range(4)], 1.0)
    sent, dead, silenced, waiting = state.outbox.claim("ch", 1.0, 10, "me", 60)
    state.outbox.delivered(sent.seq, 5.0)
    state.outbox.dead(dead.seq, "http_4xx: HTTP 410", 6.0)
    state.outbox.silenced(silenced.seq, "silenced: silence sil_1", 7.0)
    state.outbox.retry(waiting.seq, "http_5xx: HTTP 503", 50.0)
    ids = [sent.id, dead.id, silenced.id, waiting.id, "msg_gone"]
    assert state.outbox.finished_at(ids) == {sent.id: 5.0, dead.id: 6.0, silenced.id: 7.0, waiting.id: None}
    assert state.outbox.finished_at([]) == {}


# -- leases, on the store the state is in --------------------------------------------------------------
def test_the_leases_live_beside_the_state_and_fence_its_writes(state: Store, where: Location) -> None:
    mine, theirs = open_leases(where), open_leases(where)
    try:
        token = mine.acquire("poll:exa", "runwatch-a", 30)
        assert token is not None
        mine.heartbeat("runwatch-a", "digest-a", {"exa": 5.0})
        assert [i.name for i in theirs.instances()] == ["runwatch-a"]
        [lease] = theirs.leases()
        assert (lease.name, lease.holder, lease.token, lease.held) == ("poll:exa", "runwatch-a", token, True)
        fence = Fence("poll:exa", "runwatch-a", token)
        state.record("exa", [snap("running")], [], 1.0, monitor_id="m1", fence=fence)  # the holder writes
        if where.url is None:  # one instance per state directory: it always gets the lease
            assert not mine.shared and theirs.acquire("poll:exa", "runwatch-b", 30) == token + 1
            return
        assert mine.shared and theirs.acquire("poll:exa", "runwatch-b", 30) is None  # held
        mine.release("poll:exa", "runwatch-a", token)
        assert theirs.acquire("poll:exa", "runwatch-b", 30) == token + 1
        with pytest.raises(FencedOut):  # the old holder's token: nothing written
            state.record("exa", [snap("failed")], [], 2.0, monitor_id="m1", fence=fence)
        rec = state.runs.run("exa", "r1")
        assert rec is not None and rec.status == "running"
    finally:
        mine.close()
        theirs.close()


def test_the_commands_read_the_leases_and_alerts_without_creating_a_state(where: Location) -> None:
    with pytest.raises(StateMissingError):
        open_leases(where, create=False)
    st = open_state(where)
    alert = OpenAlert("rule|m1", "rule", {"provider": "exa", "monitor_id": "m1"}, firing=True, opened_at=5.0)
    st.record("exa", [], [], 5.0, alert_updates=[AlertUpdate(alert.key, alert)])
    st.close()
    leases, shared = open_leases(where, create=False), open_shared(where)
    try:
        assert leases.leases() == [] and leases.instances() == []
        assert shared.open_alerts() == [alert]
    finally:
        leases.close()
        shared.close()


# -- pushes waiting for their read --------------------------------------------------------------------
def test_a_push_is_kept_until_the_read_it_asked_for_is_recorded_and_acted_on_once(
    state: Store, where: Location
) -> None:
    """Durable before the answer (a reopen still has it), once per event id, consumed by the record of
    a read that began after it arrived, in that record's transaction; a push the read did not answer
    (its run not read) waits on."""
    pushed = Hint("exa", "evt_r1_completed", "m1", "r1", "monitor.run.completed", 10.0)
    other = Hint("exa", "evt_r9_completed", "m1", "r9", "monitor.run.completed", 10.0)
    assert state.hints.add(pushed) and state.hints.add(other)
    assert not state.hints.add(pushed)  # the provider's retry: a repeat
    state = reopen(state, where)
    assert [h.event_id for h in state.hints.pending("exa")] == ["evt_r1_completed", "evt_r9_completed"]
    state.record("exa", [snap("running")], [], 9.0, monitor_id="m1", hints_before=9.0)  # began before it
    assert len(state.hints.pending("exa")) == 2
    state.record("exa", [snap("completed")], [], 12.0, monitor_id="m1", hints_before=11.0)
    assert [h.event_id for h in state.hints.pending("exa")] == ["evt_r9_completed"]
    state = reopen(state, where)
    assert [h.event_id for h in state.hints.pending("exa")] == ["evt_r9_completed"]
    assert not state.hints.add(pushed)  # consumed, and its id still remembered
    assert rows(where, "SELECT COUNT(*) FROM {t}push_hints WHERE consumed_at IS NOT NULL") == 1
    assert state.hints.purge(13.0) == 1
    state.close()
