"""The alert lifecycle through the real pipeline stages and state: open once, quiet while open,
threshold, repeat on the clock, resolve once, and all of it across a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runwatch.clock import ManualClock
from runwatch.metrics import Metrics
from runwatch.model import Alert, RunSnapshot
from runwatch.pipeline.chain import Pipeline
from runwatch.pipeline.detect import Detect
from runwatch.pipeline.lifecycle import Lifecycle
from runwatch.pipeline.match import Match
from runwatch.pipeline.record import Record
from runwatch.rules import load_rules
from runwatch.sources.base import MonitorBatch
from runwatch.store import State

pytestmark = pytest.mark.anyio

T0 = 1_780_000_000.0


class Rig:
    """The daemon's stages over a real state, fed batches directly; time is a ManualClock."""

    def __init__(self, tmp_path: Path, rules: str, clock: ManualClock, *, outbox: bool = False) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(rules)
        self.ruleset = load_rules([path], channels={"ch"})
        self.clock = clock
        self.state = State(tmp_path / "state")
        self.metrics = metrics = Metrics()
        self.detect = Detect(self.state, metrics)
        self.detect.provider_settled("exa")
        sent = self.state.outbox if outbox else None
        self.lifecycle = Lifecycle(self.state.alerts, lambda: self.ruleset, metrics, sent=sent)
        self.pipeline = Pipeline(
            [
                self.detect,
                Match(lambda: self.ruleset, metrics),
                self.lifecycle,
                Record(self.state, lambda _: None),
            ],
            clock,
        )

    async def see(self, run_id: str, status: str, monitor: str = "m1", reason: str | None = None) -> None:
        raw = {"id": run_id, "status": status, "failedReason": reason}
        await self.pipeline(
            MonitorBatch("exa", monitor, [RunSnapshot("exa", monitor, run_id, status, raw, reason)])
        )

    def tick(self) -> None:
        notes, updates = self.lifecycle.tick(self.clock.now())
        if updates:
            self.state.record("", [], notes, self.clock.now(), alert_updates=updates)

    def deliver(self) -> None:
        """The channel acknowledges everything queued, now."""
        for c in self.state.outbox.claim("ch", self.clock.now(), 100, "rig", 60):
            self.state.outbox.delivered(c.seq, self.clock.now())

    def sent(self) -> list[tuple[str, str, str]]:
        """(status, title, run_id) of every queued notification, oldest first."""
        rows = self.state.db.execute("SELECT alert FROM notifications ORDER BY seq").fetchall()
        alerts = [Alert.from_payload(json.loads(row[0])) for row in rows]
        return [(a.status, a.title, a.run_id) for a in alerts]


FAILING = """
rules:
  - name: monitor-failing
    match: {provider: exa, kind: run.status, to: failed}
    notify: [ch]
    send_resolved: true
"""


async def test_an_alert_fires_once_stays_quiet_while_open_and_resolves_once(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, FAILING, clock)
    await r.see("r1", "failed", reason="quota")
    await r.see("r2", "failed", reason="quota again")  # still failing: no new notification
    await r.see("x1", "failed", monitor="m2")  # another monitor is another alert
    await r.see("r3", "running")
    await r.see("r3", "completed")  # a later run completed: resolved, once
    await r.see("r4", "completed")
    await r.see("r5", "failed")  # a new failure opens a new alert
    got = r.sent()
    assert [(s, run) for s, _, run in got] == [
        ("firing", "r1"), ("firing", "x1"), ("resolved", "r3"), ("firing", "r5"),
    ]  # fmt: skip
    assert got[2][1].startswith("[resolved] ")
    assert {a.group["monitor_id"] for a in r.state.alerts.open.values()} == {"m1", "m2"}


async def test_threshold_fires_on_the_nth_match_within_the_window(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, FAILING.replace("send_resolved: true", "threshold: {count: 2, within: 1h}"), clock)
    await r.see("r1", "failed")
    clock.advance(2 * 3600)
    await r.see("r2", "failed")  # the first one fell out of the window: still one
    clock.advance(1800)
    await r.see("r3", "failed")  # two within the hour: fire
    await r.see("r4", "failed")
    assert [run for _, _, run in r.sent()] == ["r3"]


async def test_repeats_on_the_clock_and_a_restart_keeps_the_lifecycle(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    rules = FAILING.replace("send_resolved: true", "repeat_interval: 1h\n    send_resolved: true")
    r = Rig(tmp_path, rules, clock)
    await r.see("r1", "failed")
    clock.advance(3599)
    r.tick()
    assert len(r.sent()) == 1  # not a moment early
    clock.advance(2)
    r.tick()
    r.tick()  # a second tick at the same time repeats nothing more
    assert [s for s, _, _ in r.sent()] == ["firing", "firing"]
    r.state.close()

    # kill and restart: the alert is still open, its next repeat still an hour after the last
    again = Rig(tmp_path, rules, clock)
    await again.see("r2", "failed")  # no re-fire after the restart
    clock.advance(1800)
    again.tick()
    assert len(again.sent()) == 2
    clock.advance(1801)
    again.tick()
    assert len(again.sent()) == 3
    await again.see("r3", "completed")
    again.tick()
    clock.advance(7200)
    again.tick()  # resolved: no more repeats
    assert [s for s, _, _ in again.sent()] == ["firing", "firing", "firing", "resolved"]
    ids = [i.id for i in again.state.outbox.items(state=None, channel=None, limit=None)]
    assert len(set(ids)) == 4  # each repeat is a notification of its own (receivers dedupe by id)


async def test_a_repeat_counts_from_when_the_last_notification_was_sent(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    rules = FAILING.replace("send_resolved: true", "repeat_interval: 1h")
    r = Rig(tmp_path, rules, clock, outbox=True)
    await r.see("r1", "failed")
    clock.advance(3601)
    r.tick()
    assert len(r.sent()) == 1  # the firing one is still pending (a channel retrying): no repeat behind it
    clock.advance(1800)
    r.deliver()  # sent 1.5 h after it was decided
    r.tick()
    assert len(r.sent()) == 1
    [alert] = r.state.alerts.open.values()
    assert alert.next_repeat_at == T0 + 5401 + 3600  # an hour after the send, kept in the state
    r.state.close()

    again = Rig(tmp_path, rules, clock, outbox=True)  # a restart (kill -9 alike) keeps that
    clock.advance(3599)
    again.tick()
    assert len(again.sent()) == 1
    clock.advance(1)
    again.tick()
    assert [s for s, _, _ in again.sent()] == ["firing", "firing"]
    again.deliver()
    clock.advance(3599)
    again.tick()
    assert len(again.sent()) == 2  # the next one an hour after this one's send, too
    clock.advance(1)
    again.tick()
    assert len(again.sent()) == 3


async def test_a_rule_without_lifecycle_keys_notifies_every_match(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, FAILING.replace("    send_resolved: true\n", ""), clock)
    for run in ("r1", "r2", "r3"):
        await r.see(run, "failed")
    assert [run for _, _, run in r.sent()] == ["r1", "r2", "r3"]
    assert r.state.alerts.open == {}
