"""``run.stuck``: once per run, only for rules that name it, resolved when the run ends; driven by the
daemon's own tick on an injected clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.model import Alert, RunSnapshot
from runwatch.service.app import Daemon
from runwatch.sources.base import MonitorBatch
from tests.conftest import write_config

pytestmark = pytest.mark.anyio

T0 = 1_780_000_000.0
RULES = """
rules:
  - name: run-stuck
    match: {kind: run.stuck}
    stuck_after: 10m
    notify: [ch]
    send_resolved: true
  - name: everything-exa
    match: {provider: exa}
    notify: [other]
"""


def queued(daemon: Daemon) -> list[tuple[str, str, str, str]]:
    rows = daemon.store.db.execute("SELECT alert FROM notifications ORDER BY seq").fetchall()
    alerts = [Alert.from_payload(json.loads(r[0])) for r in rows]
    return [(a.rule, a.type, a.status, a.channel) for a in alerts]


async def test_a_stuck_run_is_reported_once_and_resolves_when_it_ends(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\n"
        "channels:\n  ch: {apprise: 'json://127.0.0.1:9/ch'}\n  other: {apprise: 'json://127.0.0.1:9/o'}\n",
        RULES,
    )
    clock = ManualClock(T0)
    daemon = Daemon(load_config(cfg), clock=clock)
    daemon.detect.provider_settled("exa")

    async def see(status: str) -> None:
        raw = {"id": "r1", "status": status, "createdAt": "2026-01-01T00:00:00Z"}
        snap = RunSnapshot("exa", "m1", "r1", status, raw, created_at=T0 - 60)
        await daemon.pipeline(MonitorBatch("exa", "m1", [snap]))

    await see("running")
    assert queued(daemon) == [("everything-exa", "run.status", "firing", "other")]
    daemon.lifecycle_tick()
    clock.advance(530)  # 9m50s since created
    daemon.lifecycle_tick()
    assert len(queued(daemon)) == 1
    clock.advance(20)
    daemon.lifecycle_tick()
    daemon.lifecycle_tick()
    clock.advance(3600)
    daemon.lifecycle_tick()  # still stuck: reported once, not on every tick
    assert queued(daemon)[1:] == [("run-stuck", "run.stuck", "firing", "ch")]  # a rule without kind: unmoved
    await see("completed")
    assert sorted(queued(daemon)[2:]) == [
        ("everything-exa", "run.status", "firing", "other"),
        ("run-stuck", "run.status", "resolved", "ch"),
    ]
    assert daemon.store.alerts.firing() == 0
    daemon.store.close()
