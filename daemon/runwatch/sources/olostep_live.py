"""Olostep's live logs, followed: one monitor's ``GET /v1/monitors/{id}/agent-logs?stream=1``.

The stream is Server-Sent Events (``ready``, ``log``, ``heartbeat``, ``error``), read as tolerantly as
``shared/api/olostep.md`` ("Live logs") asks: ``ready`` may announce ``heartbeat_interval`` (seconds;
15 when it does not); a ``log`` event's data is one AgentLogEvent (perhaps with ``run_id`` and
``monitor_id``), its SSE ``id:`` the event's id; ``error`` ends the stream. What comes is handed over
as :class:`LiveEvent` s, to go through the same change detection as a poll: a source reads, the
daemon decides (:mod:`runwatch.service.live_logs`).

A stream that ends for any reason is reopened with the project's retry policy
(:class:`~runwatch.retry.RetryPolicy`: exponential backoff with jitter, at least a ``Retry-After``),
sending ``Last-Event-ID``; an answer the key or the monitor is refused for (a 4xx) waits
:data:`REFUSED_WAIT`. A stream with nothing, not even a heartbeat, for :data:`SILENCE` heartbeat
intervals is dropped and reopened. Events already handed over by this follower are dropped when a
server replays them (it may replay from the start); the state drops the rest.

Each follower holds one connection of its own pool (``max_streams`` connections), apart from the
poller's: a few dozen long-lived streams must never take the connections polls need. Opening a stream
counts as a request (``runwatch_api_requests_total{endpoint="agent_logs"}``) but does not wait for
the poll budget: streams open once per run in flight, and reopen only with backoff.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import orjson

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RunEvent
from runwatch.retry import RetryPolicy, parse_retry_after
from runwatch.sources.olostep import MONITOR_ID, PROVIDER, parse_event
from runwatch.sources.settings import ProviderSettings
from runwatch.sources.sse import SseError, SseEvent, SseParser

log = get_logger(__name__)

#: The heartbeat interval assumed until ``ready`` says otherwise (and when it never does).
DEFAULT_HEARTBEAT = 15.0
#: A stream that sends nothing for this many heartbeat intervals is dropped and reopened.
SILENCE = 3.0
#: Bounds on an announced heartbeat interval (a nonsense value must not make a stream never time out).
HEARTBEAT_MIN, HEARTBEAT_MAX = 0.05, 3600.0
#: How long a follower waits after a 4xx other than 408/429 (the key or the monitor refused).
REFUSED_WAIT = 60.0
#: Event ids a follower remembers having handed over (a server that replays from the start).
SEEN_MAX = 4096

#: A follower's hand-over: the events of one chunk of the stream.
Deliver = Callable[[list["LiveEvent"]], Awaitable[None]]
#: Told True when a stream is open (answered 200), False when it is not any more.
Opened = Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One AgentLogEvent a stream brought, for ``monitor_id``'s run ``run_id`` (None: the event names
    no run). ``has_id``: the event carries its own id, the one a poll reports it under (without one,
    the poll derives an id from the content, which the stream's copy does not share)."""

    monitor_id: str
    run_id: str | None
    event: RunEvent
    has_id: bool


def live_event(monitor_id: str, sse: SseEvent) -> LiveEvent | None:
    """A ``log`` event's data -> LiveEvent (None for data that is not an object)."""
    try:
        obj = orjson.loads(sse.data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    run_id = obj.pop("run_id", None)
    obj.pop("monitor_id", None)  # the stream's own additions: the event is then as a poll returns it
    event = parse_event(obj)
    if event is None:
        return None
    eid = obj.get("id")
    has_id = isinstance(eid, str | int) and not isinstance(eid, bool) and eid != ""
    return LiveEvent(monitor_id, run_id if isinstance(run_id, str) and run_id else None, event, has_id)


def heartbeat_interval(data: str) -> float:
    """``ready``'s ``heartbeat_interval`` (seconds), bounded; 15 s when it names none."""
    try:
        obj: Any = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        return DEFAULT_HEARTBEAT
    value = obj.get("heartbeat_interval") if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_HEARTBEAT
    if not math.isfinite(value) or value <= 0:
        return DEFAULT_HEARTBEAT
    return float(min(max(value, HEARTBEAT_MIN), HEARTBEAT_MAX))


class _Ended(Exception):
    """How one connection ended: a ``runwatch_live_stream_drops_total`` reason, and what to wait."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


class LiveLogClient:
    """Olostep's agent-log streams for one set of settings: a pool of ``max_streams`` connections."""

    def __init__(
        self,
        settings: ProviderSettings,
        metrics: Metrics,
        *,
        max_streams: int,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        **_: Any,
    ) -> None:
        assert settings.api_key is not None
        self.metrics = metrics
        self.policy = RetryPolicy(backoff_initial, backoff_max, retry_after_cap=120.0)
        self._sleep = sleep
        self.client = httpx.AsyncClient(
            base_url=settings.base_url,
            headers={
                "authorization": f"Bearer {settings.api_key.get_secret_value()}",
                "accept": "text/event-stream",
                "cache-control": "no-cache",
            },
            # No read timeout: the heartbeat watch below bounds a silent stream instead.
            timeout=httpx.Timeout(settings.timeout, read=None),
            limits=httpx.Limits(max_connections=max_streams, max_keepalive_connections=0),
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def follow(self, monitor_id: str, deliver: Deliver, opened: Opened) -> None:
        """Follow ``monitor_id``'s stream until cancelled, reopening it whenever it ends."""
        if not MONITOR_ID.match(monitor_id):
            log.warning("live.bad_monitor", provider=PROVIDER, monitor_id=monitor_id)
            return
        path = f"/v1/monitors/{quote(monitor_id, safe='')}/agent-logs"
        resume = _Resume()
        failures = 0
        while True:
            try:
                await self._once(monitor_id, path, resume, deliver, opened)
                ended = _Ended("closed", "the server ended the stream")
            except _Ended as exc:
                ended = exc
            failures = 0 if resume.healthy else failures + 1
            resume.healthy = False
            self.metrics.live_drops.labels(PROVIDER, ended.reason).inc()
            if ended.reason == "refused":
                delay = max(REFUSED_WAIT, ended.retry_after or 0.0)
            else:
                delay = self.policy.delay(max(1, failures), ended.retry_after)
            log_at = log.info if ended.reason == "closed" else log.warning
            log_at(
                "live.reconnect",
                provider=PROVIDER,
                monitor_id=monitor_id,
                reason=ended.reason,
                detail=str(ended),
                delay=round(delay, 3),
            )
            await self._sleep(delay)

    async def _once(
        self, monitor_id: str, path: str, resume: _Resume, deliver: Deliver, opened: Opened
    ) -> None:
        headers = {"last-event-id": resume.last_id} if resume.last_id else {}
        self.metrics.requests.labels(PROVIDER, "agent_logs").inc()
        try:
            async with self.client.stream("GET", path, params={"stream": "1"}, headers=headers) as resp:
                _check(resp)
                opened(True)
                try:
                    await self._read(monitor_id, resp, resume, deliver)
                finally:
                    opened(False)
        except httpx.TimeoutException:
            raise _Ended("connect", "timed out connecting") from None
        except httpx.TransportError as exc:
            raise _Ended("connect" if not resume.open else "closed", type(exc).__name__) from None
        except SseError as exc:
            raise _Ended("bad_stream", str(exc)) from None
        finally:
            resume.open = False

    async def _read(self, monitor_id: str, resp: httpx.Response, resume: _Resume, deliver: Deliver) -> None:
        resume.open = True
        parser = SseParser()
        silence = SILENCE * DEFAULT_HEARTBEAT
        ready = False
        chunks = resp.aiter_bytes()
        while True:
            with anyio.move_on_after(silence) as watch:
                chunk = await anext(chunks, None)
            if watch.cancelled_caught:
                raise _Ended("heartbeat", f"nothing for {silence:g} s (3 heartbeat intervals)")
            if chunk is None:
                return  # the server ended the stream
            found: list[LiveEvent] = []
            for sse in parser.feed(chunk):
                if sse.event == "ready":
                    ready = True
                    silence = SILENCE * heartbeat_interval(sse.data)
                elif sse.event == "error":
                    raise _Ended("error", f"the stream sent an error: {sse.data[:200]}")
                elif sse.event == "log":
                    event = live_event(monitor_id, sse)
                    if event is not None and resume.fresh(event):
                        found.append(event)
                if ready and sse.event in ("heartbeat", "log"):
                    resume.healthy = True  # it works: the next reconnection starts the backoff anew
                if sse.id:
                    resume.last_id = sse.id
            if found:
                await deliver(found)  # outside the watch: a slow record must not look like silence


@dataclass(slots=True)
class _Resume:
    """What a follower carries from one connection to the next."""

    last_id: str | None = None
    healthy: bool = False
    open: bool = False
    _seen: set[str] = field(default_factory=set)
    _order: deque[str] = field(default_factory=deque)

    def fresh(self, event: LiveEvent) -> bool:
        """First time this follower sees the event (a replay from the start brings it again)."""
        if not event.has_id:
            return True
        eid = event.event.id
        if eid in self._seen:
            return False
        self._seen.add(eid)
        self._order.append(eid)
        if len(self._order) > SEEN_MAX:
            self._seen.discard(self._order.popleft())
        return True


def _check(resp: httpx.Response) -> None:
    """A stream that did not open: why, and how long the server asks to wait."""
    status = resp.status_code
    if status == 200:
        return
    retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
    reason = "http" if status in (408, 429) or status >= 500 else "refused"
    raise _Ended(reason, f"HTTP {status}", retry_after)


def settings_key(settings: ProviderSettings, max_streams: int) -> tuple[Any, ...]:
    """What a client is built from: a reload that changes any of it rebuilds the client."""
    key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    return (settings.base_url, key, settings.timeout, max_streams)
