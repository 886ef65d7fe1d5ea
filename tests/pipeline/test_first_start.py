"""A first start with a long history: the whole look-back is the silent baseline, however many cycles
the listing takes and across a restart in the middle of it; what changes after it is news.

A real daemon against the fake Exa (and Olostep) on a ManualClock, a real json:// receiver; the test
drives the poll cycles (``poll_interval: 1h``) and reads the outbox, the record of every decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import RunningFake, Scenario, fake_server
from runwatch.service.app import Daemon
from runwatch.sources.exa import MAX_PAGES, PAGE_LIMIT
from runwatch.sources.olostep import EVENTS_PAGE, MAX_EVENT_PAGES
from tests.conftest import ReceiverServer, write_config
from tests.pipeline.monitor_harness import daemon_for, queued
from tests.test_end_to_end import EXA_KEY, FAST, OLOSTEP_KEY

pytestmark = pytest.mark.anyio

MONITOR = "monitor_history"
#: More runs than one cycle reads, all inside the look-back (1h), every tenth failed: Exa 40 pages of
#: 50 (two cycles' page budget, as in the issue); Olostep one cycle's 40 event pages and 2 more (each
#: run costs a get-run as well, so it is kept smaller).
HISTORY = {"exa": 2 * MAX_PAGES * PAGE_LIMIT, "olostep": MAX_EVENT_PAGES * EVENTS_PAGE + 2 * EVENTS_PAGE}
NEW = {"exa": "mrun_new", "olostep": "run_new"}


def scenario(provider: str) -> Scenario:
    """``HISTORY`` finished runs created one a second from 3,000 s before the start, then a run that
    starts at 10 s and fails at 20 s."""
    n = HISTORY[provider]

    def failed(i: int) -> dict[str, str]:
        return {"error": "boom"} if i % 10 == 0 else {}

    if provider == "exa":
        runs: list[dict[str, Any]] = [
            {
                "id": f"mrun_{i:04d}",
                "timeline": [
                    {"at": -3000 + i, "status": "created"},
                    {"at": -3000 + i + 0.5, "status": "failed" if i % 10 == 0 else "completed"},
                ],
            }
            for i in range(n)
        ]
        runs.append(
            {"id": NEW["exa"], "timeline": [{"at": 10, "status": "created"}, {"at": 20, "status": "failed"}]}
        )
    else:
        runs = [
            {
                "id": f"run_{i:04d}",
                "result": "failed" if i % 10 == 0 else "completed",
                "events": [
                    {"at": -3000 + i, "type": "work_received"},
                    {"at": -3000 + i + 0.5, "type": "run_complete", "data": failed(i)},
                ],
            }
            for i in range(n)
        ]
        runs.append(
            {
                "id": NEW["olostep"],
                "result": "failed",
                "events": [
                    {"at": 10, "type": "work_received"},
                    {"at": 20, "type": "run_complete", "data": {"error": "boom"}},
                ],
            }
        )
    return Scenario.model_validate({provider: {"monitors": [{"id": MONITOR, "runs": runs}]}})


RULES = """
rules:
  - {name: failures, match: {kind: run.status, to: failed}, notify: [ops]}
"""


def config(tmp_path: Path, provider: str, fake: RunningFake[Any], rec: ReceiverServer) -> Path:
    key = EXA_KEY if provider == "exa" else OLOSTEP_KEY
    return write_config(
        tmp_path,
        f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
providers:
  {provider}: {{base_url: "{fake.base_url}", api_key: {key}, poll_interval: 1h, idle_poll_interval: 1h,
    retries: 0, max_requests_per_second: 100000}}
channels:
  ops: {{apprise: "{rec.url("/ops")}"}}
delivery: {{retry_initial: 50ms, retry_max: 200ms}}
""",
        RULES,
    )


def tracked(daemon: Daemon, provider: str) -> dict[str, int]:
    return {st: n for (p, st), n in daemon.store.runs.status_counts().items() if p == provider}


async def news_after_the_baseline(
    daemon: Daemon, provider: str, clock: ManualClock, rec: ReceiverServer
) -> None:
    """The history is recorded, nothing of it queued; then the new run fails and is sent, alone."""
    n = HISTORY[provider]
    assert tracked(daemon, provider) == {"failed": n // 10, "completed": n - n // 10}
    history = [a.run_id for a in queued(daemon)]
    assert history == [], f"{len(history)} runs of the history notified"
    clock.advance(3600 + 30)  # the new run has failed; the monitor's idle poll is due
    assert await daemon.poll_once(provider)
    await rec.receiver.wait_for(1, "/ops")
    [alert] = queued(daemon)
    assert alert.run_id == NEW[provider] and alert.to_status == "failed"
    [sent] = rec.receiver.on("/ops")
    assert NEW[provider] in sent["title"]


@pytest.mark.parametrize("provider", ["exa", "olostep"])
async def test_a_history_longer_than_a_cycle_is_all_baseline(
    provider: str, tmp_path: Path, receiver: ReceiverServer
) -> None:
    """More runs than a cycle's page budget: the first start reads them over several cycles, every one
    silently; the first failure after that is notified."""
    clock = ManualClock(1_700_000_000.0)
    async with fake_server(provider, scenario(provider), clock) as fake:
        daemon = Daemon(
            load_config(config(tmp_path, provider, fake, receiver)), clock=clock, client_options=FAST
        )
        async with daemon.running():
            await daemon.wait_polls(provider, 1)  # the loop's first cycle: one page budget of history
            for _ in range(3):  # the rest, and a cycle with nothing left to read
                assert await daemon.poll_once(provider)
            await news_after_the_baseline(daemon, provider, clock, receiver)


async def test_a_restart_in_the_middle_of_the_baseline_goes_on_with_it(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    """The daemon stops after 20 of the 40 pages, and the new run fails while it is down: the next
    start reads the other 20 as baseline (from where the first stopped), and reports the new failure
    (it came after the first start), alone."""
    clock = ManualClock(1_700_000_000.0)
    async with fake_server("exa", scenario("exa"), clock) as fake:
        cfg = config(tmp_path, "exa", fake, receiver)
        async with daemon_for(cfg, clock) as first:
            assert await first.poll_once("exa")
            assert sum(tracked(first, "exa").values()) == MAX_PAGES * PAGE_LIMIT
        clock.advance(30)
        second = Daemon(load_config(cfg), clock=clock, client_options=FAST)
        async with second.running():
            await second.wait_polls("exa", 1)
            for _ in range(2):
                assert await second.poll_once("exa")
            await receiver.receiver.wait_for(1, "/ops")
            n = HISTORY["exa"]
            assert tracked(second, "exa") == {"failed": n // 10 + 1, "completed": n - n // 10}
            assert [a.run_id for a in queued(second)] == [NEW["exa"]]
    assert [NEW["exa"] in m["title"] for m in receiver.receiver.on("/ops")] == [True]
