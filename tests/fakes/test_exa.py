"""The fake Exa server, over real loopback HTTP, driven by a ManualClock."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import ExaMonitor, FakeExa, Fault, RunningFake, Scenario, fake_server
from runwatch.fakes._common import iso

KEY = {"x-api-key": "test-key"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def story(**exa: Any) -> Scenario:
    """A small Exa scenario: one monitor, a run that progresses, one that jumps created -> failed."""
    section: dict[str, Any] = {
        "monitors": [
            {
                "id": "monitor_news",
                "webset_id": "webset_a",
                "runs": [
                    {
                        "id": "mrun_ok",
                        "timeline": [
                            {"at": "0s", "status": "created"},
                            {"at": "2s", "status": "running"},
                            {"at": "4s", "status": "completed"},
                        ],
                    },
                    {
                        "id": "mrun_jump",
                        "type": "refresh",
                        "timeline": [
                            {"at": "1s", "status": "created"},
                            {"at": "2s", "status": "running"},
                            {"at": "3s", "status": "failed", "failed_reason": "Quota exceeded"},
                        ],
                    },
                    {"id": "mrun_later", "timeline": [{"at": "10s", "status": "created"}]},
                ],
            }
        ]
    }
    section.update(exa)
    return Scenario.model_validate({"exa": section})


@asynccontextmanager
async def serving(
    scenario: Scenario, clock: ManualClock, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[RunningFake[FakeExa], httpx.AsyncClient]]:
    async with (
        fake_server("exa", scenario, clock) as running,
        httpx.AsyncClient(base_url=running.base_url, headers=KEY if headers is None else headers) as client,
    ):
        yield running, client


@pytest.mark.anyio
async def test_auth_is_required_and_any_key_works() -> None:
    async with serving(story(), ManualClock(), headers={}) as (_, client):
        denied = await client.get("/v0/monitors")
        assert denied.status_code == 401
        body = denied.json()
        assert body["requestId"] == denied.headers["X-Request-Id"]
        assert body["message"]
        assert (await client.get("/v0/monitors", headers={"Authorization": "Bearer"})).status_code == 401
        assert (await client.get("/v0/monitors", headers={"Authorization": "Basic abc"})).status_code == 401
        assert (await client.get("/v0/monitors", headers={"x-api-key": ""})).status_code == 401
        assert (await client.get("/v0/monitors", headers={"x-api-key": "anything"})).status_code == 200
        assert (await client.get("/v0/monitors", headers={"Authorization": "Bearer t"})).status_code == 200


@pytest.mark.anyio
async def test_base_url_is_the_websets_root() -> None:
    async with fake_server("exa", story(), ManualClock()) as running:
        assert running.base_url == running.url + "/websets"
        async with httpx.AsyncClient(headers=KEY) as client:
            r = await client.get(f"{running.url}/websets/v0/monitors/monitor_news")
            assert r.status_code == 200
            assert (await client.get(f"{running.url}/v0/monitors")).status_code == 404


@pytest.mark.anyio
async def test_every_response_has_a_unique_request_id() -> None:
    async with serving(story(), ManualClock()) as (_, client):
        responses = [
            await client.get("/v0/monitors"),
            await client.get("/v0/monitors/nope"),
            await client.get("/v0/unknown/route"),
            await client.post("/v0/monitors"),
        ]
        ids = [r.headers["X-Request-Id"] for r in responses]
        assert all(i.startswith("req_") for i in ids)
        assert len(set(ids)) == len(ids)
        assert [r.status_code for r in responses] == [200, 404, 404, 405]
        assert responses[3].json()["requestId"] == ids[3]


@pytest.mark.anyio
async def test_monitor_object_shape() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (running, client):
        mon = (await client.get("/v0/monitors/monitor_news")).json()
        assert mon["object"] == "monitor"
        assert mon["status"] == "enabled"
        assert mon["websetId"] == "webset_a"
        assert mon["cadence"] == {"cron": "0 9 * * *", "timezone": "Etc/UTC"}
        assert mon["behavior"] == {"type": "search", "config": {"count": 10, "behavior": "append"}}
        assert mon["metadata"] == {}
        assert mon["lastRun"]["id"] == "mrun_ok"
        assert mon["nextRunAt"] == iso(running.fake.t0 + 1)
        assert mon["createdAt"].endswith("Z")
        clock.advance(3)
        mon = (await client.get("/v0/monitors/monitor_news")).json()
        assert (mon["lastRun"]["id"], mon["lastRun"]["status"]) == ("mrun_jump", "failed")
        assert mon["nextRunAt"] == iso(running.fake.t0 + 10)


@pytest.mark.anyio
async def test_run_status_follows_the_clock() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (running, client):
        t0 = running.fake.t0
        url = "/v0/monitors/monitor_news/runs/mrun_ok"
        seen = []
        for _ in range(5):
            r = await client.get(url)
            assert r.status_code == 200
            seen.append(r.json()["status"])
            clock.advance(1)
        assert seen == ["created", "created", "running", "running", "completed"]
        run = (await client.get(url)).json()
        assert run == {
            "id": "mrun_ok",
            "object": "monitor_run",
            "status": "completed",
            "monitorId": "monitor_news",
            "type": "search",
            "completedAt": iso(t0 + 4),
            "failedAt": None,
            "failedReason": None,
            "canceledAt": None,
            "createdAt": iso(t0),
            "updatedAt": iso(t0 + 4),
        }


@pytest.mark.anyio
async def test_a_poller_can_miss_the_middle_status() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (_, client):
        url = "/v0/monitors/monitor_news/runs/mrun_jump"
        assert (await client.get(url)).status_code == 404  # not created yet
        clock.advance(1)
        assert (await client.get(url)).json()["status"] == "created"
        clock.advance(5)
        run = (await client.get(url)).json()
        assert run["status"] == "failed"
        assert run["failedReason"] == "Quota exceeded"
        assert run["type"] == "refresh"
        assert run["failedAt"] == run["updatedAt"]
        assert run["completedAt"] is None


@pytest.mark.anyio
async def test_unknown_status_and_cancel_are_served_verbatim() -> None:
    timeline = [
        {"at": 0, "status": "created"},
        {"at": 1, "status": "paused_by_admin", "allow_unknown": True},
        {"at": 2, "status": "canceled"},
    ]
    clock = ManualClock()
    scenario = story(monitors=[{"id": "m", "runs": [{"id": "r", "timeline": timeline}]}])
    async with serving(scenario, clock) as (running, client):
        clock.advance(1)
        assert (await client.get("/v0/monitors/m/runs/r")).json()["status"] == "paused_by_admin"
        clock.advance(1)
        run = (await client.get("/v0/monitors/m/runs/r")).json()
        assert (run["status"], run["canceledAt"]) == ("canceled", iso(running.fake.t0 + 2))


@pytest.mark.anyio
async def test_fractional_clock_steps_reach_the_step_on_time() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (_, client):
        for _ in range(20):
            clock.advance(0.1)
        assert (await client.get("/v0/monitors/monitor_news/runs/mrun_ok")).json()["status"] == "running"


@pytest.mark.anyio
async def test_list_monitors_pages_with_next_cursor() -> None:
    monitors = [{"id": f"monitor_{i:02d}", "webset_id": f"webset_{i % 2}"} for i in range(7)]
    async with serving(story(monitors=monitors), ManualClock()) as (_, client):
        ids: list[str] = []
        params: dict[str, Any] = {"limit": 3}
        pages = 0
        while True:
            page = (await client.get("/v0/monitors", params=params)).json()
            pages += 1
            ids += [m["id"] for m in page["data"]]
            if not page["hasMore"]:
                assert page["nextCursor"] is None
                break
            params["cursor"] = page["nextCursor"]
        assert ids == [f"monitor_{i:02d}" for i in range(7)]
        assert pages == 3
        default = (await client.get("/v0/monitors")).json()
        assert len(default["data"]) == 7
        assert default["hasMore"] is False

        filtered = (await client.get("/v0/monitors", params={"websetId": "webset_1", "limit": 2})).json()
        assert [m["id"] for m in filtered["data"]] == ["monitor_01", "monitor_03"]
        rest = await client.get(
            "/v0/monitors", params={"websetId": "webset_1", "cursor": filtered["nextCursor"]}
        )
        assert [m["id"] for m in rest.json()["data"]] == ["monitor_05"]
        none = (await client.get("/v0/monitors", params={"websetId": "webset_zzz"})).json()
        assert none == {"data": [], "hasMore": False, "nextCursor": None}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 201}, {"limit": "ten"}, {"cursor": "not-a-cursor"}]
)
async def test_bad_list_parameters_are_400(params: dict[str, Any]) -> None:
    async with serving(story(), ManualClock()) as (_, client):
        for path in ("/v0/monitors", "/v0/monitors/monitor_news/runs"):
            r = await client.get(path, params=params)
            assert r.status_code == 400
            assert r.json()["requestId"] == r.headers["X-Request-Id"]


@pytest.mark.anyio
async def test_list_runs_newest_first_and_stable_while_runs_appear() -> None:
    runs = [{"id": f"mrun_{i}", "timeline": [{"at": f"{i}s", "status": "created"}]} for i in range(6)]
    clock = ManualClock()
    async with serving(story(monitors=[{"id": "monitor_x", "runs": runs}]), clock) as (_, client):
        clock.advance(4)
        first = (await client.get("/v0/monitors/monitor_x/runs", params={"limit": 2})).json()
        assert [r["id"] for r in first["data"]] == ["mrun_4", "mrun_3"]
        assert first["hasMore"] is True
        clock.advance(1)  # mrun_5 appears while the client pages: later pages must not repeat
        rest: list[str] = []
        cursor = first["nextCursor"]
        while cursor:
            page = (
                await client.get("/v0/monitors/monitor_x/runs", params={"limit": 2, "cursor": cursor})
            ).json()
            rest += [r["id"] for r in page["data"]]
            cursor = page["nextCursor"]
        assert rest == ["mrun_2", "mrun_1", "mrun_0"]
        everything = (await client.get("/v0/monitors/monitor_x/runs")).json()
        assert [r["id"] for r in everything["data"]] == [f"mrun_{i}" for i in range(5, -1, -1)]


@pytest.mark.anyio
async def test_unknown_ids_are_404() -> None:
    async with serving(story(), ManualClock()) as (_, client):
        for path in (
            "/v0/monitors/monitor_nope",
            "/v0/monitors/monitor_nope/runs",
            "/v0/monitors/monitor_nope/runs/mrun_ok",
            "/v0/monitors/monitor_news/runs/mrun_nope",
            "/v0/monitors/monitor_news/runs/mrun_later",  # exists, not visible yet
        ):
            r = await client.get(path)
            assert r.status_code == 404, path
            assert set(r.json()) == {"requestId", "error", "message"}


@pytest.mark.anyio
async def test_status_fault_hits_count_times_then_clears() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        fault = running.fake.faults.add(
            Fault(path="/v0/monitors/*/runs/*", kind="status", status=503, count=2)
        )
        url = "/v0/monitors/monitor_news/runs/mrun_ok"
        codes = [(await client.get(url)).status_code for _ in range(3)]
        assert codes == [503, 503, 200]
        assert fault.hits == 2
        assert fault.exhausted
        assert (await client.get("/v0/monitors")).status_code == 200


@pytest.mark.anyio
async def test_fault_error_body_is_json_with_request_id() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        running.fake.faults.add(Fault(path="/v0/monitors", kind="status", status=500))
        r = await client.get("/v0/monitors")
        assert r.status_code == 500
        assert r.json()["requestId"] == r.headers["X-Request-Id"]
        assert (await client.get("/v0/monitors/monitor_news")).status_code == 200  # glob is exact
        running.fake.faults.clear()
        assert (await client.get("/v0/monitors")).status_code == 200


@pytest.mark.anyio
async def test_rate_limit_fault_sends_retry_after() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        running.fake.faults.add(Fault(path="/v0/*", kind="rate_limit", retry_after=7, count=1))
        r = await client.get("/v0/monitors")
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7"
        assert (await client.get("/v0/monitors")).status_code == 200
        running.fake.faults.add(Fault(kind="rate_limit", retry_after=None, count=1))
        r = await client.get("/v0/monitors")
        assert r.status_code == 429
        assert "Retry-After" not in r.headers


@pytest.mark.anyio
async def test_garbage_and_auth_faults() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        running.fake.faults.add(Fault(kind="garbage", count=1))
        running.fake.faults.add(Fault(kind="auth", count=1))
        r = await client.get("/v0/monitors")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text)
        assert (await client.get("/v0/monitors")).status_code == 401
        assert (await client.get("/v0/monitors")).status_code == 200


@pytest.mark.anyio
async def test_slow_fault_delays_for_real() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        running.fake.faults.add(Fault(kind="slow", delay=0.2, count=1))
        started = time.monotonic()
        r = await client.get("/v0/monitors")
        assert r.status_code == 200
        assert time.monotonic() - started >= 0.2
        running.fake.faults.add(Fault(kind="slow", delay=0.2, count=1))
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/v0/monitors", timeout=0.05)


@pytest.mark.anyio
async def test_fault_window_follows_scenario_time() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (running, client):
        running.fake.faults.add(Fault(kind="status", status=502, after=2, until=4))
        codes = []
        for _ in range(5):
            codes.append((await client.get("/v0/monitors")).status_code)
            clock.advance(1)
        assert codes == [200, 200, 502, 502, 200]


@pytest.mark.anyio
async def test_scenario_faults_apply_from_the_start() -> None:
    scenario = story(faults=[{"path": "/v0/monitors", "kind": "status", "status": 500, "count": 1}])
    async with serving(scenario, ManualClock()) as (_, client):
        assert (await client.get("/v0/monitors")).status_code == 500
        assert (await client.get("/v0/monitors")).status_code == 200
    # A second fake from the same scenario counts its own hits.
    async with serving(scenario, ManualClock()) as (_, client):
        assert (await client.get("/v0/monitors")).status_code == 500


@pytest.mark.anyio
async def test_request_log_counts_routes_and_paths() -> None:
    clock = ManualClock()
    async with serving(story(), clock) as (running, client):
        await client.get("/v0/monitors")
        await client.get("/v0/monitors/monitor_news/runs")
        for _ in range(3):
            await client.get("/v0/monitors/monitor_news/runs/mrun_ok")
        await client.get("/v0/monitors/monitor_news/runs/mrun_jump")
        await client.get("/v0/nowhere")
        log = running.fake.requests
        assert log.total == 7
        assert log.count("get_run") == 4
        assert log.count("list_monitors") == 1
        assert log.count("list_runs") == 1
        assert log.count("not_found") == 1
        assert log.count(path="/v0/monitors/monitor_news/runs/mrun_ok") == 3
        assert log.by_status[200] == 5
        log.reset()
        assert log.count() == 0


@pytest.mark.anyio
async def test_exa_sdk_reads_the_fake() -> None:
    """The official SDK is a client nobody here wrote: if it is installed, it must parse our answers.

    Not a project dependency; checked by hand with exa-py 2.27 on the path (2.16 rejects ``failed``).
    """
    exa_py = pytest.importorskip("exa_py")
    clock = ManualClock()
    scenario = story()
    scenario.exa.monitors.append(ExaMonitor(id="monitor_refresh", webset_id="webset_r", behavior="refresh"))
    async with fake_server("exa", scenario, clock) as running:
        clock.advance(3)
        async with exa_py.AsyncExa(api_key="k", api_base=running.url) as exa:
            monitors = await exa.websets.monitors.list(limit=10)
            assert [m.id for m in monitors.data] == ["monitor_news", "monitor_refresh"]
            assert monitors.data[0].last_run.id == "mrun_jump"
            runs = await exa.websets.monitors.runs.list("monitor_news")
            assert [r.id for r in runs.data] == ["mrun_jump", "mrun_ok"]
            failed = await exa.websets.monitors.runs.get("monitor_news", "mrun_jump")
            assert str(getattr(failed.status, "value", failed.status)) == "failed"
            assert failed.failed_at is not None
            monitor = await exa.websets.monitors.get("monitor_refresh")
            assert monitor.last_run is None


@pytest.mark.anyio
async def test_next_run_at_announces_scheduled_runs_only() -> None:
    """``nextRunAt`` is the due time of the next run not started by hand; a run may show later than
    it was due (``scheduled_at``), and a hand-started one is never announced."""
    runs = [
        {"id": "mrun_hand", "manual": True, "timeline": [{"at": "5s", "status": "created"}]},
        {"id": "mrun_late", "scheduled_at": "10s", "timeline": [{"at": "15s", "status": "created"}]},
    ]
    clock = ManualClock()
    async with serving(story(monitors=[{"id": "monitor_news", "runs": runs}]), clock) as (running, client):
        t0 = running.fake.t0
        nxt = [(await client.get("/v0/monitors/monitor_news")).json()["nextRunAt"]]
        for step in (6, 5, 5):  # 6 s: the hand-started run shows; 11 s: due; 16 s: it shows
            clock.advance(step)
            nxt.append((await client.get("/v0/monitors/monitor_news")).json()["nextRunAt"])
            ids = [r["id"] for r in (await client.get("/v0/monitors/monitor_news/runs")).json()["data"]]
        assert nxt == [iso(t0 + 10), iso(t0 + 10), None, None]
        assert ids == ["mrun_late", "mrun_hand"]


def many_runs(n: int) -> Scenario:
    runs = [{"id": f"mrun_{i:03d}", "timeline": [{"at": i - 1000, "status": "completed"}]} for i in range(n)]
    return story(monitors=[{"id": "monitor_news", "runs": runs}])


RUNS_URL = "/v0/monitors/monitor_news/runs"


@pytest.mark.anyio
async def test_cursor_loop_fault_names_the_page_just_asked_for() -> None:
    async with serving(many_runs(30), ManualClock()) as (running, client):
        running.fake.faults.add(Fault(path=RUNS_URL, kind="cursor_loop"))
        first = (await client.get(RUNS_URL, params={"limit": 10})).json()
        second = (await client.get(RUNS_URL, params={"limit": 10, "cursor": first["nextCursor"]})).json()
        assert [r["id"] for r in second["data"]] == [f"mrun_{i:03d}" for i in range(19, 9, -1)]
        assert second["hasMore"] is True and second["nextCursor"] == first["nextCursor"]
        single = (await client.get("/v0/monitors")).json()  # not under the fault's path
        assert single["hasMore"] is False
        running.fake.faults.add(Fault(path="/v0/monitors", kind="cursor_loop"))
        looped = (await client.get("/v0/monitors")).json()
        again = (await client.get("/v0/monitors", params={"cursor": looped["nextCursor"]})).json()
        assert looped["nextCursor"] == again["nextCursor"] == "loop" and again["data"] == looped["data"]


@pytest.mark.anyio
async def test_endless_fault_repeats_the_first_page_with_new_cursors() -> None:
    async with serving(many_runs(30), ManualClock()) as (running, client):
        running.fake.faults.add(Fault(path=RUNS_URL, kind="endless"))
        pages = [(await client.get(RUNS_URL, params={"limit": 10})).json()]
        for _ in range(3):
            pages.append(
                (await client.get(RUNS_URL, params={"limit": 10, "cursor": pages[-1]["nextCursor"]})).json()
            )
        assert all(p["data"] == pages[0]["data"] and p["hasMore"] for p in pages)
        assert len({p["nextCursor"] for p in pages}) == 4


@pytest.mark.anyio
async def test_ignore_limit_and_oversize_faults_make_pages_too_big() -> None:
    async with serving(many_runs(30), ManualClock()) as (running, client):
        fault = running.fake.faults.add(Fault(path=RUNS_URL, kind="ignore_limit", count=1))
        everything = (await client.get(RUNS_URL, params={"limit": 10})).json()
        assert len(everything["data"]) == 30 and everything["hasMore"] is False and fault.hits == 1
        running.fake.faults.add(Fault(path=RUNS_URL, kind="oversize", items=500))
        padded = (await client.get(RUNS_URL, params={"limit": 10})).json()
        assert len(padded["data"]) == 500 and padded["data"][-1] == padded["data"][9]


@pytest.mark.anyio
async def test_empty_huge_and_echo_key_faults() -> None:
    async with serving(story(), ManualClock(), headers={"x-api-key": "k-0123456789abcdef"}) as (
        running,
        client,
    ):
        running.fake.faults.add(Fault(path="/v0/monitors", kind="empty", count=1))
        assert (await client.get("/v0/monitors")).json() == {}
        running.fake.faults.add(Fault(path="/v0/monitors", kind="huge", size=300_000, count=1))
        huge = await client.get("/v0/monitors")
        assert "content-length" not in huge.headers and len(huge.content) == 300_000
        assert huge.json()["data"] == []
        running.fake.faults.add(Fault(kind="echo_key", status=400, echo_at=7, size=50, count=1))
        echo = await client.get("/v0/monitors")
        assert echo.status_code == 400 and echo.headers["x-request-id"]
        assert echo.text == "x" * 7 + "k-0123456789abcdef" + "y" * 25


@pytest.mark.anyio
async def test_skip_lets_the_first_requests_through() -> None:
    async with serving(story(), ManualClock()) as (running, client):
        fault = running.fake.faults.add(
            Fault(path="/v0/monitors", kind="status", status=503, skip=2, count=1)
        )
        statuses = [(await client.get("/v0/monitors")).status_code for _ in range(4)]
        assert statuses == [200, 200, 503, 200] and fault.hits == 1
