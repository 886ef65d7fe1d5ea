"""``kill -9`` right after a push was answered 2xx: the restarted daemon still reads the run it named,
first, because the answer came only once the hint was in the state.

A real daemon process (``runwatch run``) with push on, the fake Exa posting its signed webhook, a real
receiver. The pushed monitor is the last of 200 idle ones: a restart reads every monitor in its first
cycle anyway, so what proves the hint survived is that its monitor is read ahead of the idle ones.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from runwatch.clock import ManualClock
from runwatch.demo.receiver import Receiver
from runwatch.fakes import Fault, Scenario, fake_server
from runwatch.httpserver import serve
from tests.service.test_crash import start
from tests.service.test_push import free_port

pytestmark = pytest.mark.anyio

KEY = "exa-crash-test-key-0123456789"
IDLE = 200
STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                *({"id": f"monitor_idle_{i:03d}"} for i in range(IDLE)),
                # Last in the listing, so last of the idle ones; its run shows already completed.
                {
                    "id": "monitor_push",
                    "runs": [{"id": "mrun_push", "timeline": [{"at": 20, "status": "completed"}]}],
                },
            ]
        }
    }
)
RULES = """
rules:
  - name: completed
    match: {kind: run.status, to: completed}
    notify: [ops]
"""


async def test_kill_9_right_after_a_2xx_still_reads_the_run_first_after_the_restart(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    reads_when_notified: list[int] = []
    async with fake_server("exa", STORY, clock) as exa, httpx.AsyncClient() as client:
        requests = exa.fake.requests
        receiver = Receiver(
            on_message=lambda path, body: reads_when_notified.append(requests.count("list_runs"))
        )
        async with serve(receiver.app, "127.0.0.1:0") as rx:
            port = free_port()
            made = await client.post(
                f"{exa.base_url}/v0/webhooks",
                json={"events": ["monitor.run.completed"], "url": f"http://127.0.0.1:{port}/hooks/exa"},
                headers={"x-api-key": KEY},
            )
            (tmp_path / "rules").mkdir()
            (tmp_path / "rules" / "r.yaml").write_text(RULES)
            cfg = tmp_path / "runwatch.yaml"
            cfg.write_text(
                f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\n"
                f"ingest_listen: 127.0.0.1:{port}\n"
                f"rule_files: [rules/*.yaml]\nchannels:\n  ops: {{apprise: 'json://127.0.0.1:{rx.port}/ops'}}\n"
                f"providers:\n  exa: {{base_url: '{exa.base_url}', api_key: {KEY}, poll_interval: 60s,\n"
                f"        idle_poll_interval: 5m, max_requests_per_second: 500,\n"
                f"        webhook_secret: {made.json()['secret']}}}\n"
            )
            first = start(cfg)
            try:
                with anyio.fail_after(30):
                    await requests.wait_count(IDLE + 1, "list_runs")  # the baseline read every monitor
                # Its read of the pushed monitor hangs: only the hint can carry the push past the kill.
                exa.fake.faults.add(Fault(path="/v0/monitors/monitor_push/runs*", kind="slow", delay=60))
                clock.advance(20)  # mrun_push completes: Exa posts monitor.run.completed
                with anyio.fail_after(30):
                    [delivery] = await exa.fake.pusher.wait_deliveries(1)
            finally:
                os.kill(first.pid, signal.SIGKILL)  # right after the answer
                first.wait()
            assert delivery.ok, delivery
            assert receiver.messages == []
            exa.fake.faults.clear()
            # Exa's events API refused: the restart reads every monitor, as without it (with it, the
            # events would name the pushed monitor too, and this would not show that the hint lived).
            exa.fake.faults.add(Fault(path="/v0/events", kind="status", status=404))
            before = requests.count("list_runs")
            second = start(cfg)
            try:
                await receiver.wait_for(1, timeout=30)
                # Once the idle ones are read too, nothing more comes: one notification.
                with anyio.fail_after(30):
                    await requests.wait_count(before + IDLE + 1, "list_runs")
            finally:
                second.terminate()
                assert second.wait(timeout=20) == 0
    [message] = receiver.messages
    assert "mrun_push" in message[1]["title"]
    # The pushed monitor was read among the restart's first reads, not as the 201st idle one.
    assert reads_when_notified[0] - before < 20, (reads_when_notified, before)
