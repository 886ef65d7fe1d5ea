"""Catching up through Exa's events API: after a downtime, and for idle monitors, one paged request
says which monitors had runs, instead of a read of every monitor; compared, on the same scenario and
the same clock, with the listing (push off), which must report exactly the same.

A real daemon on the fake Exa and a real receiver; a ManualClock the fake and the daemon share, with
``poll_interval: 60s`` and ``idle_poll_interval: 5m``; cycles are driven with ``poll_once``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import FakeExa, Fault, RunningFake, Scenario, fake_server
from runwatch.service.app import Daemon
from tests.conftest import ReceiverServer, write_config

pytestmark = pytest.mark.anyio

IDLE = 40
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}
SECRET = "whsec_catch_up_test_secret"


def story() -> Scenario:
    """40 idle monitors; from t = 600 s three of them run (one completes, one fails, one is still
    running) and a monitor created at 500 s runs too: all started by hand (no schedule announces them,
    so only a read of the monitor, or an event, shows them)."""
    monitors: list[dict[str, object]] = [{"id": f"monitor_{i:02d}"} for i in range(IDLE)]
    runs = {
        5: [{"at": 600, "status": "created"}, {"at": 660, "status": "completed"}],
        17: [{"at": 700, "status": "created"}, {"at": 760, "status": "failed", "failed_reason": "quota"}],
        33: [{"at": 800, "status": "created"}, {"at": 810, "status": "running"}],
    }
    for i, timeline in runs.items():
        monitors[i]["runs"] = [{"id": f"mrun_{i:02d}", "manual": True, "timeline": timeline}]
    monitors.append(
        {"id": "monitor_new", "added_at": 500, "runs": [{"id": "mrun_new", "manual": True, "timeline": [
            {"at": 900, "status": "created"}, {"at": 950, "status": "completed"}]}]}
    )  # fmt: skip
    return Scenario.model_validate({"exa": {"monitors": monitors}})


#: What either path reports of the story (each run first seen as it stood then).
REPORTED = {
    "monitor_05 mrun_05 completed",
    "monitor_17 mrun_17 failed",
    "monitor_33 mrun_33 running",
    "monitor_new mrun_new completed",
}
RULES = """
rules:
  - name: runs
    match: {kind: run.status}
    notify: [ops]
    title: "{{ monitor_id }} {{ run_id }} {{ to }}"
"""


@asynccontextmanager
async def daemon(
    tmp_path: Path, state: Path, exa: RunningFake[FakeExa], clock: ManualClock, receiver: ReceiverServer,
    *, push: bool,
) -> AsyncIterator[Daemon]:  # fmt: skip
    secret = f", webhook_secret: {SECRET}" if push else ""
    text = f"""
state_dir: {state}
metrics_listen: 127.0.0.1:0
rule_files: [rules/*.yaml]
providers:
  exa: {{base_url: "{exa.base_url}", api_key: k, poll_interval: 60s, idle_poll_interval: 5m,
        max_requests_per_second: 1000{secret}}}
channels:
  ops: {{apprise: "{receiver.url("/ops")}"}}
"""
    d = Daemon(load_config(write_config(tmp_path, text, RULES)), clock=clock, client_options=FAST)
    async with d.running():
        await d.wait_polls("exa", 1)  # the start's cycle; the next one is a real minute away
        yield d
        await d.deliverer.wait_empty()


def notified(receiver: ReceiverServer) -> set[str]:
    return {m["title"] for m in receiver.receiver.on("/ops")}


async def test_after_a_downtime_the_events_api_reads_fewer_requests_than_listing_and_misses_nothing(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", story(), clock) as exa:
        fake = exa.fake
        async with daemon(tmp_path, tmp_path / "state", exa, clock, receiver, push=True):
            pass  # the first start: every monitor read once (its baseline); its coverage kept
        shutil.copytree(tmp_path / "state", tmp_path / "twin")  # the same state, for the listing
        clock.advance(1000)  # down for 1,000 s while monitors ran

        fake.requests.reset()
        async with daemon(tmp_path, tmp_path / "state", exa, clock, receiver, push=True) as d:
            assert d.sources["exa"].events.reads == 1  # type: ignore[attr-defined]
        by_events = dict(fake.requests.by_route)
        pushed = notified(receiver)
        receiver.receiver.messages.clear()

        fake.requests.reset()
        async with daemon(tmp_path, tmp_path / "twin", exa, clock, receiver, push=False):
            pass
        by_listing = dict(fake.requests.by_route)
        listed = notified(receiver)

    assert listed == REPORTED
    assert pushed == listed  # nothing missed
    # One events page and the four monitors it (or the listing) showed, against every monitor.
    assert by_events == {"list_monitors": 1, "list_events": 1, "list_runs": 4}, by_events
    assert by_listing == {"list_monitors": 1, "list_runs": IDLE + 1}, by_listing
    print(
        f"requests after the downtime: events {sum(by_events.values())}, listing {sum(by_listing.values())}"
    )


async def test_idle_monitors_are_covered_by_one_events_read_an_interval_and_a_new_run_is_still_found(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", story(), clock) as exa:
        fake = exa.fake
        async with daemon(tmp_path, tmp_path / "state", exa, clock, receiver, push=True) as d:
            fake.requests.reset()
            for _ in range(20):  # 20 minutes, four idle intervals; the runs come at 600..950 s
                clock.advance(60)
                await d.poll_once("exa")
            await d.deliverer.wait_empty()
            assert notified(receiver) == REPORTED
            # One events read an idle interval; a monitor is read when it is new, when the events name
            # it, and while its run is unfinished; no idle monitor one by one (that is 4 x 40 reads).
            assert fake.requests.count("list_events") == 4
            reads = fake.requests.count("list_runs")
            assert reads <= 12, reads
            fake.faults.add(Fault(path="/v0/events", kind="status", status=503))
            fake.requests.reset()
            for _ in range(12):  # the events API fails: every idle monitor is polled again, as ever
                clock.advance(60)
                await d.poll_once("exa")
            assert fake.requests.count("list_runs") >= IDLE
        print(f"list_runs over 20 cycles with events: {reads} (idle polls would be {4 * IDLE})")
