"""``kill -9`` in the middle of an alert's life: no re-fire, no lost resolve, no repeat sent early.

A real daemon process polls a real fake Exa (on loopback, its story moved by the test's clock) and
forwards a lifecycle rule's notifications to a real webhook receiver that verifies every signature.
The test kills it (SIGKILL) around each step of one alert's life (open, open for a while, resolved,
opened again) and restarts it; at the end every decision reached the receiver, each once by its id,
apart from at most one resend per kill (the notification in flight when the kill came).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import Scenario, fake_server
from runwatch.store import State
from tests.webhook_server import WebhookServer, webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "exa-test-key-0123456789"
MONITOR = "monitor_prod_news"
RULES = """
rules:
  - name: monitor-failing
    match: {kind: run.status, to: failed}
    notify: [hook]
    send_resolved: true
    repeat_interval: 1h
"""
STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {
                    "id": MONITOR,
                    "runs": [
                        {
                            "id": "mrun_a",
                            "timeline": [
                                {"at": "-10s", "status": "created"},
                                {"at": "-5s", "status": "running"},
                                {"at": "10s", "status": "failed", "failed_reason": "Quota exceeded"},
                            ],
                        },
                        {
                            "id": "mrun_b",
                            "timeline": [
                                {"at": "20s", "status": "running"},
                                {"at": "30s", "status": "completed"},
                            ],
                        },
                        {
                            "id": "mrun_c",
                            "timeline": [
                                {"at": "40s", "status": "running"},
                                {"at": "50s", "status": "failed", "failed_reason": "Timeout"},
                            ],
                        },
                    ],
                }
            ]
        }
    }
)


def start(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def decisions(rx: WebhookServer) -> list[tuple[str, str]]:
    """(run_id, status) of each distinct notification delivered, in the order first seen."""
    seen: dict[str, tuple[str, str]] = {}
    for r in rx.delivered():
        if r.payload is not None and r.id not in seen:
            seen[r.id] = (r.payload["run_id"], r.payload["status"])
    return list(seen.values())


async def test_kill_9_mid_lifecycle_keeps_the_alert_where_it_was(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", STORY, clock) as exa, webhook_server(SECRET) as rx:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "lifecycle.yaml").write_text(RULES)
        cfg = tmp_path / "runwatch.yaml"
        cfg.write_text(
            f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\n"
            f"rule_files: ['{tmp_path / 'rules'}/*.yaml']\n"
            f"providers:\n  exa: {{base_url: '{exa.base_url}', api_key: {KEY}, poll_interval: 200ms,"
            " idle_poll_interval: 200ms, retries: 1}\n"
            f"channels:\n  hook:\n    webhook: {{url: '{rx.url}', secret: '{SECRET}'}}\n"
            "delivery: {retry_initial: 50ms, retry_max: 100ms}\n"
        )
        runs = f"/v0/monitors/{MONITOR}/runs"

        async def polls(n: int) -> None:
            """Until the daemon has listed the monitor's runs ``n`` more times."""
            with anyio.fail_after(30):
                await exa.fake.requests.wait_count(exa.fake.requests.count(path=runs) + n, path=runs)

        async def delivered(n: int) -> None:
            with anyio.fail_after(30):
                while len(decisions(rx)) < n:
                    await rx.wait_for(len(rx.delivered()) + 1)

        kills = 0
        proc = start(cfg)
        try:
            await polls(3)  # the first start's silent baseline (mrun_a running), and a cycle after it
            kill(proc)
            kills += 1

            clock.advance(10)  # mrun_a fails: the alert opens
            proc = start(cfg)
            await polls(1)  # killed around the poll that saw the failure: decided or not, never lost
            kill(proc)
            kills += 1
            proc = start(cfg)
            await delivered(1)
            kill(proc)  # right after the firing notification arrived
            kills += 1
            proc = start(cfg)
            await polls(4)  # open for a while: a restart neither re-fires nor repeats it (1h away)
            kill(proc)
            kills += 1

            clock.advance(20)  # mrun_b completes: the alert resolves
            proc = start(cfg)
            await delivered(2)
            kill(proc)
            kills += 1

            clock.advance(20)  # mrun_c fails: a new alert
            proc = start(cfg)
            await delivered(3)
            await polls(4)
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0

    assert decisions(rx) == [("mrun_a", "firing"), ("mrun_b", "resolved"), ("mrun_c", "firing")]
    assert all(r.error is None for r in rx.requests)
    counts = Counter(r.id for r in rx.requests)
    assert sum(c - 1 for c in counts.values()) <= kills, counts
    state = State(tmp_path / "state")
    try:
        assert state.outbox.counts() == {("hook", "sent"): 3}
        [alert] = state.alerts.open.values()
        assert alert.firing and alert.repeats == 0 and alert.last[0]["run_id"] == "mrun_c"
    finally:
        state.close()
