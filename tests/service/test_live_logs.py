"""Olostep live logs end to end: the fake Olostep streams a run's agent logs (Server-Sent Events), a
real daemon follows the stream and a real receiver gets each step's notification.

``poll_interval: 60s`` throughout, on a ManualClock the fake and the daemon share: the poll loop waits
a real minute between cycles, so a step that arrives within a second came by the stream. Heartbeats
are real time (a keep-alive), shortened by the tests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import FakeOlostep, Fault, RunningFake, Scenario, fake_server
from runwatch.service.app import Daemon
from runwatch.store.leases import poll_lease
from runwatch.store.postgres.leases import PostgresLeases
from tests.conftest import ReceiverServer, write_config

pytestmark = pytest.mark.anyio

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}
STEPS = ["step_a", "step_b", "step_c", "step_d", "step_e"]


def story(monitors: int = 1) -> Scenario:
    """Per monitor, a run in flight from before the start whose steps come every 2 s, then its end."""
    return Scenario.model_validate(
        {
            "olostep": {
                "monitors": [
                    {"id": f"monitor_{m}", "runs": [{"id": f"run_{m}", "events": [
                        {"at": -5, "type": "work_received"},
                        *({"at": 2 * (i + 1), "type": s} for i, s in enumerate(STEPS)),
                        {"at": 20 + m, "type": "run_complete"}]}]}
                    for m in range(monitors)
                ]
            }
        }
    )  # fmt: skip


RULES = """
rules:
  - name: step
    match: {kind: run.event}
    notify: [ops]
    title: "{{ run_id }} {{ event }}"
  - name: ended
    match: {kind: run.status, to: [completed, failed]}
    notify: [ops]
    title: "{{ run_id }} {{ to }}"
"""


@dataclass
class Stand:
    daemon: Daemon
    olostep: RunningFake[FakeOlostep]
    receiver: ReceiverServer
    clock: ManualClock

    def notified(self) -> list[str]:
        return [m["title"] for m in self.receiver.receiver.on("/ops")]

    def metric(self, name: str, **labels: str) -> float:
        return self.daemon.metrics.registry.get_sample_value(name, {"provider": "olostep", **labels}) or 0.0

    async def wait_notified(self, count: int) -> None:
        await self.receiver.receiver.wait_for(count, "/ops", timeout=5)


@asynccontextmanager
async def stand(
    tmp_path: Path, receiver: ReceiverServer, *, monitors: int = 1, extra: str = "", heartbeat: float = 15.0,
    **daemon_options: Any,
) -> AsyncIterator[Stand]:  # fmt: skip
    clock = ManualClock(time.time())
    async with fake_server("olostep", story(monitors), clock) as olostep:
        olostep.fake.live.heartbeat_interval = heartbeat
        text = f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
rule_files: [rules/*.yaml]
providers:
  olostep: {{base_url: "{olostep.base_url}", api_key: k, poll_interval: 60s, idle_poll_interval: 5m{extra}}}
channels:
  ops: {{apprise: "{receiver.url("/ops")}"}}
delivery: {{retry_initial: 50ms, retry_max: 200ms}}
"""
        config = load_config(write_config(tmp_path, text, RULES))
        daemon = Daemon(config, clock=clock, client_options=FAST, **daemon_options)
        async with daemon.running():
            await daemon.leadership.step()  # (with leases of its own, at once; shared: when it may)
            await daemon.wait_polls("olostep", 1)  # the baseline: the runs in flight recorded silently
            yield Stand(daemon, olostep, receiver, clock)


async def test_streamed_steps_arrive_in_ts_order_once_across_a_dropped_and_replayed_stream(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        live = s.olostep.fake.live
        path = "/v1/monitors/monitor_0/agent-logs"
        # The first stream ends after two steps; the one reopened after it replays everything.
        s.olostep.fake.faults.add(Fault(path=path, kind="stream_drop", events=2, count=1))
        s.olostep.fake.faults.add(Fault(path=path, kind="stream_replay", count=1))
        await live.wait_open(1)
        took = []
        for i in range(len(STEPS)):
            s.clock.advance(2)
            began = time.monotonic()
            await s.wait_notified(i + 1)
            took.append(time.monotonic() - began)
        s.clock.advance(20)  # run_complete: the step, then the read it asks for says how the run ended
        await s.wait_notified(len(STEPS) + 2)
        assert s.daemon.polls_done["olostep"] == 1  # no poll cycle: the stream brought all of it
        # A poll now finds nothing new: the streamed steps are the ones it reports, under their ids.
        s.clock.advance(60)
        await s.daemon.poll_once("olostep")
        await s.daemon.deliverer.wait_empty()
    assert s.notified() == [
        *(f"run_0 {step}" for step in STEPS), "run_0 run_complete", "run_0 completed"
    ]  # fmt: skip
    assert max(took) < 1.0, took
    assert live.resumed_from == [None, "evt_run_0_0001"]  # the reconnection asked to go on
    assert s.metric("runwatch_live_stream_drops_total", reason="closed") >= 1


async def test_a_stream_without_heartbeats_is_dropped_and_reopened(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver, heartbeat=0.2) as s:
        live = s.olostep.fake.live
        silent = Fault(path="/v1/monitors/monitor_0/agent-logs", kind="stream_silent", count=1)
        s.olostep.fake.faults.add(silent)
        began = time.monotonic()
        with anyio.fail_after(5):
            await live.wait_open(2, opened=True)  # the silent one given up after 3 x 0.2 s, reopened
        assert time.monotonic() - began >= 0.6
        assert s.metric("runwatch_live_stream_drops_total", reason="heartbeat") == 1
        with anyio.fail_after(5):
            await live.wait_open(1)
        s.clock.advance(2)  # the reopened stream works
        await s.wait_notified(1)
        assert s.metric("runwatch_live_streams") == 1
        assert s.daemon.polls_done["olostep"] == 1


async def test_max_streams_bounds_the_streams_open(tmp_path: Path, receiver: ReceiverServer) -> None:
    async with stand(tmp_path, receiver, monitors=4, extra=", max_streams: 2") as s:
        live = s.olostep.fake.live
        await live.wait_open(2)
        await s.daemon.live.wait_passes(3)
        assert (live.open, live.opened) == (2, 2)
        assert s.metric("runwatch_live_streams") == 2
        followed = s.daemon.live.following
        s.clock.advance(20 + min(int(m[-1]) for m in followed))  # the first followed run ends ...
        await live.wait_open(3, opened=True)  # ... so a third monitor's stream opens in its place
        await live.wait_open(2)
        assert len(s.daemon.live.following) == 2


async def test_live_logs_false_opens_no_stream(tmp_path: Path, receiver: ReceiverServer) -> None:
    async with stand(tmp_path, receiver, extra=", live_logs: false") as s:
        await s.daemon.live.wait_passes(3)
        s.clock.advance(2)
        await s.daemon.live.wait_passes(2)
        assert s.olostep.fake.requests.count("agent_logs") == 0
        assert s.metric("runwatch_live_streams") == 0
        assert s.notified() == []  # nothing came between polls


async def test_polling_carries_on_while_the_stream_is_refused(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        s.olostep.fake.faults.add(Fault(path="/v1/monitors/*/agent-logs", kind="status", status=503))
        await s.olostep.fake.requests.wait_count(2, "agent_logs")  # refused, retried with backoff
        s.clock.advance(4)
        await s.daemon.poll_once("olostep")
        await s.wait_notified(2)
        assert s.notified() == ["run_0 step_a", "run_0 step_b"]
        assert s.metric("runwatch_live_streams") == 0
        assert s.metric("runwatch_live_stream_drops_total", reason="http") >= 2


async def test_only_the_leader_follows_streams(tmp_path: Path, receiver: ReceiverServer, pg_url: str) -> None:
    lease_clock = ManualClock()
    mine, theirs = PostgresLeases(pg_url, clock=lease_clock), PostgresLeases(pg_url, clock=lease_clock)
    try:
        async with stand(tmp_path, receiver, leases=mine, lease_clock=lease_clock) as s:
            live, lease = s.olostep.fake.live, poll_lease("olostep")
            await live.wait_open(1)  # it leads olostep: it follows the run in flight
            lease_clock.advance(s.daemon.leadership.lease + 0.1)  # paused past its lease ...
            token = theirs.acquire(lease, "runwatch-b", s.daemon.leadership.lease)  # ... b leads now
            assert token is not None
            await live.wait_open(0)  # a standby follows nothing
            await s.daemon.live.wait_passes(3)
            s.clock.advance(2)
            await s.daemon.live.wait_passes(2)
            assert (live.open, live.opened, s.notified()) == (0, 1, [])
            theirs.release(lease, "runwatch-b", token)
            await s.daemon.leadership.step()  # it leads again; its loop reads the state afresh at its
            s.daemon.pollers.wake("olostep")  # next turn (woken here, not a minute on), then it follows
            await live.wait_open(1)
            await s.wait_notified(1)
            assert s.notified() == ["run_0 step_a"]
    finally:
        mine.close()
        theirs.close()
