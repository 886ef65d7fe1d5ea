"""The push listener over real loopback HTTP: every answer the contract names, that nothing is recorded
for a refused push, what is counted, that a slow client is cut off, and that no secret reaches a log."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from runwatch.clock import ManualClock
from runwatch.metrics import Metrics
from runwatch.service.ingest import HookConfig, Ingest, serving
from runwatch.sources.exa import ExaSettings
from runwatch.sources.olostep import OlostepSettings
from runwatch.store import State

pytestmark = pytest.mark.anyio

SECRET = "whsec_ingest_test_Secret_42"
TOKEN = "tok_" + "Zq9" * 12
NOW = 1_780_000_000.0


def sign(body: bytes, t: float = NOW, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), f"{int(t)}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={int(t)},v1={digest}"


def event(eid: str = "evt_1", kind: str = "monitor.run.completed", monitor: str = "monitor_a") -> bytes:
    return json.dumps(
        {"id": eid, "object": "event", "type": kind, "createdAt": "2026-05-28T20:26:40.000Z",
         "data": {"id": "mrun_" + eid, "monitorId": monitor, "object": "monitor_run"}}
    ).encode()  # fmt: skip


@dataclass
class Listener:
    url: str
    state: State
    metrics: Metrics
    clock: ManualClock
    ingest: Ingest
    woken: list[str] = field(default_factory=list)

    def count(self, provider: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "runwatch_ingest_requests_total", {"provider": provider, "outcome": outcome}
        )
        assert value is not None
        return value

    async def exa(
        self, body: bytes | AsyncIterator[bytes], signature: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"content-type": "application/json", **kw.pop("headers", {})}
        if signature is not None:
            headers["Exa-Signature"] = signature
        async with httpx.AsyncClient() as client:
            return await client.post(f"{self.url}/hooks/exa", content=body, headers=headers, **kw)


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[Listener]:
    exa = ExaSettings(api_key=SecretStr("k"), webhook_secret=[SecretStr(SECRET)], monitors=[])
    olostep = OlostepSettings(api_key=SecretStr("k"), webhook_token=SecretStr(TOKEN), monitors=["monitor_x"])
    state = State(tmp_path / "state")
    metrics = Metrics()
    clock = ManualClock(NOW)
    woken: list[str] = []
    ingest = Ingest(
        state.hints, metrics, clock, woken.append, HookConfig.build({"exa": exa, "olostep": olostep})
    )
    async with serving(ingest, "127.0.0.1:0") as http:
        assert http is not None
        yield Listener(http.url, state, metrics, clock, ingest, woken)
    state.close()


async def test_every_outcome_starts_at_zero(listener: Listener) -> None:
    for provider in ("exa", "olostep"):
        for outcome in ("accepted", "duplicate", "bad_signature", "stale", "too_large", "bad_body", "ignored",
                        "not_found"):  # fmt: skip
            assert listener.count(provider, outcome) == 0
    assert (
        listener.metrics.registry.get_sample_value("runwatch_push_to_read_seconds_count", {"provider": "exa"})
        == 0
    )


async def test_a_verified_push_is_recorded_before_its_answer_and_wakes_the_poller(listener: Listener) -> None:
    body = event()
    answer = await listener.exa(body, sign(body))
    assert answer.status_code == 200 and answer.json() == {"status": "accepted"}
    [hint] = listener.state.hints.pending("exa")
    assert (hint.event_id, hint.monitor_id, hint.run_id, hint.kind) == ("evt_1", "monitor_a", "mrun_evt_1",
                                                                        "run.completed")  # fmt: skip
    assert listener.woken == ["exa"]
    # The same event again (Exa retries with the same id): 200, acted on once.
    again = await listener.exa(body, sign(body))
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert len(listener.state.hints.pending("exa")) == 1 and listener.woken == ["exa"]
    assert (listener.count("exa", "accepted"), listener.count("exa", "duplicate")) == (1, 1)


@pytest.mark.parametrize(
    ("signature", "outcome"),
    [
        (None, "bad_signature"),
        ("t=1780000000", "bad_signature"),
        ("garbage", "bad_signature"),
        ("wrong-secret", "bad_signature"),
        ("stale", "stale"),
        ("future", "stale"),
    ],
)
async def test_a_push_that_fails_its_signature_is_401_and_records_nothing(
    listener: Listener, signature: str | None, outcome: str
) -> None:
    body = event()
    header = {
        "wrong-secret": sign(body, secret="whsec_not_ours"),
        "stale": sign(body, t=NOW - 301),
        "future": sign(body, t=NOW + 301),
    }.get(signature or "", signature)
    answer = await listener.exa(body, header)
    assert answer.status_code == 401
    assert listener.state.hints.pending("exa") == [] and listener.woken == []
    assert listener.count("exa", outcome) == 1


async def test_the_signature_is_checked_before_the_body_is_parsed(listener: Listener) -> None:
    # Not JSON, badly signed: refused for its signature (401), never read as a body (400).
    answer = await listener.exa(b"{not json", sign(b"other bytes"))
    assert answer.status_code == 401
    assert listener.count("exa", "bad_body") == 0
    # The same bytes signed: now the body is looked at.
    assert (await listener.exa(b"{not json", sign(b"{not json"))).status_code == 400
    assert listener.count("exa", "bad_body") == 1


@pytest.mark.parametrize(
    "body",
    [b"[]", b"{}", b'{"id": "evt_2", "type": "monitor.run.created", "data": {"id": "mrun_1"}}'],
)
async def test_a_signed_body_that_is_not_an_envelope_is_400(listener: Listener, body: bytes) -> None:
    assert (await listener.exa(body, sign(body))).status_code == 400
    assert listener.state.hints.pending("exa") == []


async def test_other_event_types_are_answered_ignored_and_counted(listener: Listener) -> None:
    body = json.dumps(
        {"id": "evt_m", "object": "event", "type": "monitor.updated", "data": {"id": "m"}}
    ).encode()
    answer = await listener.exa(body, sign(body))
    assert (answer.status_code, answer.json()) == (200, {"status": "ignored"})
    assert listener.count("exa", "ignored") == 1 and listener.state.hints.pending("exa") == []


async def test_a_body_over_one_mib_is_413_whether_declared_or_streamed(listener: Listener) -> None:
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert (await listener.exa(big, sign(big))).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: it is cut off as it arrives
        for _ in range(20):
            yield b"y" * 65536

    assert (await listener.exa(chunks(), sign(big))).status_code == 413
    assert listener.count("exa", "too_large") == 2


async def test_only_post_and_only_the_hook_paths(listener: Listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url) as client:
        get = await client.get("/hooks/exa")
        assert get.status_code == 405 and get.headers["allow"] == "POST"
        assert (await client.put(f"/hooks/olostep/{TOKEN}", content=b"{}")).status_code == 405
        unknown = [await client.post(p, content=b"{}") for p in ("/", "/metrics", "/hooks", "/hooks/exa/x")]
        wrong = await client.post("/hooks/olostep/" + "Zq9" * 12 + "tok_", content=b"{}")
        wrong_get = await client.get("/hooks/olostep/nope")
    assert {r.status_code for r in unknown} == {404}
    # A wrong token is answered as any unknown path is, whatever the method: a scanner learns nothing.
    assert wrong.status_code == wrong_get.status_code == 404
    assert wrong.content == unknown[0].content
    assert listener.count("olostep", "not_found") == 2 and listener.count("none", "not_found") == 4


async def test_olostep_pushes_name_a_monitor_by_token(listener: Listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url) as client:
        ok = await client.post(
            f"/hooks/olostep/{TOKEN}", json={"monitorId": "monitor_x", "status": "completed"}
        )
        again = await client.post(
            f"/hooks/olostep/{TOKEN}", json={"monitorId": "monitor_x", "status": "completed"}
        )
        other = await client.post(f"/hooks/olostep/{TOKEN}", json={"monitor_id": "monitor_not_watched"})
        none = await client.post(f"/hooks/olostep/{TOKEN}", json={"status": "completed"})
        broken = await client.post(f"/hooks/olostep/{TOKEN}", content=b"not json")
    assert (ok.status_code, ok.json()) == (200, {"status": "accepted"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert (other.status_code, other.json()) == (200, {"status": "ignored"})  # monitors: [monitor_x]
    assert (none.status_code, broken.status_code) == (422, 400)
    [hint] = listener.state.hints.pending("olostep")
    assert (hint.monitor_id, hint.run_id) == ("monitor_x", "")
    assert listener.woken == ["olostep"]


async def test_push_off_for_a_provider_is_404(tmp_path: Path) -> None:
    exa = ExaSettings(api_key=SecretStr("k"))  # an API key, no webhook secret
    state = State(tmp_path / "s")
    ingest = Ingest(state.hints, Metrics(), ManualClock(NOW), lambda p: None, HookConfig.build({"exa": exa}))
    async with serving(ingest, "127.0.0.1:0") as http, httpx.AsyncClient() as client:
        assert http is not None
        body = event()
        answer = await client.post(
            f"{http.url}/hooks/exa", content=body, headers={"Exa-Signature": sign(body)}
        )
    assert answer.status_code == 404
    state.close()


async def test_a_slow_client_is_cut_off_and_does_not_hold_up_others(tmp_path: Path) -> None:
    exa = ExaSettings(api_key=SecretStr("k"), webhook_secret=[SecretStr(SECRET)])
    state = State(tmp_path / "s")
    ingest = Ingest(state.hints, Metrics(), ManualClock(NOW), lambda p: None, HookConfig.build({"exa": exa}))
    async with serving(ingest, "127.0.0.1:0", head_timeout=0.5) as http:
        assert http is not None
        silent = await anyio.connect_tcp(http.host, http.port)  # says nothing at all
        slow = await anyio.connect_tcp(http.host, http.port)
        await slow.send(b"POST /hooks/exa HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        body = event("evt_fast")
        async with httpx.AsyncClient() as client:  # served meanwhile
            answer = await client.post(
                f"{http.url}/hooks/exa", content=body, headers={"Exa-Signature": sign(body)}
            )
        assert answer.status_code == 200
        for stream in (silent, slow):
            with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()  # the server closed it: the head was late
            await stream.aclose()
    state.close()


async def test_no_secret_token_or_signature_reaches_a_log(listener: Listener, log_lines: io.StringIO) -> None:
    body = event()
    signature = sign(body, secret="whsec_not_ours")
    await listener.exa(body, signature)
    await listener.exa(body, sign(body))
    async with httpx.AsyncClient(base_url=listener.url) as client:
        await client.post(f"/hooks/olostep/{TOKEN}x", json={"monitor_id": "monitor_x"})
        await client.post(f"/hooks/olostep/{TOKEN}", json={"monitor_id": "monitor_x"})
    text = log_lines.getvalue()
    assert "push.refused" in text and "push.accepted" in text
    for secret in (SECRET, TOKEN, signature.split("v1=")[1], sign(body).split("v1=")[1]):
        assert secret not in text


async def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(listener: Listener) -> None:
    import ipaddress

    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.2")]}
    assert listener.ingest.client(scope) == "127.0.0.1"  # not configured: the peer
    listener.ingest.config = HookConfig(
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    )
    assert listener.ingest.client(scope) == "203.0.113.9"
    assert listener.ingest.client({**scope, "client": ("198.51.100.7", 1)}) == "198.51.100.7"
