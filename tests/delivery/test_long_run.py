"""One Olostep run that logs 3,000 steps, each matched by a rule: the whole daemon, the fake Olostep
and a real webhook receiver (issue 18, item 1).

Each notification keeps the run's own fields, not the run's whole event list: before, every outbox row
held all 3,000 events (about 500 KB a row), the state grew to gigabytes and delivery stalled.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runwatch.clock import ManualClock
from runwatch.fakes import Scenario, fake_server
from runwatch.model import ChangeKind, rfc3339
from runwatch.pipeline.detect import diff
from runwatch.pipeline.match import alerts_for
from runwatch.rules import load_rules
from runwatch.sources.olostep import derive
from runwatch.store import STATE_FILE
from tests.conftest import write_config
from tests.test_end_to_end import OLOSTEP_KEY
from tests.webhook_server import webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "webhook-v1.json").read_text())
STEPS = 3000
#: The goals: every step notified within this long after it is visible, and a state this small.
DEADLINE = 30.0
STATE_LIMIT = 20 * 1024 * 1024


def step_message(i: int) -> str:
    return f"step {i:04d}: fetched https://shop.example.com/item/{i} in 412 ms (200)"


def long_run() -> Scenario:
    """A run that starts at 5 s and logs a step every 10 ms, with the payload a real step carries."""
    events = [
        {
            "at": 5 + i / 100,
            "type": "work_received" if i == 0 else ("run_complete" if i == STEPS - 1 else "node_start"),
            "message": step_message(i),
            "data": {"node": f"fetch_{i % 7}", "attempt": 1},
        }
        for i in range(STEPS)
    ]
    return Scenario.model_validate(
        {
            "olostep": {
                "monitors": [
                    {
                        "id": "monitor_long",
                        "runs": [{"id": "run_long", "snapshot": {"price": 39}, "events": events}],
                    }
                ]
            }
        }
    )


def run_detail(steps: int) -> dict[str, Any]:
    """The run endpoint's answer for a run that has logged ``steps`` steps (as the fake serves it)."""
    events = [
        {
            "id": f"evt_{i:05d}",
            "ts": 1_780_000_000_000 + 10 * i,
            "ingestion_ts": 1_780_000_000_120 + 10 * i,
            "stream": "agent",
            "message": step_message(i),
            "event": {"type": "node_start", "node": f"fetch_{i % 7}", "attempt": 1},
        }
        for i in range(steps)
    ]
    return {
        "monitor_id": "monitor_long",
        "run_id": "run_long",
        "snapshot": {"price": 39},
        "log_group": "/olostep/monitors/monitor_long",
        "events": events,
    }


def test_an_alert_about_one_step_keeps_the_runs_own_fields_not_its_event_list(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: every-step\n    match: {provider: olostep, kind: run.event}\n    notify: [hook]\n"
        "    body: \"{{ run.log_group }} {{ run.run_id }} {{ run.snapshot.price }} {{ 'events' in run }}\"\n"
    )
    [rule] = load_rules([path], channels={"hook"})
    sizes = {}
    for steps in (3, STEPS):
        snap = derive("monitor_long", "run_long", run_detail(steps), None, None)
        events = [c for c in diff(None, snap, 1.0) if c.kind is ChangeKind.RUN_EVENT]
        assert len(events) == steps
        [alert] = alerts_for(rule.decide(events[-1]))
        stored = alert.stored()
        assert "events" not in stored["run"] and stored["run"]["snapshot"] == {"price": 39}
        assert stored["message"] == step_message(steps - 1) and stored["event"] == "node_start"
        # Templates read the run's own fields; the event list is not in it.
        assert alert.body == "/olostep/monitors/monitor_long run_long 39 False"
        sizes[steps] = len(json.dumps(stored))
    # What an outbox row holds does not grow with the run (it was about 500 KB at 3,000 steps).
    assert sizes[STEPS] <= sizes[3] + 10 and sizes[STEPS] < 2000, sizes


def state_bytes(state_dir: Path) -> int:
    """The state file and its WAL, as they are on disk now."""
    return sum(p.stat().st_size for p in state_dir.glob(f"{STATE_FILE}*") if p.is_file())


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    """``runwatch run`` in a process of its own, as in production: the test's loop (the fake and the
    receiver) keeps the time and watches the state however busy the daemon is."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)], stdout=out, stderr=out
        )


async def polls_ok(port: int) -> float:
    """The daemon's error-free Olostep poll cycles so far, from its /metrics (0 until it serves them)."""
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.HTTPError:
        return 0.0
    if answer.status_code != 200:  # the early answer, before the daemon has loaded its state
        return 0.0
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            if s.name == "runwatch_polls_total" and s.labels == {"provider": "olostep", "outcome": "ok"}:
                return s.value
    return 0.0


async def test_a_run_with_3000_steps_is_notified_in_full_in_order_within_a_bounded_state(
    tmp_path: Path,
) -> None:
    clock = ManualClock(time.time())
    state_dir = tmp_path / "state"
    rules = """
rules:
  - {name: every-step, match: {provider: olostep, kind: run.event}, notify: [hook]}
"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with fake_server("olostep", long_run(), clock) as olostep, webhook_server(SECRET) as rx:
        body = f"""
state_dir: {state_dir}
metrics_listen: 127.0.0.1:{port}
providers:
  olostep: {{base_url: "{olostep.base_url}", api_key: {OLOSTEP_KEY}, poll_interval: 100ms,
             idle_poll_interval: 100ms}}
channels:
  hook: {{webhook: {{url: "{rx.url}", secret: "{SECRET}"}}}}
"""
        cfg = write_config(tmp_path, body, rules)
        proc = start_daemon(cfg, tmp_path / "daemon.log")
        largest = 0
        try:
            with anyio.fail_after(60):  # start-up, then the monitor before its run: a silent baseline
                while await polls_ok(port) < 1:
                    assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
                    log, asked = olostep.fake.requests, olostep.fake.requests.total
                    with anyio.move_on_after(0.5):  # re-check; the daemon's next request moves it
                        await log.wait_until(lambda log=log, n=asked: log.total > n)
            clock.advance(60)  # every step of the run is visible from the next poll on
            started = time.monotonic()
            with anyio.move_on_after(DEADLINE):
                while len(rx.requests) < STEPS:
                    largest = max(largest, state_bytes(state_dir))
                    assert largest < STATE_LIMIT, f"state at {largest:,} bytes with {len(rx.requests)} sent"
                    with anyio.move_on_after(0.2):
                        await rx.wait_for(len(rx.requests) + 1, delivered=False, timeout=DEADLINE)
            took = time.monotonic() - started
            largest = max(largest, state_bytes(state_dir))
        except BaseException:
            proc.kill()  # a daemon stuck writing a state too large is not waited for
            proc.wait()
            raise
        proc.terminate()
        code = proc.wait(timeout=20)
    assert len(rx.requests) == STEPS, f"{len(rx.requests)} of {STEPS} notified in {DEADLINE:.0f}s"
    assert took < DEADLINE
    assert largest < STATE_LIMIT, f"state at {largest:,} bytes"
    assert code == 0
    delivered = rx.delivered()
    assert len(delivered) == STEPS and len({r.id for r in delivered}) == STEPS  # each once, signed
    payloads = [r.payload for r in delivered if r.payload is not None]
    # In ts order: each step's own time, and its message, in the order the run logged them.
    assert [p["message"] for p in payloads] == [step_message(i) for i in range(STEPS)]
    times = [p["occurred_at"] for p in payloads]
    assert times == sorted(times) and len(set(times)) == STEPS
    last = payloads[-1]
    jsonschema.validate(last, SCHEMA)
    # The run's own fields, without its event list (the step is in event/message).
    assert "events" not in last["run"]
    assert (last["run"]["run_id"], last["run"]["monitor_id"]) == ("run_long", "monitor_long")
    assert last["run"]["log_group"] == "/olostep/monitors/monitor_long"
    assert last["event"] == "run_complete" and last["type"] == "run.event"
    assert last["occurred_at"] == rfc3339(round((olostep.fake.t0 + 5 + (STEPS - 1) / 100) * 1000) / 1000)
    print(f"{STEPS} steps notified in {took:.1f}s; state and WAL at most {largest:,} bytes")
