"""A fake's webhooks: the events its scenario makes, posted to the URLs subscribed to them as they
fall due on the fake's clock, with the failures a receiver must survive on demand.

Both fakes use it: the fake Exa signs each post (``Exa-Signature``, as ``shared/api/exa.md`` says)
for the webhooks created through its ``/v0/webhooks``; the fake Olostep posts, unsigned, to a
monitor's ``webhook.url`` when a run of it completes. A post that is not answered 2xx is tried again
(``retries`` times, with the same event id, as Exa does); ``lose`` drops the next posts on the way
(they never reach the receiver) and ``repeat`` sends each one more than once.

The loop (:meth:`Pusher.run`) looks at the clock every ``tick`` real seconds, so with a ManualClock
the posts go out right after a test advances it; :meth:`Pusher.pump` sends what is due at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
import httpx

from runwatch.clock import Clock
from runwatch.fakes._common import EPS

__all__ = ["Delivery", "PushEvent", "Pusher", "Subscription"]


@dataclass(frozen=True, slots=True)
class PushEvent:
    """One event a fake posts: at scenario time ``at``, of ``type``, about ``monitor_id``."""

    at: float
    id: str
    type: str
    monitor_id: str
    #: The exact bytes posted (what an Exa signature covers).
    body: bytes


@dataclass(slots=True)
class Subscription:
    """Where events go: a URL, the event types it wants (all, if empty), from scenario time ``since``
    on; only one monitor's when ``monitor_id`` is set (Olostep's per-monitor ``webhook.url``)."""

    id: str
    url: str
    types: frozenset[str]
    since: float
    monitor_id: str | None = None
    #: The signing secret (Exa); None posts unsigned (Olostep).
    secret: str | None = None
    active: bool = True

    def wants(self, event: PushEvent) -> bool:
        return (
            self.active
            and event.at + EPS >= self.since
            and (not self.types or event.type in self.types)
            and (self.monitor_id is None or self.monitor_id == event.monitor_id)
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One post: its answer's status (None: no answer; ``lost``: dropped on the way by ``lose``)."""

    event_id: str
    type: str
    subscription: str
    attempt: int
    status: int | None
    lost: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


#: The headers of one post (the fake signs it, or not): (subscription, body, unix seconds now).
Sign = Callable[[Subscription, bytes, int], dict[str, str]]


@dataclass
class Pusher:
    """Posts a fake's :class:`PushEvent` s to their subscribers as they fall due (see the module doc)."""

    clock: Clock
    t0: float
    events: Sequence[PushEvent]
    sign: Sign
    subscriptions: list[Subscription] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    #: Drop the next this many posts on the way: the receiver never sees them (no retry follows).
    lose: int = 0
    #: Post each event this many times (a provider retrying what it thinks was lost).
    repeat: int = 1
    #: Posts not answered 2xx are tried again this many times, ``backoff`` real seconds apart (doubling).
    retries: int = 3
    backoff: float = 0.2
    timeout: float = 10.0
    tick: float = 0.05
    _next: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: anyio.Lock = field(default_factory=anyio.Lock)
    _changed: anyio.Event | None = None

    def subscribe(
        self,
        url: str,
        types: Sequence[str] = (),
        *,
        secret: str | None = None,
        monitor_id: str | None = None,
        prefix: str = "sub",
    ) -> Subscription:
        """A new subscriber of the events from now on (scenario time)."""
        sub = Subscription(
            id=f"{prefix}_{next(self._ids):04d}",
            url=url,
            types=frozenset(types),
            since=self.clock.now() - self.t0,
            monitor_id=monitor_id,
            secret=secret,
        )
        self.subscriptions.append(sub)
        return sub

    async def run(self) -> None:
        """Post what falls due, until cancelled."""
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while True:
                await self.pump(client)
                await anyio.sleep(self.tick)

    async def pump(self, client: httpx.AsyncClient | None = None) -> int:
        """Post every event due by now to its subscribers, in scenario order; returns the posts made."""
        async with self._lock:
            now = self.clock.now() - self.t0
            due: list[PushEvent] = []
            while self._next < len(self.events) and self.events[self._next].at <= now + EPS:
                due.append(self.events[self._next])
                self._next += 1
            jobs = [(e, s) for e in due for s in self.subscriptions if s.wants(e)]
            if not jobs:
                return 0
            if client is None:
                async with httpx.AsyncClient(timeout=self.timeout) as own:
                    return await self._post_all(own, jobs)
            return await self._post_all(client, jobs)

    async def _post_all(self, client: httpx.AsyncClient, jobs: list[tuple[PushEvent, Subscription]]) -> int:
        for event, sub in jobs:
            for _ in range(self.repeat):
                await self._post(client, event, sub)
        return len(jobs) * self.repeat

    async def _post(self, client: httpx.AsyncClient, event: PushEvent, sub: Subscription) -> None:
        delay = self.backoff
        for attempt in range(1, self.retries + 2):
            if self.lose > 0:
                self.lose -= 1
                self._record(Delivery(event.id, event.type, sub.id, attempt, None, lost=True))
                return
            headers = {
                "content-type": "application/json",
                **self.sign(sub, event.body, int(self.clock.now())),
            }
            try:
                answer = await client.post(sub.url, content=event.body, headers=headers)
                status: int | None = answer.status_code
            except httpx.HTTPError:
                status = None
            self._record(Delivery(event.id, event.type, sub.id, attempt, status))
            if status is not None and 200 <= status < 300:
                return
            if attempt <= self.retries:
                await anyio.sleep(delay)
                delay *= 2

    def _record(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_deliveries(self, count: int, *, ok: bool = False) -> list[Delivery]:
        """Until ``count`` posts were made (answered 2xx, with ``ok``); a test waits on this, not a timer."""
        while True:
            made = [d for d in self.deliveries if d.ok or not ok]
            if len(made) >= count:
                return made
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
