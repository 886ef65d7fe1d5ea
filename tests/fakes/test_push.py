"""The fakes' webhooks, against a real receiver on loopback: Exa's ``/v0/webhooks`` and its signed run
events, Olostep's post to a monitor's ``webhook.url``, and the failures on demand (lost, repeated,
retried with the same event id)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runwatch.clock import ManualClock
from runwatch.fakes import Scenario, fake_server
from runwatch.httpserver import serve

pytestmark = pytest.mark.anyio
KEY = {"x-api-key": "test-key"}

STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {
                    "id": "monitor_news",
                    "runs": [
                        {"id": "mrun_old", "timeline": [{"at": -60, "status": "created"},
                                                        {"at": -30, "status": "completed"}]},
                        {"id": "mrun_ok", "timeline": [{"at": 5, "status": "created"},
                                                       {"at": 6, "status": "running"},
                                                       {"at": 10, "status": "completed"}]},
                        {"id": "mrun_bad", "timeline": [{"at": 7, "status": "created"},
                                                        {"at": 12, "status": "failed"}]},
                    ],
                    "status_changes": [{"at": 20, "status": "disabled"}],
                }
            ]
        },
        "olostep": {
            "monitors": [
                {
                    "id": "monitor_prices",
                    "webhook_url": "http://127.0.0.1:9/never-used",
                    "runs": [
                        {"id": "run_0001", "result": "completed", "change_detected": True,
                         "events": [{"at": 5, "type": "work_received"}, {"at": 9, "type": "run_complete"}]},
                    ],
                }
            ]
        },
    }
)  # fmt: skip


@dataclass
class Inbox:
    """A receiver that keeps every post and answers what the test scripts."""

    url: str = ""
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def endpoint(self, request: Request) -> Response:
        self.posts.append((dict(request.headers), await request.body()))
        self.changed.set()
        self.changed = anyio.Event()
        return Response(status_code=self.answers.pop(0) if self.answers else 200)

    async def wait(self, n: int) -> None:
        with anyio.fail_after(10):
            while len(self.posts) < n:
                await self.changed.wait()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.posts]


async def make_hook(client: httpx.AsyncClient, base_url: str, events: list[str], url: str) -> dict[str, Any]:
    made = await client.post(f"{base_url}/v0/webhooks", json={"events": events, "url": url}, headers=KEY)
    assert made.status_code == 200
    hook: dict[str, Any] = made.json()
    return hook


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    box = Inbox()
    from starlette.applications import Starlette

    app = Starlette(routes=[Route("/hook{rest:path}", box.endpoint, methods=["POST"])])
    async with serve(app, "127.0.0.1:0") as http:
        box.url = f"{http.url}/hook"
        yield box


async def test_exa_webhooks_are_made_and_listed_and_the_secret_shows_once(inbox: Inbox) -> None:
    async with fake_server("exa", STORY, ManualClock(time.time())) as exa, httpx.AsyncClient() as client:
        url = f"{exa.base_url}/v0/webhooks"
        made = await client.post(
            url, json={"events": ["monitor.run.completed"], "url": inbox.url}, headers=KEY
        )
        listed = await client.get(url, headers=KEY)
        no_key = await client.post(url, json={"events": ["monitor.run.completed"], "url": inbox.url})
        bad = [
            await client.post(url, json=body, headers=KEY)
            for body in ({"events": [], "url": inbox.url}, {"events": ["x"], "url": "ftp://x"}, [1])
        ]
    hook = made.json()
    assert made.status_code == 200 and hook["object"] == "webhook" and hook["status"] == "active"
    assert len(hook["secret"]) >= 32 and hook["events"] == ["monitor.run.completed"]
    [shown] = listed.json()["data"]
    assert shown["id"] == hook["id"] and shown["url"] == inbox.url and shown["secret"] is None
    assert listed.json()["hasMore"] is False
    assert no_key.status_code == 401 and {r.status_code for r in bad} == {400}
    assert exa.fake.requests.count("create_webhook") == 5  # every attempt is logged, as for reads


async def test_exa_posts_its_run_events_signed_from_the_webhook_on(inbox: Inbox) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", STORY, clock) as exa, httpx.AsyncClient() as client:
        events = ["monitor.run.created", "monitor.run.completed", "monitor.updated"]
        secret = (await make_hook(client, exa.base_url, events, inbox.url))["secret"]
        clock.advance(30)
        await inbox.wait(4)
    kinds = [(b["type"], b["data"].get("id")) for b in inbox.bodies()]
    # In scenario order; mrun_old's events came before the webhook, and a failed run has no event.
    assert kinds == [
        ("monitor.run.created", "mrun_ok"),
        ("monitor.run.created", "mrun_bad"),
        ("monitor.run.completed", "mrun_ok"),
        ("monitor.updated", "monitor_news"),
    ]
    for headers, body in inbox.posts:
        t, v1 = (part.split("=", 1)[1] for part in headers["exa-signature"].split(","))
        # What exa.md documents: HMAC-SHA256("<t>.<raw body>") keyed with the secret's UTF-8 bytes.
        assert v1 == hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert abs(int(t) - clock.now()) <= 1
        envelope = json.loads(body)
        assert (
            set(envelope) == {"id", "object", "type", "data", "createdAt"} and envelope["object"] == "event"
        )
    completed = inbox.bodies()[2]["data"]
    assert (completed["status"], completed["monitorId"]) == ("completed", "monitor_news")
    assert [d.ok for d in exa.fake.pusher.deliveries] == [True] * 4


async def test_a_post_not_answered_2xx_is_tried_again_with_the_same_event_id(inbox: Inbox) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", STORY, clock) as exa, httpx.AsyncClient() as client:
        exa.fake.pusher.backoff = 0.01
        await make_hook(client, exa.base_url, ["monitor.run.completed"], inbox.url)
        inbox.answers = [500, 503]
        clock.advance(10)
        await inbox.wait(3)
    ids = [b["id"] for b in inbox.bodies()]
    assert ids == ["evt_mrun_ok_completed"] * 3
    assert [(d.attempt, d.status) for d in exa.fake.pusher.deliveries] == [(1, 500), (2, 503), (3, 200)]


async def test_lost_and_repeated_posts_on_demand(inbox: Inbox) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", STORY, clock) as exa, httpx.AsyncClient() as client:
        pusher = exa.fake.pusher
        await make_hook(client, exa.base_url, ["monitor.run.created"], inbox.url)
        pusher.lose = 2
        pusher.repeat = 2
        clock.advance(8)
        await inbox.wait(2)
        await pusher.pump()
    # Both posts of mrun_ok's created event were lost on the way (no retry: the sender thinks they
    # went); mrun_bad's came twice, with the same event id.
    assert [(b["data"]["id"], b["id"]) for b in inbox.bodies()] == [("mrun_bad", "evt_mrun_bad_created")] * 2
    assert [(d.event_id, d.lost) for d in pusher.deliveries][:2] == [("evt_mrun_ok_created", True)] * 2


async def test_olostep_posts_to_the_monitors_webhook_url_when_a_run_completes(inbox: Inbox) -> None:
    clock = ManualClock(time.time())
    async with fake_server("olostep", STORY, clock) as olostep, httpx.AsyncClient() as client:
        url = f"{inbox.url}/olostep/secret-token"
        olostep.fake.set_webhook("monitor_prices", url)
        got = await client.get(f"{olostep.base_url}/v1/monitors/monitor_prices",
                               headers={"authorization": "Bearer k"})  # fmt: skip
        clock.advance(10)
        await inbox.wait(1)
    assert got.json()["webhook"] == {"url": url}
    [(headers, body)] = inbox.posts
    assert "exa-signature" not in headers  # Olostep's webhooks are not signed: the URL is the secret
    assert json.loads(body) == {"monitor_id": "monitor_prices", "run_id": "run_0001", "status": "completed",
                                "change_detected": True, "ran_at": json.loads(body)["ran_at"]}  # fmt: skip
    # The scenario's own webhook_url was replaced: nothing went there.
    assert [d.subscription for d in olostep.fake.pusher.deliveries] == ["hook_0002"]


async def test_exa_events_api_lists_the_same_events_past_ones_too_filtered_and_paged() -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", STORY, clock) as exa, httpx.AsyncClient(base_url=exa.base_url) as client:
        clock.advance(15)

        async def ids(**params: Any) -> tuple[list[str], dict[str, Any]]:
            got = await client.get("/v0/events", params=params, headers=KEY)
            assert got.status_code == 200, got.text
            body: dict[str, Any] = got.json()
            return [e["id"] for e in body["data"]], body

        runs = ["monitor.run.created", "monitor.run.completed"]
        every, _ = await ids(types=runs, limit=200)
        # Newest first; no event for the failed run's end (Exa has none), the old run's too.
        assert every == [
            "evt_mrun_ok_completed", "evt_mrun_bad_created", "evt_mrun_ok_created",
            "evt_mrun_old_completed", "evt_mrun_old_created",
        ]  # fmt: skip
        first, body = await ids(types=",".join(runs), limit=2)
        assert first == every[:2] and body["hasMore"]
        second, body = await ids(types=runs, limit=2, cursor=body["nextCursor"])
        assert second == every[2:4] and body["hasMore"]
        after = datetime.fromtimestamp(exa.fake.t0 + 6, UTC).isoformat()
        recent, body = await ids(types=runs, createdAfter=after)
        assert recent == ["evt_mrun_ok_completed", "evt_mrun_bad_created"] and not body["hasMore"]
        envelope = (await client.get("/v0/events", params={"limit": 1}, headers=KEY)).json()["data"][0]
        assert envelope["object"] == "event" and envelope["type"] == "monitor.run.completed"
        assert envelope["data"]["monitorId"] == "monitor_news"
        clock.advance(10)  # the monitor's status change shows once it happened
        assert (await ids(types="monitor.updated"))[0] == ["evt_monitor_news_0_updated"]
        bad = await client.get("/v0/events", params={"createdAfter": "yesterday"}, headers=KEY)
        assert bad.status_code == 400
