"""Serving the fakes: ``fake_server`` for tests, ``run_fake`` for ``runwatch fake``, the demo story."""

from __future__ import annotations

import re

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute

from runwatch.clock import ManualClock
from runwatch.fakes import FakeExa, FakeOlostep, fake_server, generate_scenario, make_fake, run_fake


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_make_fake_knows_both_providers() -> None:
    assert isinstance(make_fake("exa", generate_scenario(1, 1, provider="exa")), FakeExa)
    assert isinstance(make_fake("olostep", generate_scenario(1, 1, provider="olostep")), FakeOlostep)
    with pytest.raises(ValueError, match="unknown provider"):
        make_fake("bing")


@pytest.mark.anyio
async def test_run_fake_prints_its_base_url(capsys: pytest.CaptureFixture[str]) -> None:
    async with anyio.create_task_group() as tg:
        base_url = await tg.start(run_fake, "exa", "127.0.0.1:0", None)
        out = capsys.readouterr().out
        assert out == f"fake exa listening: base_url={base_url}\n"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/websets", base_url)
        async with httpx.AsyncClient(headers={"x-api-key": "k"}) as client:
            r = await client.get(base_url + "/v0/monitors")
            assert r.json()["data"][0]["id"] == "monitor_prod_news"
        tg.cancel_scope.cancel()
    # Cancelled means shut down: nothing listens on the port any more.
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", httpx.URL(base_url).port or 0)


@pytest.mark.anyio
async def test_exa_demo_story() -> None:
    """Run A completes at 3 s, run B jumps to failed at 5 s, the old run was done before start."""
    clock = ManualClock()
    async with (
        fake_server("exa", None, clock) as running,
        httpx.AsyncClient(base_url=running.base_url, headers={"x-api-key": "k"}) as client,
    ):
        url = "/v0/monitors/monitor_prod_news/runs"
        first = (await client.get(url)).json()["data"]
        assert [(r["id"], r["status"]) for r in first] == [
            ("mrun_a", "created"),
            ("mrun_history", "completed"),
        ]
        clock.advance(10)
        runs = {r["id"]: r for r in (await client.get(url)).json()["data"]}
        assert runs["mrun_a"]["status"] == "completed"
        assert runs["mrun_b"]["status"] == "failed"
        assert runs["mrun_b"]["failedReason"] == "Quota exceeded: webset search credits exhausted"


@pytest.mark.anyio
async def test_benchmark_sized_scenario_serves_quickly() -> None:
    """100 monitors x 10 runs: built once, then every request is a lookup."""
    clock = ManualClock()
    scenario = generate_scenario(100, 10, provider="both")
    with anyio.fail_after(10):
        async with (
            fake_server("exa", scenario, clock) as exa,
            fake_server("olostep", scenario, clock) as olostep,
            httpx.AsyncClient(headers={"x-api-key": "k", "Authorization": "Bearer k"}) as client,
        ):
            clock.advance(50)
            page = (await client.get(exa.base_url + "/v0/monitors", params={"limit": 200})).json()
            assert len(page["data"]) == 100
            r = await client.get(exa.base_url + "/v0/monitors/monitor_bench_00099/runs/mrun_00099_0003")
            assert r.json()["status"] in ("completed", "failed")
            listed = (await client.get(olostep.base_url + "/v1/monitors")).json()
            assert listed["count"] == 100
            events = (await client.get(olostep.base_url + "/v1/monitors/monitor_bench_00000/events")).json()
            assert events["total_count"] == 6  # runs at 0, 10, ..., 50 s


@pytest.mark.anyio
async def test_the_request_log_tells_which_connection_asked() -> None:
    """Each request is counted under its connection's (host, port): a test with several clients (daemons)
    tells which one asked by its socket's port, and awaits that request (no sleep, no guess by timing)."""
    async with fake_server("exa", None, ManualClock()) as running:
        log = running.fake.requests
        port = httpx.URL(running.url).port or 0
        streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(2)]
        first, second = (("127.0.0.1", s.extra(SocketAttribute.local_address)[1]) for s in streams)
        get = b"GET /websets/v0/monitors HTTP/1.1\r\nhost: fake\r\nx-api-key: k\r\n\r\n"
        with anyio.fail_after(10):
            await streams[1].send(get)
            await log.wait_until(lambda: log.by_client[second] == 1)
            assert log.by_client == {second: 1}
            await streams[0].send(get)
            await streams[1].send(get)
            await log.wait_until(lambda: sum(log.by_client.values()) == 3)
        assert log.by_client == {first: 1, second: 2}
        for stream in streams:
            await stream.aclose()
        log.reset()
        assert not log.by_client
