"""The fake Olostep's live logs (``agent-logs?stream=1``), read over real loopback HTTP as Server-Sent
Events, on a ManualClock: the frames ``shared/api/olostep.md`` names, ``Last-Event-ID``, and the faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import FakeOlostep, Fault, RunningFake, Scenario, fake_server
from runwatch.sources.sse import SseEvent, SseParser

pytestmark = pytest.mark.anyio
KEY = {"Authorization": "Bearer test-key"}
PATH = "/v1/monitors/monitor_prices/agent-logs"

STORY = Scenario.model_validate(
    {
        "olostep": {
            "monitors": [
                {
                    "id": "monitor_prices",
                    "runs": [
                        {"id": "run_0001", "events": [
                            {"at": -10, "type": "work_received"}, {"at": -5, "type": "run_complete"}]},
                        {"id": "run_0002", "events": [
                            {"at": -1, "type": "work_received"}, {"at": 2, "type": "node_start"},
                            {"at": 4, "type": "node_end"}, {"at": 6, "type": "run_complete"}]},
                    ],
                }
            ]
        }
    }
)  # fmt: skip


@dataclass
class Reader:
    """One open stream, read on a task: every event as it comes."""

    events: list[SseEvent] = field(default_factory=list)
    ended: anyio.Event = field(default_factory=anyio.Event)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def logs(self) -> list[str]:
        return [e.id or "" for e in self.events if e.event == "log"]

    async def wait(self, kind: str, count: int) -> None:
        with anyio.fail_after(5):
            while sum(e.event == kind for e in self.events) < count:
                await self._changed.wait()

    async def run(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        parser = SseParser()
        try:
            async with client.stream("GET", PATH, params={"stream": "1"}, headers=headers) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                async for chunk in resp.aiter_bytes():
                    self.events.extend(parser.feed(chunk))
                    self._changed.set()
                    self._changed = anyio.Event()
        finally:
            self.ended.set()
            self._changed.set()


@asynccontextmanager
async def streaming(
    clock: ManualClock, *, interval: float = 0.05
) -> AsyncIterator[tuple[RunningFake[FakeOlostep], httpx.AsyncClient, anyio.abc.TaskGroup]]:
    async with (
        fake_server("olostep", STORY, clock) as running,
        httpx.AsyncClient(base_url=running.base_url, headers=KEY) as client,
        anyio.create_task_group() as tg,
    ):
        running.fake.live.heartbeat_interval = interval
        yield running, client, tg
        tg.cancel_scope.cancel()


def data(event: SseEvent) -> dict[str, Any]:
    obj = json.loads(event.data)
    assert isinstance(obj, dict)
    return obj


async def test_a_stream_sends_ready_then_the_runs_in_flight_then_each_event_as_it_comes() -> None:
    clock = ManualClock()
    async with streaming(clock) as (running, client, tg):
        reader = Reader()
        tg.start_soon(reader.run, client, {})
        await reader.wait("log", 1)
        assert reader.events[0].event == "ready"
        assert data(reader.events[0]) == {"monitor_id": "monitor_prices", "heartbeat_interval": 0.05}
        # The finished run is not replayed; the one in flight is, from its first event.
        assert reader.logs() == ["evt_run_0002_0000"]
        first = data(reader.events[1])
        assert first["run_id"] == "run_0002" and first["monitor_id"] == "monitor_prices"
        assert first["event"] == {"type": "work_received"} and isinstance(first["ts"], int)
        clock.advance(4)
        await reader.wait("log", 3)
        assert reader.logs() == ["evt_run_0002_0000", "evt_run_0002_0001", "evt_run_0002_0002"]
        await reader.wait("heartbeat", 2)
        assert running.fake.live.open == 1
        assert running.fake.requests.count("agent_logs") == 1


async def test_last_event_id_resumes_after_that_event_and_a_replay_fault_ignores_it() -> None:
    clock = ManualClock()
    async with streaming(clock) as (running, client, tg):
        clock.advance(4)
        resumed = Reader()
        tg.start_soon(resumed.run, client, {"Last-Event-ID": "evt_run_0002_0001"})
        await resumed.wait("log", 1)
        assert resumed.logs() == ["evt_run_0002_0002"]
        running.fake.faults.add(Fault(path=PATH, kind="stream_replay", count=1))
        replayed = Reader()
        tg.start_soon(replayed.run, client, {"Last-Event-ID": "evt_run_0002_0001"})
        await replayed.wait("log", 5)
        assert replayed.logs() == [
            "evt_run_0001_0000", "evt_run_0001_0001",
            "evt_run_0002_0000", "evt_run_0002_0001", "evt_run_0002_0002",
        ]  # fmt: skip
        assert running.fake.live.resumed_from == ["evt_run_0002_0001", "evt_run_0002_0001"]


async def test_faults_end_a_stream_after_some_events_or_stop_its_heartbeats() -> None:
    clock = ManualClock()
    async with streaming(clock) as (running, client, tg):
        clock.advance(4)
        running.fake.faults.add(Fault(path=PATH, kind="stream_drop", events=2, count=1))
        dropped = Reader()
        tg.start_soon(dropped.run, client, {})
        with anyio.fail_after(5):
            await dropped.ended.wait()
        assert dropped.logs() == ["evt_run_0002_0000", "evt_run_0002_0001"]

        running.fake.faults.add(Fault(path=PATH, kind="stream_error", events=1, count=1))
        erred = Reader()
        tg.start_soon(erred.run, client, {})
        with anyio.fail_after(5):
            await erred.ended.wait()
        assert [e.event for e in erred.events] == ["ready", "log", "error"]

        running.fake.faults.add(Fault(path=PATH, kind="stream_silent", count=1))
        silent, beating = Reader(), Reader()
        tg.start_soon(silent.run, client, {})
        tg.start_soon(beating.run, client, {})
        await beating.wait("heartbeat", 3)
        assert not any(e.event == "heartbeat" for e in silent.events)

        running.fake.live.drop()
        with anyio.fail_after(5):
            await silent.ended.wait()
            await beating.ended.wait()
            await running.fake.live.wait_open(0)


async def test_an_unknown_monitor_is_404_and_a_stream_needs_stream_1() -> None:
    clock = ManualClock()
    async with streaming(clock) as (_, client, _tg):
        missing = await client.get("/v1/monitors/monitor_nope/agent-logs", params={"stream": "1"})
        assert missing.status_code == 404
        plain = await client.get(PATH)
        assert plain.status_code == 400
        anonymous = await client.get(PATH, params={"stream": "1"}, headers={"Authorization": ""})
        assert anonymous.status_code == 401
