"""Pushes end to end: the fakes post their webhooks to a real daemon's push listener, the daemon reads
what they name through the same source and change detection as a poll, and a real receiver gets the
notification.

``poll_interval: 60s`` and ``idle_poll_interval: 5m`` throughout, on a ManualClock the fakes and the
daemon share: the poll loop waits a real minute between cycles, so what arrives within seconds came by
push; where a test needs a poll, it drives one (``poll_once``) after advancing the clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import FakeExa, FakeOlostep, Fault, RunningFake, Scenario, fake_server
from runwatch.service.app import Daemon
from tests.conftest import ReceiverServer, write_config

pytestmark = pytest.mark.anyio

EXA_KEY = "exa-push-test-key-0123456789"
OLOSTEP_KEY = "olostep-push-test-key-9876543210"
TOKEN = "olostepHookToken_" + "k3Y9" * 6
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}

STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {"id": "monitor_a", "runs": [{"id": "mrun_a", "timeline": [
                    {"at": 10, "status": "created"}, {"at": 20, "status": "running"},
                    {"at": 30, "status": "completed"}]}]},
                {"id": "monitor_b", "runs": [{"id": "mrun_b", "timeline": [
                    {"at": 10, "status": "created"}, {"at": 30, "status": "completed"}]}]},
                {"id": "monitor_live", "runs": [{"id": "mrun_live", "timeline": [
                    {"at": -5, "status": "running"}, {"at": 30, "status": "failed"}]}]},
                *({"id": f"monitor_idle_{i:02d}"} for i in range(30)),
            ]
        },
        "olostep": {
            "monitors": [
                {"id": "monitor_prices", "runs": [{"id": "run_0001", "events": [
                    {"at": 10, "type": "work_received"}, {"at": 30, "type": "run_complete"}]}]},
            ]
        },
    }
)  # fmt: skip

RULES = """
rules:
  - name: run-ended
    match: {kind: run.status, to: [completed, failed]}
    notify: [ops]
    title: "{{ provider }} monitor {{ monitor_id }}: run {{ run_id }} {{ to }}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stand:
    """A daemon with push on, the fakes, the receiver and the clock they share."""

    daemon: Daemon
    exa: RunningFake[FakeExa]
    olostep: RunningFake[FakeOlostep]
    receiver: ReceiverServer
    clock: ManualClock
    ingest: str
    secret: str

    def sign(self, body: bytes, secret: str | None = None) -> str:
        t = int(self.clock.now())
        key = (secret or self.secret).encode()
        return f"t={t},v1={hmac.new(key, f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"

    def notified(self) -> list[str]:
        return [m["title"] for m in self.receiver.receiver.on("/ops")]

    def count(self, provider: str, outcome: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(
            "runwatch_ingest_requests_total", {"provider": provider, "outcome": outcome}
        )
        return value or 0.0

    async def wait_notified(self, title: str, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while title not in self.notified():
                await self.receiver.receiver.wait_for(len(self.notified()) + 1, "/ops", timeout=timeout)

    def reads(self, monitor: str) -> int:
        return self.exa.fake.requests.count(path=f"/v0/monitors/{monitor}/runs")


@asynccontextmanager
async def stand(
    tmp_path: Path, receiver: ReceiverServer, *, extra: str = "", interval: str = "60s"
) -> AsyncIterator[Stand]:
    clock = ManualClock(time.time())
    async with (
        fake_server("exa", STORY, clock) as exa,
        fake_server("olostep", STORY, clock) as olostep,
        httpx.AsyncClient() as client,
    ):
        port = free_port()
        ingest = f"http://127.0.0.1:{port}"
        made = await client.post(
            f"{exa.base_url}/v0/webhooks",
            json={"events": ["monitor.run.created", "monitor.run.completed"], "url": f"{ingest}/hooks/exa"},
            headers={"x-api-key": EXA_KEY},
        )
        secret = made.json()["secret"]
        olostep.fake.set_webhook("monitor_prices", f"{ingest}/hooks/olostep/{TOKEN}")
        text = f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
ingest_listen: 127.0.0.1:{port}
rule_files: [rules/*.yaml]
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: {interval}, idle_poll_interval: 5m,
        webhook_secret: {secret}, max_requests_per_second: 50{extra}}}
  olostep: {{base_url: "{olostep.base_url}", api_key: {OLOSTEP_KEY}, poll_interval: 60s,
            idle_poll_interval: 5m, webhook_token: {TOKEN}}}
channels:
  ops: {{apprise: "{receiver.url("/ops")}"}}
delivery: {{retry_initial: 50ms, retry_max: 200ms}}
"""
        daemon = Daemon(load_config(write_config(tmp_path, text, RULES)), clock=clock, client_options=FAST)
        async with daemon.running():
            for name in daemon.sources:
                await daemon.wait_polls(name, 1)  # the baseline, then the loop waits a real minute
            yield Stand(daemon, exa, olostep, receiver, clock, ingest, secret)


async def test_a_run_that_completes_and_is_pushed_is_notified_within_two_seconds(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        reads = s.reads("monitor_a"), s.reads("monitor_b")
        s.clock.advance(10)  # monitor.run.created: the monitor is read at once, its run recorded
        for monitor, before in zip(("monitor_a", "monitor_b"), reads, strict=True):
            await s.exa.fake.requests.wait_count(before + 1, path=f"/v0/monitors/{monitor}/runs")
        s.clock.advance(20)  # monitor.run.completed (and Olostep's run ends: its webhook)
        began = time.monotonic()
        with anyio.fail_after(2):
            await s.receiver.receiver.wait_for(3, "/ops")
        took = time.monotonic() - began
        assert s.daemon.polls_done == {"exa": 1, "olostep": 1}  # no poll cycle: the pushes did it
    assert sorted(s.notified()) == [
        "exa monitor monitor_a: run mrun_a completed",
        "exa monitor monitor_b: run mrun_b completed",
        "olostep monitor monitor_prices: run run_0001 completed",
    ]
    assert s.count("exa", "accepted") == 4 and s.count("olostep", "accepted") == 1
    pushed = s.daemon.metrics.registry.get_sample_value(
        "runwatch_push_to_read_seconds_count", {"provider": "exa"}
    )
    assert pushed == 4
    print(f"push -> notification: {took * 1000:.0f} ms")


async def test_a_push_is_read_while_a_long_poll_cycle_is_still_under_way(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    # A cycle every second, and the hot monitor's read hangs in it: the cycle is stuck (the other of two
    # request slots stays free: with concurrency 1 the hung request would hold the only one).
    async with stand(tmp_path, receiver, extra=", concurrency: 2", interval="1s") as s:
        live = "/v0/monitors/monitor_live/runs"
        s.exa.fake.faults.add(Fault(path=f"{live}*", kind="slow", delay=30))
        await s.exa.fake.requests.wait_count(
            s.exa.fake.requests.started[("GET", live)] + 1, path=live, started=True
        )
        s.clock.advance(30)
        with anyio.fail_after(2):
            await s.wait_notified("exa monitor monitor_a: run mrun_a completed")
        assert (
            s.exa.fake.requests.count(path=live) < s.exa.fake.requests.started[("GET", live)]
        )  # still stuck


async def test_pushed_twice_and_then_polled_is_one_notification(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        s.exa.fake.pusher.repeat = 2  # Exa sends each event twice, with the same id
        s.clock.advance(30)
        await s.receiver.receiver.wait_for(2, "/ops")
        await s.exa.fake.pusher.wait_deliveries(8, ok=True)
        # And the regular poll that follows reads the same runs again: nothing new.
        s.clock.advance(60)
        assert await s.daemon.poll_once("exa")
        s.clock.advance(300)
        assert await s.daemon.poll_once("exa")  # every idle monitor read too
        with anyio.fail_after(10):  # what those polls decided is sent (a poll does not wait for it)
            while (outbox := s.daemon.store.outbox.counts()).get(("ops", "pending")):
                with anyio.move_on_after(0.2):  # re-check; progress is the event that moves it
                    await s.daemon.deliverer.workers["ops"].wait_progress()
        assert s.count("exa", "duplicate") == 4 and s.count("exa", "accepted") == 4
    assert sorted(s.notified()) == [
        "exa monitor monitor_a: run mrun_a completed",
        "exa monitor monitor_b: run mrun_b completed",
        "exa monitor monitor_live: run mrun_live failed",  # the hot monitor's poll: Exa pushes no failure
        "olostep monitor monitor_prices: run run_0001 completed",
    ]
    assert outbox == {("ops", "sent"): 4}  # one decision each: push and poll agreed on every id


async def test_a_push_lost_on_the_way_is_still_reported_by_polling(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        s.exa.fake.pusher.lose = 1000  # every Exa post is lost
        s.clock.advance(30)
        await s.exa.fake.pusher.wait_deliveries(4)
        assert s.count("exa", "accepted") == 0 and s.daemon.store.hints.pending("exa") == []
        assert not [t for t in s.notified() if t.startswith("exa")]
        s.clock.advance(300)  # monitor_a is idle: read within idle_poll_interval
        assert await s.daemon.poll_once("exa")
        await s.receiver.receiver.wait_for(4, "/ops")
    assert "exa monitor monitor_a: run mrun_a completed" in s.notified()


async def test_a_forged_push_reads_nothing(tmp_path: Path, receiver: ReceiverServer) -> None:
    async with stand(tmp_path, receiver, extra=", concurrency: 1") as s:
        s.exa.fake.pusher.lose = s.olostep.fake.pusher.lose = 1000  # only the test's posts arrive
        s.clock.advance(30)
        await s.exa.fake.pusher.wait_deliveries(4)
        before = s.reads("monitor_a")

        def event(monitor: str, run: str) -> bytes:
            data = {"id": run, "monitorId": monitor, "status": "completed", "object": "monitor_run"}
            return json.dumps({"id": f"evt_forged_{run}", "object": "event", "type": "monitor.run.completed",
                               "data": data, "createdAt": "2026-01-01T00:00:00.000Z"}).encode()  # fmt: skip

        async with httpx.AsyncClient(base_url=s.ingest) as client:
            forged = event("monitor_a", "mrun_a")
            answers = [
                await client.post(
                    "/hooks/exa", content=forged, headers={"Exa-Signature": s.sign(forged, "guess")}
                ),
                await client.post("/hooks/exa", content=forged),
                await client.post("/hooks/olostep/" + "x" * 40, json={"monitor_id": "monitor_prices"}),
            ]
            # A genuine push after them: once it is read, a read the forged ones caused would be done.
            genuine = event("monitor_b", "mrun_b")
            ok = await client.post("/hooks/exa", content=genuine, headers={"Exa-Signature": s.sign(genuine)})
        await s.receiver.receiver.wait_for(1, "/ops")
        assert [a.status_code for a in answers] == [401, 401, 404] and ok.status_code == 200
        assert s.reads("monitor_a") == before
        assert s.daemon.store.hints.pending("exa") == []
    assert s.notified() == ["exa monitor monitor_b: run mrun_b completed"]


async def test_a_burst_of_1000_pushes_is_answered_without_holding_up_polling_or_delivery(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        s.exa.fake.pusher.lose = 1000  # only the test's burst arrives
        s.clock.advance(30)  # monitor_live's run (hot since the baseline) fails now
        bodies = [
            json.dumps({"id": f"evt_burst_{i}", "object": "event", "type": "monitor.run.completed",
                        "createdAt": "2026-01-01T00:00:00.000Z",
                        "data": {"id": f"mrun_gone_{i}", "monitorId": f"monitor_idle_{i % 30:02d}"}}).encode()
            for i in range(1000)
        ]  # fmt: skip
        statuses: list[int] = []
        notified_at: list[float] = []
        under_way = anyio.Event()  # set once a tenth of the burst is answered

        async def burst() -> None:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(base_url=s.ingest, limits=limits) as client:
                gate = anyio.Semaphore(50)

                async def one(body: bytes) -> None:
                    async with gate:
                        answer = await client.post(
                            "/hooks/exa", content=body, headers={"Exa-Signature": s.sign(body)}
                        )
                        statuses.append(answer.status_code)
                        if len(statuses) == 100:
                            under_way.set()

                async with anyio.create_task_group() as tg:
                    for body in bodies:
                        tg.start_soon(one, body)

        async def poll_and_deliver() -> None:
            await under_way.wait()
            began = time.monotonic()
            assert await s.daemon.poll_once("exa")  # a regular cycle in the middle of the burst
            await s.wait_notified("exa monitor monitor_live: run mrun_live failed")
            notified_at.append(time.monotonic() - began)

        began = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(burst)
            tg.start_soon(poll_and_deliver)
        answered = time.monotonic() - began
        assert statuses == [200] * 1000 and s.count("exa", "accepted") == 1000
    assert notified_at[0] < 3.0, notified_at  # the active monitor's failure was not held up
    assert notified_at[0] < answered  # ... it came while the burst was still being answered
    print(f"1000 pushes answered in {answered:.2f} s; the poll's notification in {notified_at[0]:.2f} s")


async def test_olostep_pushes_read_the_monitor_and_nothing_is_read_twice(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        s.exa.fake.pusher.lose = 1000
        s.clock.advance(30)
        await s.wait_notified("olostep monitor monitor_prices: run run_0001 completed", timeout=2)
        await s.olostep.fake.pusher.wait_deliveries(1, ok=True)
        assert s.daemon.store.hints.pending("olostep") == []  # consumed by the read it asked for
        s.clock.advance(300)
        assert await s.daemon.poll_once("olostep")
    titles: list[Any] = [t for t in s.notified() if t.startswith("olostep")]
    assert titles == ["olostep monitor monitor_prices: run run_0001 completed"]


async def test_a_reload_rotates_the_secret_without_rebuilding_the_poller(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with stand(tmp_path, receiver) as s:
        source = s.daemon.sources["exa"]
        cfg = tmp_path / "runwatch.yaml"
        new = "whsec_rotated_" + "N3w" * 10
        cfg.write_text(
            cfg.read_text().replace(f"webhook_secret: {s.secret}", f"webhook_secret: [{new}, {s.secret}]")
        )
        assert s.daemon.reload()
        later = cfg.read_text().replace(f"webhook_secret: [{new}, {s.secret}]", f"webhook_secret: {new}")
        cfg.write_text(later)

        def push(n: int) -> bytes:
            return json.dumps({"id": f"evt_rot_{n}", "object": "event", "type": "monitor.updated",
                               "data": {"id": "monitor_a"}}).encode()  # fmt: skip

        async with httpx.AsyncClient(base_url=s.ingest) as client:

            async def post(n: int, key: str) -> int:
                body = push(n)
                answer = await client.post(
                    "/hooks/exa", content=body, headers={"Exa-Signature": s.sign(body, key)}
                )
                return answer.status_code

            both = [await post(1, new), await post(2, s.secret)]
            assert s.daemon.reload()  # the old secret retired
            old, fresh = await post(3, s.secret), await post(4, new)
        assert both == [200, 200]
        assert (old, fresh) == (401, 200)
        assert s.daemon.sources["exa"] is source  # only push keys changed: polling went on untouched
