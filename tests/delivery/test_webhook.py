"""The webhook channel against a real loopback receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from email.utils import formatdate
from pathlib import Path

import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook

from runwatch.delivery.channel import Delivered, Permanent, Retry
from runwatch.delivery.webhook import WebhookChannel
from tests.conftest import make_alert
from tests.webhook_server import webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "webhook-v1.json").read_text())


async def send(channel: WebhookChannel, n: int = 1) -> Delivered | Retry | Permanent:
    import anyio.to_thread

    return await anyio.to_thread.run_sync(channel.send, make_alert(n))


async def test_delivered_signed_with_the_notification_id_and_the_v1_body() -> None:
    async with webhook_server(SECRET) as rx:
        ch = WebhookChannel("tickets", rx.url, [SECRET], headers={"X-Team": "ops"}, timeout=5)
        before = int(time.time())
        assert await send(ch) == Delivered(200)
        ch.close()
    [req] = rx.requests
    assert req.error is None, req.error  # the standardwebhooks package verified the signature
    alert = make_alert(1)
    assert req.headers["webhook-id"] == alert.id
    assert before <= int(req.headers["webhook-timestamp"]) <= int(time.time())
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-team"] == "ops"
    assert req.payload is not None
    jsonschema.validate(req.payload, SCHEMA)
    assert req.payload["id"] == alert.id and req.payload["version"] == 1
    assert (req.payload["type"], req.payload["from"], req.payload["to"]) == (
        "run.status",
        "running",
        "failed",
    )
    assert req.payload["run"] == {"id": "run_1", "status": "failed", "failedReason": "Quota exceeded"}
    assert (
        req.payload["occurred_at"].endswith("Z") and req.payload["detected_at"] == "1970-01-01T00:00:01.000Z"
    )


async def test_sends_from_threads_that_come_and_go_share_one_connection_pool() -> None:
    """The delivery threads come and go (anyio stops one idle for 10 s), so a channel that sends now and
    then sends from a new thread each time: its connection is kept alive across them, and no pool per
    thread piles up (each held a CA bundle, about 0.8 MB, for the life of the daemon)."""
    import anyio.to_thread

    async with webhook_server(SECRET) as rx:
        ch = WebhookChannel("tickets", rx.url, [SECRET], timeout=5)

        def one_thread_each(n: int) -> list[object]:
            outcomes: list[object] = []
            for i in range(n):
                t = threading.Thread(target=lambda i=i: outcomes.append(ch.send(make_alert(i))))
                t.start()
                t.join(10)
            return outcomes

        outcomes = await anyio.to_thread.run_sync(one_thread_each, 30)
        ch.close()
    assert outcomes == [Delivered(200)] * 30
    # One connection, kept alive: one pool (a pool per thread opened one each, and kept them all).
    assert {r.peer for r in rx.requests} == {rx.requests[0].peer}


async def test_a_proxy_the_environment_names_carries_the_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTP_PROXY`` and the like are honoured as httpx honours them: the request goes to the proxy
    (here the receiver itself, which takes the absolute-form request), the target's name never resolved."""
    async with webhook_server(SECRET) as rx:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{rx.port}")
        ch = WebhookChannel("tickets", "http://hooks.example.invalid/runwatch", [SECRET], timeout=5)
        assert await send(ch) == Delivered(200)
        ch.close()
    [req] = rx.delivered()
    assert req.headers["host"] == "hooks.example.invalid"


async def test_rotating_secrets_sign_once_each_and_either_verifies() -> None:
    async with webhook_server(OLD_SECRET) as rx:
        ch = WebhookChannel("tickets", rx.url, [SECRET, OLD_SECRET])
        assert await send(ch) == Delivered(200)
        ch.close()
    [req] = rx.requests
    sigs = req.headers["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    assert req.error is None  # a receiver still on the old secret accepts it
    Webhook(SECRET).verify(req.body, req.headers)  # and one already on the new secret


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (500, Retry("http_5xx", "HTTP 500", status=500)),
        (503, Retry("http_5xx", "HTTP 503", status=503)),
        (408, Retry("http_408", "HTTP 408", status=408)),
        (409, Retry("http_409", "HTTP 409", status=409)),
        (425, Retry("http_425", "HTTP 425", status=425)),
        ((429, {"retry-after": "5"}), Retry("http_429", "HTTP 429", after=5.0, status=429)),
        (429, Retry("http_429", "HTTP 429", status=429)),
        (400, Permanent("http_4xx", "HTTP 400", status=400)),
        (410, Permanent("http_4xx", "HTTP 410", status=410)),
        ((302, {"location": "http://elsewhere.example/hook"}), Permanent("redirect", "HTTP 302", status=302)),
    ],
)
async def test_statuses_are_retried_or_permanent(answer: object, expected: Retry | Permanent) -> None:
    async with webhook_server(SECRET) as rx:
        rx.script = [answer]  # type: ignore[list-item]
        ch = WebhookChannel("tickets", rx.url, [SECRET])
        got = await send(ch)
        ch.close()
    assert type(got) is type(expected)
    assert (got.reason, got.status) == (expected.reason, expected.status)
    assert got.detail.startswith(expected.detail)  # the status, then the receiver's body
    assert '{"status"' in got.detail
    if isinstance(expected, Retry):
        assert isinstance(got, Retry) and got.after == expected.after
    if expected.reason == "redirect":
        assert "not followed" in got.detail and "elsewhere.example" in got.detail
    assert len(rx.requests) == 1  # a redirect is not followed


async def test_retry_after_as_an_http_date() -> None:
    async with webhook_server(SECRET) as rx:
        rx.script = [(503, {"retry-after": formatdate(time.time() + 120, usegmt=True)})]
        ch = WebhookChannel("tickets", rx.url, [SECRET])
        got = await send(ch)
        ch.close()
    assert isinstance(got, Retry) and got.after is not None and 110 <= got.after <= 121


async def test_reset_timeout_refused_and_tls_are_retried() -> None:
    async with webhook_server(SECRET) as rx:
        rx.script = ["reset", "hang"]
        ch = WebhookChannel("tickets", rx.url, [SECRET], timeout=0.3)
        reset = await send(ch)
        hung = await send(ch)
        ch.close()

    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")  # not TLS
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(plain_http, "127.0.0.1", 0)
    tls = WebhookChannel(
        "tickets", f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}/", [SECRET], timeout=2
    )
    tls_error = await send(tls)
    tls.close()
    srv.close()
    assert isinstance(reset, Retry) and reset.reason == "connect"
    assert isinstance(hung, Retry) and hung.reason == "timeout"
    assert isinstance(tls_error, Retry) and tls_error.reason == "tls"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    down = WebhookChannel("tickets", f"http://127.0.0.1:{port}/hook", [SECRET])
    refused = await send(down)
    down.close()
    assert isinstance(refused, Retry) and refused.reason == "connect"


async def test_secrets_and_url_tokens_never_appear_in_outcomes() -> None:
    async with webhook_server(SECRET) as rx:
        rx.script = [(302, {"location": f"{rx.url}?token=abcdef123456"})]
        url = f"{rx.url}?token=tok_q8Vd2kX9LmN3pR7tW1yZ"
        ch = WebhookChannel("tickets", url, [SECRET])
        got = await send(ch)
        ch.close()
    assert isinstance(got, Permanent)
    assert "tok_q8Vd2kX9LmN3pR7tW1yZ" not in got.detail and SECRET not in got.detail
