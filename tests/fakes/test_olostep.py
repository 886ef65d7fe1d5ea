"""The fake Olostep server, over real loopback HTTP, driven by a ManualClock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import FakeOlostep, Fault, RunningFake, Scenario, fake_server
from runwatch.fakes._common import iso

KEY = {"Authorization": "Bearer test-key"}
RUN_URL = "/v1/monitors/monitor_prices/runs/run_0001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def story(**olostep: Any) -> Scenario:
    """One monitor whose run completes at 3s, one whose run fails at 5s, one deleted monitor."""
    section: dict[str, Any] = {
        "monitors": [
            {
                "id": "monitor_prices",
                "runs": [
                    {
                        "id": "run_0001",
                        "change_detected": True,
                        "summary": "price dropped",
                        "snapshot": {"price": 39},
                        "events": [
                            {"at": "0s", "type": "work_received", "message": "work received"},
                            {"at": "1s", "type": "node_start", "message": "node start fetch"},
                            {"at": "3s", "type": "run_complete", "message": "run complete"},
                        ],
                    },
                    {
                        "id": "run_0002",
                        "events": [{"at": "20s", "type": "work_received"}],
                    },
                ],
            },
            {
                "id": "monitor_broken",
                "runs": [
                    {
                        "id": "run_0009",
                        "result": "failed",
                        "error_message": "fetch failed: HTTP 503",
                        "events": [
                            {"at": "1s", "type": "work_received"},
                            {"at": "5s", "type": "run_complete", "data": {"error": "HTTP 503"}},
                        ],
                    }
                ],
            },
            {"id": "monitor_gone", "status": "deleted"},
        ]
    }
    section.update(olostep)
    return Scenario.model_validate({"olostep": section})


@asynccontextmanager
async def serving(
    scenario: Scenario | None, clock: ManualClock, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[RunningFake[FakeOlostep], httpx.AsyncClient]]:
    async with (
        fake_server("olostep", scenario, clock) as running,
        httpx.AsyncClient(base_url=running.base_url, headers=KEY if headers is None else headers) as client,
    ):
        yield running, client


@pytest.mark.anyio
async def test_auth_is_required() -> None:
    async with serving(story(), ManualClock(), headers={}) as (running, client):
        assert running.base_url == running.url
        for path in ("/v1/monitors", RUN_URL):
            r = await client.get(path)
            assert r.status_code == 401
            body = r.json()
            assert (body["object"], body["code"], body["type"], body["status"]) == (
                "error",
                "invalid_api_key",
                "authentication_error",
                401,
            )
            assert body["id"]
            assert body["title"] == "Invalid API key"
        # Exa's header is not Olostep's.
        assert (await client.get("/v1/monitors", headers={"x-api-key": "k"})).status_code == 401
        assert (await client.get("/v1/monitors", headers={"Authorization": "Bearer k"})).status_code == 200


@pytest.mark.anyio
async def test_list_monitors_has_no_pagination_and_hides_deleted() -> None:
    async with serving(story(), ManualClock()) as (_, client):
        body = (await client.get("/v1/monitors")).json()
        assert body["count"] == 2
        assert [m["id"] for m in body["monitors"]] == ["monitor_prices", "monitor_broken"]
        assert all("last_run" not in m for m in body["monitors"])
        everything = (await client.get("/v1/monitors", params={"include_deleted": "true"})).json()
        assert everything["count"] == 3
        gone = (await client.get("/v1/monitors/monitor_gone")).json()
        assert gone["status"] == "deleted"


@pytest.mark.anyio
async def test_monitor_last_run_appears_when_the_run_finishes() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (running, client):
        mon = (await client.get("/v1/monitors/monitor_prices")).json()
        assert mon["last_run"] is None
        assert mon["status"] == "active"
        assert set(mon["schedule"]) == {"frequency", "cron", "timezone", "next_run_at"}
        assert mon["schedule"]["next_run_at"] == iso(running.fake.t0 + 20)
        assert isinstance(mon["created"], int)
        assert isinstance(mon["updated"], int)
        assert mon["webhook"] is None
        assert (mon["object"], mon["total_count"]) == ("monitor", 1)
        assert mon["query"]
        clock.advance(3)
        mon = (await client.get("/v1/monitors/monitor_prices")).json()
        assert mon["last_run"] == {
            "id": "run_0001",
            "status": "completed",
            "change_detected": True,
            "ran_at": iso(running.fake.t0 + 3),
        }
        assert mon["error_message"] is None


@pytest.mark.anyio
async def test_failed_run_sets_last_run_status_and_error_message() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (_, client):
        clock.advance(4)
        mon = (await client.get("/v1/monitors/monitor_broken")).json()
        assert (mon["last_run"], mon["error_message"]) == (None, None)
        clock.advance(1)
        mon = (await client.get("/v1/monitors/monitor_broken")).json()
        assert mon["last_run"]["status"] == "failed"
        assert mon["error_message"] == "fetch failed: HTTP 503"
        listed = (await client.get("/v1/monitors")).json()["monitors"][1]
        assert listed["error_message"] == "fetch failed: HTTP 503"


@pytest.mark.anyio
async def test_events_list_shows_runs_as_they_start() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (running, client):
        url = "/v1/monitors/monitor_prices/events"
        first = (await client.get(url)).json()
        assert first["total_count"] == 1
        assert first["has_more"] is False
        assert first["next_cursor"] is None
        [entry] = first["data"]
        assert entry == {
            "id": entry["id"],
            "run_id": "run_0001",
            "created": int(running.fake.t0),
            "changed": False,
            "summary": None,
            "snapshot_url": None,
        }
        clock.advance(3)
        [entry] = (await client.get(url)).json()["data"]
        assert (entry["changed"], entry["summary"]) == (True, "price dropped")
        clock.advance(20)
        ids = [e["run_id"] for e in (await client.get(url)).json()["data"]]
        assert ids == ["run_0002", "run_0001"]  # newest first


@pytest.mark.anyio
async def test_events_pagination() -> None:
    runs = [{"id": f"run_{i:02d}", "events": [{"at": i, "type": "work_received"}]} for i in range(7)]
    clock = ManualClock()
    async with serving(story(monitors=[{"id": "monitor_many", "runs": runs}]), clock) as (_, client):
        clock.advance(10)
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 3}
        while True:
            page = (await client.get("/v1/monitors/monitor_many/events", params=params)).json()
            assert page["total_count"] == (None if "cursor" in params else 7)
            seen += [e["run_id"] for e in page["data"]]
            if not page["has_more"]:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == [f"run_{i:02d}" for i in range(6, -1, -1)]
        counted = (await client.get("/v1/monitors/monitor_many/events", params={"count_only": "true"})).json()
        assert counted == {"data": [], "has_more": False, "next_cursor": None, "total_count": 7}
        for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "bogus"}):
            r = await client.get("/v1/monitors/monitor_many/events", params=bad)
            assert r.status_code == 400
            assert r.json()["code"] == "validation_error"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/v1/monitors/prices/runs/run_0001",
        "/v1/monitors/monitor_prices/runs/0001",
        "/v1/monitors/mon_x/runs/r_1",
    ],
)
async def test_run_ids_are_validated(path: str) -> None:
    async with serving(story(), ManualClock()) as (_, client):
        r = await client.get(path)
        assert r.status_code == 400
        assert r.json() == {"error": "Invalid monitor_id or run_id"}


@pytest.mark.anyio
async def test_unknown_or_invisible_is_404() -> None:
    async with serving(story(), ManualClock()) as (_, client):
        for path in (
            "/v1/monitors/monitor_nope/runs/run_0001",
            "/v1/monitors/monitor_prices/runs/run_nope",
            "/v1/monitors/monitor_prices/runs/run_0002",  # starts at 20s
        ):
            r = await client.get(path)
            assert r.status_code == 404, path
            assert set(r.json()) == {"error"}
        for path in ("/v1/monitors/monitor_nope", "/v1/monitors/monitor_nope/events", "/v2/things"):
            r = await client.get(path)
            assert r.status_code == 404, path
            assert r.json()["code"] == "not_found"


@pytest.mark.anyio
async def test_run_events_become_visible_in_time() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (running, client):
        t0_ms = round(running.fake.t0 * 1000)
        run = (await client.get(RUN_URL)).json()
        assert (run["monitor_id"], run["run_id"]) == ("monitor_prices", "run_0001")
        assert run["log_group"]
        assert run["snapshot"] is None
        [event] = run["events"]
        assert event["event"] == {"type": "work_received"}
        assert event["message"] == "work received"
        assert event["ts"] == t0_ms
        assert event["ingestion_ts"] >= event["ts"]
        assert event["stream"]
        clock.advance(1.5)
        assert [e["event"]["type"] for e in (await client.get(RUN_URL)).json()["events"]] == [
            "work_received",
            "node_start",
        ]
        clock.advance(1.5)
        run = (await client.get(RUN_URL)).json()
        assert [e["ts"] - t0_ms for e in run["events"]] == [0, 1000, 3000]
        assert run["events"][-1]["event"] == {"type": "run_complete"}
        assert run["snapshot"] == {"price": 39}
        assert len({e["id"] for e in run["events"]}) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["event", "name"])
async def test_event_key_spelling(key: str) -> None:
    runs = [{"id": "run_0001", "event_key": key, "events": [{"at": 0, "type": "work_received"}]}]
    scenario = story(monitors=[{"id": "monitor_prices", "runs": runs}])
    async with serving(scenario, ManualClock()) as (_, client):
        [event] = (await client.get(RUN_URL)).json()["events"]
        assert event["event"] == {key: "work_received"}
        assert event["message"] == "work received"


@pytest.mark.anyio
async def test_shuffled_events_are_the_same_events_out_of_order() -> None:
    events = [{"at": i, "type": f"step_{i}"} for i in range(6)]
    runs = [{"id": "run_0001", "shuffle_events": True, "events": events}]
    clock = ManualClock()
    async with serving(story(monitors=[{"id": "monitor_prices", "runs": runs}]), clock) as (_, client):
        clock.advance(10)
        got = (await client.get(RUN_URL)).json()["events"]
        again = (await client.get(RUN_URL)).json()["events"]
        assert got == again  # deterministic
        assert [e["ts"] for e in got] != sorted(e["ts"] for e in got)
        assert sorted(e["event"]["type"] for e in got) == [f"step_{i}" for i in range(6)]


@pytest.mark.anyio
async def test_faults_use_the_route_error_shape() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        fault = running.fake.faults.add(
            Fault(path="/v1/monitors/*/runs/*", kind="status", status=500, count=2)
        )
        r = await client.get(RUN_URL)
        assert r.status_code == 500
        assert set(r.json()) == {"error"}
        assert (await client.get(RUN_URL)).status_code == 500
        assert (await client.get(RUN_URL)).status_code == 200
        assert fault.hits == 2
        running.fake.faults.add(Fault(path="/v1/monitors", kind="status", status=503, count=1))
        r = await client.get("/v1/monitors")
        assert r.status_code == 503
        assert r.json()["status"] == 503


@pytest.mark.anyio
async def test_rate_limit_fault() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        running.fake.faults.add(Fault(path="/v1/monitors/*", kind="rate_limit", retry_after=0.5, count=1))
        assert (await client.get("/v1/monitors")).status_code == 200  # the glob needs a segment
        r = await client.get(RUN_URL)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "0.5"
        assert r.json()["code"] == "rate_limit_exceeded"
        assert (await client.get(RUN_URL)).status_code == 200


@pytest.mark.anyio
async def test_request_log() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        await client.get("/v1/monitors")
        await client.get("/v1/monitors/monitor_prices")
        await client.get("/v1/monitors/monitor_prices/events")
        await client.get(RUN_URL)
        await client.get(RUN_URL)
        log = running.fake.requests
        routes = ("list_monitors", "get_monitor", "list_events", "get_run")
        assert [log.count(r) for r in routes] == [1, 1, 1, 2]
        assert log.count(path=RUN_URL) == 2


@pytest.mark.anyio
async def test_demo_story() -> None:
    """The built-in story (no scenario given) is what the demo relies on."""
    clock = ManualClock()
    async with serving(None, clock) as (_, client):
        ids = [m["id"] for m in (await client.get("/v1/monitors")).json()["monitors"]]
        assert "monitor_prices_daily" in ids
        clock.advance(10)
        daily = (await client.get("/v1/monitors/monitor_prices_daily")).json()
        assert daily["last_run"]["status"] == "completed"
        others = [i for i in ids if i != "monitor_prices_daily"]
        failed = [(await client.get(f"/v1/monitors/{i}")).json() for i in others]
        assert any(m["last_run"]["status"] == "failed" and m["error_message"] for m in failed)


@pytest.mark.anyio
async def test_olostep_sdk_reads_the_fake() -> None:
    """Olostep's own SDK parses our monitors and events (when installed; not a project dependency)."""
    olostep = pytest.importorskip("olostep")
    clock = ManualClock()
    async with fake_server("olostep", story(), clock) as running:
        clock.advance(5)
        async with olostep.AsyncOlostep(api_key="k", _base_url=running.base_url + "/v1") as client:
            listed = await client.monitors.list()
            assert [m.id for m in listed] == ["monitor_prices", "monitor_broken"]
            monitor = await client.monitors.get("monitor_broken")
            assert monitor.last_run.status == "failed"
            events = await client.monitors.events("monitor_prices", limit=10)
            assert [e["run_id"] for e in events.data] == ["run_0001"]
            assert events.total_count == 1


@pytest.mark.anyio
async def test_list_carries_last_run_only_when_the_scenario_says() -> None:
    clock = ManualClock()
    for list_last_run in (False, True):
        async with serving(story(list_last_run=list_last_run), clock) as (_, client):
            clock.advance(4)
            [prices] = [
                m
                for m in (await client.get("/v1/monitors")).json()["monitors"]
                if m["id"] == "monitor_prices"
            ]
            assert ("last_run" in prices) is list_last_run
            if list_last_run:
                single = (await client.get("/v1/monitors/monitor_prices")).json()
                assert prices["last_run"] == single["last_run"] and prices["last_run"]["id"] == "run_0001"


@pytest.mark.anyio
async def test_next_run_at_skips_runs_started_by_hand() -> None:
    runs = [
        {"id": "run_hand", "manual": True, "events": [{"at": "5s", "type": "work_received"}]},
        {"id": "run_late", "scheduled_at": "10s", "events": [{"at": "15s", "type": "work_received"}]},
    ]
    clock = ManualClock()
    async with serving(story(monitors=[{"id": "monitor_prices", "runs": runs}]), clock) as (running, client):
        nxt = []
        for step in (0, 6, 5):
            clock.advance(step)
            for path in ("/v1/monitors/monitor_prices", "/v1/monitors"):
                body = (await client.get(path)).json()
                obj = body if "schedule" in body else body["monitors"][0]
                nxt.append(obj["schedule"]["next_run_at"])
        t0 = running.fake.t0
        assert nxt == [iso(t0 + 10)] * 4 + [None] * 2


@pytest.mark.anyio
async def test_events_may_omit_id_and_ts() -> None:
    events = [
        {"at": "0s", "type": "work_received", "omit": ["id"]},
        {"at": "1s", "type": "node_start", "omit": ["ts"]},
        {"at": "2s", "type": "run_complete", "omit": ["id", "ts"]},
    ]
    clock = ManualClock()
    async with serving(
        story(monitors=[{"id": "monitor_prices", "runs": [{"id": "run_0001", "events": events}]}]), clock
    ) as (_, client):
        clock.advance(3)
        got = (await client.get(RUN_URL)).json()["events"]
        assert [sorted(e) for e in got] == [
            ["event", "ingestion_ts", "message", "stream", "ts"],
            ["event", "id", "ingestion_ts", "message", "stream"],
            ["event", "ingestion_ts", "message", "stream"],
        ]


@pytest.mark.anyio
async def test_page_faults_use_olostep_page_keys() -> None:
    runs = [{"id": f"run_{i:03d}", "events": [{"at": i - 100, "type": "work_received"}]} for i in range(30)]
    async with serving(story(monitors=[{"id": "monitor_prices", "runs": runs}]), ManualClock()) as (
        running,
        client,
    ):
        url = "/v1/monitors/monitor_prices/events"
        running.fake.faults.add(Fault(path=url, kind="endless", count=2))
        first = (await client.get(url, params={"limit": 10})).json()
        second = (await client.get(url, params={"limit": 10, "cursor": first["next_cursor"]})).json()
        assert first["data"] == second["data"] and first["has_more"] and second["has_more"]
        assert first["next_cursor"] != second["next_cursor"]
        running.fake.faults.add(Fault(path=url, kind="ignore_limit", count=1))
        assert len((await client.get(url, params={"limit": 10})).json()["data"]) == 30
