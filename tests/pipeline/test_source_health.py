"""``source.error``: a provider that cannot be polled for longer than a rule's ``for`` is one alert,
kept apart from run failures, resolved when a poll succeeds again. Time is a ManualClock; the daemon's
poll cycles and ticks are driven by the test."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import Fault
from runwatch.model import Alert
from runwatch.service.app import Daemon
from tests.conftest import write_config
from tests.test_end_to_end import EXA_KEY, FAST, fakes

pytestmark = pytest.mark.anyio

RULES = """
rules:
  - name: exa-down-page
    match: {provider: exa, kind: source.error}
    for: 5m
    severity: critical
    notify: [pager]
    send_resolved: true
  - name: exa-down-note
    match: {kind: source.error}
    for: 1m
    notify: [chat]
  - name: any-failure
    match: {kind: run.status, to: failed}
    notify: [chat]
"""


def queued(daemon: Daemon) -> list[Alert]:
    rows = daemon.store.db.execute("SELECT alert FROM notifications ORDER BY seq").fetchall()
    return [Alert.from_payload(json.loads(r[0])) for r in rows]


async def test_an_outage_alerts_once_per_rule_after_its_for_and_resolves_when_polling_works(
    tmp_path: Path,
) -> None:
    clock = ManualClock(time.time())
    async with fakes(clock) as (exa, _olostep):
        cfg = write_config(
            tmp_path,
            f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, retries: 0}}
channels:
  pager: {{apprise: "json://127.0.0.1:9/pager"}}
  chat: {{apprise: "json://127.0.0.1:9/chat"}}
""",
            RULES,
        )
        daemon = Daemon(load_config(cfg), clock=clock, client_options=FAST)
        assert await daemon.poll_once("exa")  # healthy first
        fault = exa.fake.faults.add(Fault(kind="status", status=503))
        assert not await daemon.poll_once("exa")
        daemon.lifecycle_tick()
        assert queued(daemon) == []  # failing, but not for long yet
        clock.advance(61)
        assert not await daemon.poll_once("exa")
        daemon.lifecycle_tick()
        daemon.lifecycle_tick()
        [note] = queued(daemon)
        assert (note.type, note.rule, note.channel, note.provider) == (
            "source.error",
            "exa-down-note",
            "chat",
            "exa",
        )
        assert "cannot be polled" in note.title and "http_503" in (note.failed_reason or "")
        clock.advance(240)
        assert not await daemon.poll_once("exa")
        daemon.lifecycle_tick()
        assert [(a.rule, a.status) for a in queued(daemon)] == [
            ("exa-down-note", "firing"), ("exa-down-page", "firing"),
        ]  # fmt: skip
        assert daemon.store.alerts.firing() == 1
        exa.fake.faults.remove(fault)
        assert await daemon.poll_once("exa")  # polling works again: the alert resolves, once
        assert await daemon.poll_once("exa")
        daemon.lifecycle_tick()
        got = [(a.rule, a.status, a.channel) for a in queued(daemon) if a.rule != "any-failure"]
        assert got == [
            ("exa-down-note", "firing", "chat"),
            ("exa-down-page", "firing", "pager"),
            ("exa-down-page", "resolved", "pager"),
        ]
        assert next(a for a in queued(daemon) if a.status == "resolved").title.startswith("[resolved] ")
        assert daemon.store.alerts.firing() == 0
        # A new outage is a new alert (noticed when something is next due: here the monitor list).
        fault = exa.fake.faults.add(Fault(kind="status", status=503))
        clock.advance(301)
        assert not await daemon.poll_once("exa")
        clock.advance(301)
        daemon.lifecycle_tick()
        fresh = [(a.rule, a.status) for a in queued(daemon) if a.type == "source.error"][3:]
        assert sorted(fresh) == [("exa-down-note", "firing"), ("exa-down-page", "firing")]
        for source in daemon.sources.values():
            await source.aclose()
        daemon.store.close()
