"""Sends what the outbox holds: one worker per channel, retries with backoff, dead letters.

The outbox (in the state file) is the queue, so a notification decided before a crash or an outage is
sent after it, and one sent is never sent again. Sends run in worker threads (apprise blocks) under a
global bound; a channel that is down only delays its own worker, never polling or other channels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import anyio
import anyio.to_thread

from runwatch.clock import Clock
from runwatch.config import DeliverySettings
from runwatch.delivery.apprise_channel import Channel, SendFailed
from runwatch.log import get_logger
from runwatch.metrics import OUTBOX_STATES, Metrics
from runwatch.state import OutboxRow, Store

log = get_logger(__name__)


class Deliverer:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        settings: DeliverySettings,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.store = store
        self.channels = dict(channels)
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._limiter = anyio.CapacityLimiter(settings.concurrency)
        self._wakeups: dict[str, anyio.Event] = {name: anyio.Event() for name in self.channels}
        self._idle: dict[str, anyio.Event] = {name: anyio.Event() for name in self.channels}
        self._draining = False
        self._progress = anyio.Event()
        for stray in store.pending_channels() - set(self.channels):
            log.warning(
                "outbox.unknown_channel",
                channel=stray,
                pending=store.pending_count(stray),
                hint="kept in the state; configure the channel again to send them",
            )

    def wake(self) -> None:
        for ev in self._wakeups.values():
            ev.set()

    async def run(self) -> None:
        """Run every channel's worker until cancelled."""
        async with anyio.create_task_group() as tg:
            for name in self.channels:
                tg.start_soon(self._worker, name)

    async def wait_empty(self) -> None:
        """Until no notification is pending on any channel (sent or given up)."""
        while any(self.store.pending_count(c) for c in self.channels):
            await self._progress.wait()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def drain(self, timeout: float) -> None:
        """Send what is due now (in-flight sends finish), for at most ``timeout`` seconds."""
        self._draining = True
        self.wake()
        with anyio.move_on_after(timeout) as scope:
            for name in self.channels:
                await self._idle[name].wait()
        if scope.cancelled_caught:
            left = sum(self.store.pending_count(c) for c in self.channels)
            log.warning("delivery.drain_timeout", pending=left, hint="kept in the state; sent on next start")

    def _backoff(self, attempts: int) -> float:
        s = self.settings
        delay: float = min(s.retry_max, s.retry_initial * (2 ** max(0, attempts - 1)))
        return delay * random.uniform(0.75, 1.0)

    async def _worker(self, name: str) -> None:
        channel = self.channels[name]
        while True:
            self._wakeups[name] = anyio.Event()
            now = self.clock.now()
            rows = self.store.due(name, now)
            self.metrics.pending.labels(name).set(self.store.pending_count(name))
            self._outbox_gauges(name, now)
            if not rows:
                nxt = self.store.next_due_at(name)
                if self._draining and (nxt is None or nxt > now):
                    self._idle[name].set()
                    await anyio.sleep_forever()
                wait = math.inf if nxt is None else max(0.0, nxt - now)
                with anyio.move_on_after(wait):
                    await self._wakeups[name].wait()
                continue
            for row in rows:
                await self._send(channel, row)

    def _outbox_gauges(self, name: str, now: float) -> None:
        counts = {(c, s): n for c, s, n in self.store.outbox_summary() if c == name}
        for state in OUTBOX_STATES:
            self.metrics.outbox.labels(name, state).set(counts.get((name, state), 0))
        oldest = self.store.oldest_pending_at(name)
        self.metrics.outbox_oldest_pending.labels(name).set(0 if oldest is None else max(0.0, now - oldest))

    async def _send(self, channel: Channel, row: OutboxRow) -> None:
        name = channel.name
        try:
            # Shielded: a send that has started finishes (and is recorded) even during shutdown.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    channel.send, row.title, row.body, row.severity, limiter=self._limiter
                )
        except SendFailed as exc:
            attempts = row.attempts + 1
            self.metrics.failed.labels(name).inc()
            self.metrics.delivery_failures.labels(name, "send_failed").inc()
            if attempts >= self.settings.max_attempts:
                self.store.mark_failed(row.id, str(exc), None)
                self.metrics.dead.labels(name).inc()
                self.metrics.delivery_attempts.labels(name, "permanent").inc()
                self._progressed()
                log.error("notify.dead", channel=name, rule=row.rule, attempts=attempts, error=str(exc))
            else:
                delay = self._backoff(attempts)
                self.metrics.delivery_attempts.labels(name, "retry").inc()
                self.store.mark_failed(row.id, str(exc), self.clock.now() + delay)
                log.warning(
                    "notify.failed",
                    channel=name,
                    rule=row.rule,
                    attempts=attempts,
                    retry_in=round(delay, 2),
                    error=str(exc),
                )
            return
        now = self.clock.now()
        self.store.mark_sent(row.id, now)
        self.metrics.sent.labels(name).inc()
        self.metrics.delivery_attempts.labels(name, "delivered").inc()
        self._progressed()
        self.metrics.latency.labels(name).observe(max(0.0, now - row.detected_at))
        log.info(
            "notify.sent",
            channel=name,
            rule=row.rule,
            severity=row.severity,
            latency=round(now - row.detected_at, 3),
        )
