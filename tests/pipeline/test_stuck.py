"""``run.stuck``: once per run, only for rules that name it, resolved when the run ends; driven by the
daemon's own tick on an injected clock. Across restarts and ``kill -9`` (real daemon processes, a fake
Exa and a webhook receiver): counted from the provider's creation time, never reported again (on
either store), and a repeat never sooner than ``repeat_interval`` after the send before it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import Scenario, fake_server
from runwatch.model import Alert, RunSnapshot
from runwatch.service.app import Daemon
from runwatch.sources.base import MonitorBatch
from tests.conftest import write_config
from tests.service.test_crash_lifecycle import kill, start
from tests.tools import free_port
from tests.webhook_server import WebhookServer, webhook_server

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


# -- across restarts: real daemon processes, a real fake Exa and a real webhook receiver ---------------

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "exa-test-key-0123456789"
MONITOR = "monitor_prod_news"
RUNS = f"/v0/monitors/{MONITOR}/runs"


def story(starts: str, ends: str) -> Scenario:
    """One run of one monitor, running from ``starts`` (its ``createdAt``) until ``ends``."""
    run = {
        "id": "mrun_s",
        "timeline": [{"at": starts, "status": "running"}, {"at": ends, "status": "completed"}],
    }
    return Scenario.model_validate({"exa": {"monitors": [{"id": MONITOR, "runs": [run]}]}})


def daemon_config(
    tmp_path: Path, exa_url: str, rx_url: str, rule: str, metrics_port: int = 0, state_url: str | None = None
) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "stuck.yaml").write_text(
        f"rules:\n  - {{name: run-stuck, match: {{kind: run.stuck}}, notify: [hook], {rule}}}\n"
    )
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:{metrics_port}\n"
        + (f"state: {{url: '{state_url}'}}\n" if state_url else "")
        + f"rule_files: ['{tmp_path / 'rules'}/*.yaml']\n"
        f"providers:\n  exa: {{base_url: '{exa_url}', api_key: {KEY}, poll_interval: 200ms,"
        " idle_poll_interval: 200ms, retries: 1}\n"
        f"channels:\n  hook:\n    webhook: {{url: '{rx_url}', secret: '{SECRET}'}}\n"
        "delivery: {retry_initial: 2s, retry_max: 3s}\n"
    )
    return cfg


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def sent(rx: WebhookServer) -> list[tuple[str, str, str]]:
    """(type, status, run_id) of each distinct notification delivered, in the order first seen."""
    seen: dict[str, tuple[str, str, str]] = {}
    for r in rx.delivered():
        if r.payload is not None and r.id not in seen:
            seen[r.id] = (r.payload["type"], r.payload["status"], r.payload["run_id"])
    return list(seen.values())


async def until(rx: WebhookServer, done: Callable[[], bool], timeout: float = 30) -> None:
    """Until ``done()`` holds, re-checked on every request the receiver gets."""
    with anyio.fail_after(timeout):
        while not done():
            await rx.wait_for(len(rx.requests) + 1, delivered=False, timeout=timeout)


async def rule_matches(port: int) -> float:
    """``runwatch_rule_matches_total`` of the stuck rule, as the daemon's ``/metrics`` says."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "runwatch_rule_matches_total" and s.labels.get("rule") == "run-stuck"
    )


@pytest.mark.parametrize(
    "rule",
    ["stuck_after: 3s, send_resolved: true", "stuck_after: 3s, send_resolved: true, group_wait: 500ms"],
)
async def test_a_clean_restart_does_not_report_a_stuck_run_again(
    tmp_path: Path, rule: str, state_url: str | None
) -> None:
    clock = ManualClock(time.time())
    port = free_port()
    async with fake_server("exa", story("-2s", "60s"), clock) as exa, webhook_server(SECRET) as rx:
        cfg = daemon_config(tmp_path, exa.base_url, rx.url, rule, metrics_port=port, state_url=state_url)

        async def polls(n: int) -> None:
            with anyio.fail_after(30):
                await exa.fake.requests.wait_count(exa.fake.requests.count(path=RUNS) + n, path=RUNS)

        proc = start(cfg)
        try:
            await rx.wait_for(1)  # stuck: reported
            stop(proc)
            proc = start(cfg)  # the run still runs, longer than stuck_after since it was created
            await polls(12)  # > 2 s: the daemon's tick (every second) has looked at it again and again
            # Decided once, in the state: not even matched again (a grouped rule would send it again).
            assert await rule_matches(port) == 0
            clock.advance(60)  # the run completes: the alert resolves, once
            await rx.wait_for(2)
            await polls(5)
        finally:
            stop(proc)
    assert sent(rx) == [("run.stuck", "firing", "mrun_s"), ("run.status", "resolved", "mrun_s")]


async def test_kill_9_does_not_bring_a_stuck_alerts_repeat_forward(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", story("-2s", "1h"), clock) as exa, webhook_server(SECRET) as rx:
        rx.script = [503]  # the first attempt is refused: the alert's first send comes 2-3 s after it fired
        cfg = daemon_config(tmp_path, exa.base_url, rx.url, "stuck_after: 3s, repeat_interval: 5s")
        proc = start(cfg)
        try:
            await rx.wait_for(1)
            kill(proc)  # right after the first send (its outcome recorded or not)
            proc = start(cfg)
            first = rx.delivered()[0].id
            await until(rx, lambda: any(r.id != first for r in rx.delivered()))
        finally:
            stop(proc)
    repeat = next(r for r in rx.delivered() if r.id != first)
    copies = [r for r in rx.requests if r.id == first and r.at <= repeat.at]  # the refused one, a resend
    assert repeat.payload is not None and repeat.payload["type"] == "run.stuck"
    assert [r.payload and r.payload["type"] for r in copies] == ["run.stuck"] * len(copies)
    since = repeat.at - max(r.at for r in copies)  # after the last copy the receiver saw, and so every one
    assert 5.0 <= since < 7.5, (since, [r.at - repeat.at for r in copies])


async def test_a_stuck_run_counts_from_its_providers_creation_time_across_a_restart(
    tmp_path: Path, state_url: str | None
) -> None:
    clock = ManualClock(time.time() - 20)  # the fake's story began 20 s ago: the run was created then
    async with fake_server("exa", story("0s", "1h"), clock) as exa, webhook_server(SECRET) as rx:
        created = exa.fake.t0
        cfg = daemon_config(tmp_path, exa.base_url, rx.url, "stuck_after: 26s", state_url=state_url)  # in 6 s
        runs = exa.fake.requests
        proc = start(cfg)
        try:
            with anyio.fail_after(30):
                await runs.wait_count(runs.count(path=RUNS) + 2, path=RUNS)  # seen and recorded
            stop(proc)
            assert rx.requests == []  # stopped before the run was stuck
            proc = start(cfg)
            await rx.wait_for(1, timeout=20)
        finally:
            stop(proc)
    [got] = rx.delivered()
    assert got.payload is not None and got.payload["type"] == "run.stuck"
    occurred = datetime.fromisoformat(got.payload["occurred_at"]).timestamp()
    assert abs(occurred - created) < 0.002  # the provider's createdAt, not when runwatch saw it
    assert created + 26 <= got.at < created + 26 + 5
