"""Grouping (``group_wait``, ``group_interval``) through the real pipeline stages and state: a storm is
one notification listing every match, later matches wait for the interval, nothing new sends nothing,
and a restart between a match and the flush still sends the group exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import Scenario, fake_server
from runwatch.model import Alert
from runwatch.rules import load_rules
from runwatch.service.app import Daemon
from tests.conftest import write_config
from tests.pipeline.test_lifecycle import T0, Rig
from tests.test_end_to_end import EXA_KEY, FAST
from tests.webhook_server import webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "webhook-v1.json").read_text())

STORM = """
rules:
  - name: storm
    match: {provider: exa, kind: run.status, to: failed}
    notify: [ch]
    group_by: [provider]
    group_wait: 30s
    group_interval: 5m
    body: |
      {% for a in alerts %}{{ a.monitor_id }}/{{ a.run_id }} {{ a.from }}->{{ a.to }}: {{ a.failed_reason }}
      {% endfor %}
"""


def queued(r: Rig) -> list[Alert]:
    rows = r.state.db.execute("SELECT alert FROM notifications ORDER BY seq").fetchall()
    return [Alert.from_payload(json.loads(row[0])) for row in rows]


async def test_a_storm_within_group_wait_is_one_notification_listing_every_failure(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, STORM, clock)
    for i in range(50):  # 50 failures over 10 s, across monitors of one provider
        await r.see(f"r{i}", "failed", monitor=f"m{i % 3}", reason=f"quota {i}")
        if i % 5 == 4:
            clock.advance(1)
        r.tick()
    assert queued(r) == []  # collected, not sent: group_wait has not passed
    clock.advance(19)
    r.tick()
    assert queued(r) == []
    clock.advance(1)  # 30 s after the first failure
    r.tick()
    r.tick()  # a second tick at the same time sends nothing more
    [note] = queued(r)
    assert note.title == "[warning] exa: 50 runs failed (rule storm)"
    assert note.body.splitlines()[:2] == ["m0/r0 ->failed: quota 0", "m1/r1 ->failed: quota 1"]
    assert len(note.body.splitlines()) == 50
    payload = note.payload()
    jsonschema.validate(payload, SCHEMA)
    assert [a["run_id"] for a in payload["alerts"]] == [f"r{i}" for i in range(50)]
    assert payload["alerts"][7]["failed_reason"] == "quota 7"
    assert payload["alerts"][7]["run"]["id"] == "r7"
    # The notification's own fields are those of the first change in it.
    assert (payload["run_id"], payload["monitor_id"]) == ("r0", "m0")


async def test_later_matches_wait_for_the_interval_and_nothing_new_sends_nothing(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, STORM, clock)
    await r.see("r1", "failed", monitor="m1")
    clock.advance(30)
    r.tick()
    assert [len(a.items()) for a in queued(r)] == [1]
    assert queued(r)[0].title == "[warning] exa m1 run r1: failed"  # one change: the usual title
    clock.advance(10)
    await r.see("r2", "failed", monitor="m2")
    await r.see("r3", "failed", monitor="m1")
    clock.advance(200)
    r.tick()
    assert len(queued(r)) == 1  # held until the group_interval after the last send
    clock.advance(89)
    r.tick()
    assert len(queued(r)) == 1
    clock.advance(1)  # 5 min after the first send
    r.tick()
    second = queued(r)[1]
    assert [a["run_id"] for a in second.items()] == ["r2", "r3"]
    assert second.title == "[warning] exa: 2 runs failed (rule storm)"
    clock.advance(300)
    r.tick()  # an interval with nothing new: nothing sent, and the group closes
    assert len(queued(r)) == 2
    [alert] = r.state.alerts.open.values()
    assert alert.next_flush_at is None and alert.pending == []
    await r.see("r4", "failed", monitor="m3")  # a new group: waits group_wait again, not an interval
    clock.advance(29)
    r.tick()
    assert len(queued(r)) == 2
    clock.advance(1)
    r.tick()
    assert [a.run_id for a in queued(r)] == ["r1", "r2", "r4"]
    ids = [a.id for a in queued(r)]
    assert len(set(ids)) == 3


async def test_a_restart_between_a_match_and_the_flush_sends_the_group_once(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, STORM, clock)
    await r.see("r1", "failed", reason="a")
    clock.advance(5)
    await r.see("r2", "failed", reason="b")
    r.state.close()  # kill -9 here: everything collected is already in the state

    again = Rig(tmp_path, STORM, clock)
    await again.see("r2", "failed", reason="b")  # seen again after the restart: not listed twice
    clock.advance(10)
    await again.see("r3", "failed", reason="c")
    again.tick()
    assert queued(again) == []
    clock.advance(15)
    again.tick()
    again.tick()
    [note] = queued(again)
    assert [a["run_id"] for a in note.items()] == ["r1", "r2", "r3"]
    again.state.close()

    third = Rig(tmp_path, STORM, clock)
    third.tick()
    clock.advance(600)
    third.tick()
    assert len(queued(third)) == 1  # the group was sent once; a restart does not send it again


RESOLVING = """
rules:
  - name: grouped
    match: {provider: exa, kind: run.status, to: failed}
    notify: [ch]
    group_wait: 1m
    send_resolved: true
"""


async def test_a_resolve_before_the_group_is_sent_follows_it(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, RESOLVING, clock)
    await r.see("r1", "failed")
    await r.see("r2", "failed")
    clock.advance(10)
    await r.see("r3", "completed")  # resolves the alert, but its firing notification is not sent yet
    r.tick()
    assert queued(r) == []
    clock.advance(50)
    r.tick()
    got = [(a.status, len(a.items()), a.title) for a in queued(r)]
    assert got == [
        ("firing", 2, "[warning] exa m1: 2 runs failed (rule grouped)"),
        ("resolved", 1, "[resolved] [warning] exa m1 run r3: completed"),
    ]
    clock.advance(3600)
    r.tick()
    assert r.state.alerts.open == {}  # nothing new for an interval, and resolved: gone


def test_only_one_of_the_two_keys_takes_the_default_for_the_other(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: a, notify: [ch], group_wait: 10s}\n"
        "  - {name: b, notify: [ch], group_interval: 1h}\n"
        "  - {name: c, notify: [ch]}\n"
    )
    a, b, c = load_rules([path], channels={"ch"})
    assert a.lifecycle is not None and (a.lifecycle.wait(), a.lifecycle.interval()) == (10, 300)
    assert b.lifecycle is not None and (b.lifecycle.wait(), b.lifecycle.interval()) == (30, 3600)
    assert c.lifecycle is None  # no lifecycle key: one notification per change, as before


DAEMON_RULES = """
rules:
  - name: exa-storm
    match: {provider: exa, kind: run.status, to: failed}
    notify: [tickets]
    group_by: [provider]
    group_wait: 30s
    group_interval: 5m
"""


def storm_scenario() -> Scenario:
    def run(i: int, at: int) -> dict[str, object]:
        return {
            "id": f"mrun_{i}",
            "timeline": [
                {"at": 0, "status": "created"},
                {"at": at, "status": "failed", "failed_reason": f"quota {i}"},
            ],
        }

    later = [run(99, 200)]  # one more failure, a few minutes after the storm
    monitors = [
        {
            "id": f"monitor_{m}",
            "runs": [run(m * 10 + k, 20 + k) for k in range(4)] + (later if m == 0 else []),
        }
        for m in range(3)
    ]
    return Scenario.model_validate({"exa": {"monitors": monitors}})


async def test_the_daemon_sends_a_storm_as_one_signed_webhook_listing_every_failure(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", storm_scenario(), clock) as exa, webhook_server(SECRET) as rx:
        (tmp_path / "hook.secret").write_text(SECRET + "\n")
        body = f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: 1h, idle_poll_interval: 1h}}
channels:
  tickets: {{webhook: {{url: "{rx.url}", secret_file: hook.secret}}}}
"""
        daemon = Daemon(
            load_config(write_config(tmp_path, body, DAEMON_RULES)), clock=clock, client_options=FAST
        )
        assert await daemon.poll_once("exa")  # the baseline: every run created
        clock.advance(30)
        assert await daemon.poll_once("exa")  # 12 failures across 3 monitors
        assert daemon.lifecycle_tick() == 0
        clock.advance(29)
        assert daemon.lifecycle_tick() == 0
        clock.advance(1)
        assert daemon.lifecycle_tick() == 1  # group_wait after the first: one notification
        assert daemon.lifecycle_tick() == 0
        clock.advance(150)
        assert await daemon.poll_once("exa")  # one more failure, within the group_interval
        assert daemon.lifecycle_tick() == 0
        clock.advance(300 - 150)
        assert daemon.lifecycle_tick() == 1
        grouped = daemon.metrics.registry.get_sample_value(
            "runwatch_alert_transitions_total", {"event": "grouped"}
        )
        assert grouped == 2
        fired = daemon.metrics.registry.get_sample_value(
            "runwatch_alert_transitions_total", {"event": "fired"}
        )
        assert fired == 1  # one alert (the provider's group) opened once
        async with daemon.running():
            await rx.wait_for(2)
    first, second = (r.payload for r in rx.delivered())
    assert first is not None and second is not None
    jsonschema.validate(first, SCHEMA)
    jsonschema.validate(second, SCHEMA)
    assert first["title"] == "[warning] exa: 12 runs failed (rule exa-storm)"
    assert sorted(a["run_id"] for a in first["alerts"]) == sorted(
        f"mrun_{m * 10 + k}" for m in range(3) for k in range(4)
    )
    assert {a["failed_reason"] for a in first["alerts"]} >= {"quota 0", "quota 23"}
    assert all(a["run"]["status"] == "failed" for a in first["alerts"])
    assert [a["run_id"] for a in second["alerts"]] == ["mrun_99"]
    assert second["title"] == "[warning] exa monitor_0 run mrun_99: created -> failed"


async def test_a_reload_mid_group_neither_loses_nor_resends_it(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, STORM, clock)
    await r.see("r1", "failed")
    clock.advance(30)
    r.tick()
    await r.see("r2", "failed")
    path = tmp_path / "rules.yaml"
    path.write_text(STORM.replace("notify: [ch]", "notify: [ch]\n    severity: critical"))
    r.ruleset = load_rules([path], channels={"ch"})  # what SIGHUP does: a new rule set, same names
    r.tick()
    await r.see("r1", "failed")
    clock.advance(300)
    r.tick()
    r.tick()
    assert [(a.severity, [i["run_id"] for i in a.items()]) for a in queued(r)] == [
        ("warning", ["r1"]),
        ("critical", ["r2"]),
    ]
