"""One channel's sender: claims due notifications from the outbox, sends them, records each outcome.

Per channel, independent of every other channel: a channel that is down, slow or rate limited delays
only itself. The hot path runs in a thread: a batch of claimed rows is sent and each outcome recorded
right after its send (one short statement), so the event loop is not involved per notification.

While a channel keeps failing, its circuit is open: nothing is sent until the retry time of the
failed notification, then that one alone is sent as a probe; once one goes through, the backlog
drains oldest first. Retries use :class:`runwatch.retry.RetryPolicy` (a channel's Retry-After wins
over ``retry_max``); a channel's ``rate`` (:class:`SendWindow`: at most N sends start in any window of
one period, one budget for every instance on the state) is one that no retry can jump.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence

import anyio
import anyio.to_thread
from prometheus_client import Counter, Histogram

from runwatch.clock import Clock
from runwatch.delivery.channel import Channel, Delivered, Outcome, Permanent, Retry
from runwatch.delivery.policy import ChannelPolicy, SendWindow
from runwatch.errors import StateError
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.pipeline.silences import Muter
from runwatch.redact import redact
from runwatch.retry import RetryPolicy
from runwatch.store.interfaces import Claimed, Outbox, SendLog

log = get_logger(__name__)

#: Rows claimed at once while the channel is healthy.
BATCH = 64
#: An idle worker looks at the outbox this often (real seconds), so rows replayed by the CLI go out
#: within a few seconds even though nothing in this process woke it.
IDLE_RECHECK = 2.0
#: ``max_age`` is enforced this often (clock seconds), not before every batch. Its query finds the rows
#: it expires by their ``created_at`` in an index, so its cost does not grow with the backlog either.
EXPIRE_EVERY = 1.0


class ChannelWorker:
    """Sends one channel's notifications, in order, with retries, a circuit breaker and a rate."""

    def __init__(
        self,
        channel: Channel,
        policy: ChannelPolicy,
        outbox: Outbox,
        metrics: Metrics,
        clock: Clock,
        owner: str,
        sends: SendLog,
        muter: Muter | None = None,
    ) -> None:
        self.channel = channel
        self.name = channel.name
        self.policy = policy
        self.outbox = outbox
        self.metrics = metrics
        self.clock = clock
        self.owner = owner
        self.muter = muter
        self.retry = RetryPolicy(policy.retry_initial, policy.retry_max)
        self.window = SendWindow(policy.rate, sends, channel.name) if policy.rate else None
        #: Circuit breaker: consecutive failed sends, and until when nothing is sent.
        self.failures = 0
        self.open_until = 0.0
        self.draining = False
        #: Set by :meth:`stop`: a reload removed or rebuilt the channel; no new batch is claimed.
        self.stopping = False
        #: Set once :meth:`run` has returned (or never will: stopped before it started).
        self.finished = anyio.Event()
        self._stop_at = math.inf
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._idle_loops = 0
        self._all_idle = anyio.Event()
        self._expired_at: float | None = None
        #: The delivered path's metric children, looked up once (``labels()`` takes a lock per call).
        self._on_delivered: tuple[Counter, Counter, Histogram] | None = None

    # -- control from the daemon ----------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def drain(self, deadline: float) -> None:
        """Send what is due now, stop taking new batches, and cut a batch short at ``deadline``."""
        self.draining = True
        self._stop_at = deadline
        self.wake()

    def stop(self) -> None:
        """End :meth:`run` once the batch in flight is sent and recorded (a reload changed the channel).

        Rows of that batch are each settled or released before ``run`` returns, so the worker that takes
        over the channel never sends one of them twice, and nothing pending is dropped.
        """
        self.stopping = True
        self.wake()

    async def wait_idle(self) -> None:
        await self._all_idle.wait()

    async def wait_progress(self) -> None:
        await self._progress.wait()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.policy.concurrency):
                    tg.start_soon(self._loop)
        finally:
            self.finished.set()

    # -- the loop ---------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        limiter = anyio.CapacityLimiter(1)
        while not self.stopping:
            if self._wake.is_set():
                self._wake = anyio.Event()
            wake = self._wake
            try:
                wait = await self._step(limiter)
            except StateError as exc:  # the database is away: pause, claim again later
                self.metrics.state_failed(exc)
                log.warning("delivery.state_failed", channel=self.name, error=str(exc))
                wait = IDLE_RECHECK
            except Exception:  # a state or channel failure must never end the worker
                log.exception("delivery.worker_error", channel=self.name)
                wait = IDLE_RECHECK
            if wait is None:
                continue
            if self.draining:
                self._idle_loops += 1
                if self._idle_loops >= self.policy.concurrency:
                    self._all_idle.set()
                await anyio.sleep_forever()
            with anyio.move_on_after(wait):
                await wake.wait()

    async def _step(self, limiter: anyio.CapacityLimiter) -> float | None:
        """Send one batch if one is due (returns None: go on), else how long to wait (real seconds)."""
        now = self.clock.now()
        self._expire(now)
        limit = 1 if self.failures else BATCH
        held = self.open_until
        if self.window is not None:  # one read of the channel's send times
            free, slot_at = self.window.plan(now)
            limit = min(limit, free)
            if free < 1:
                held = max(held, slot_at)
        if held > now:
            return min(held - now, IDLE_RECHECK) if not self.draining else 0.0
        claimed = self.outbox.claim(self.name, now, limit, self.owner, self.policy.claim_timeout)
        if not claimed:
            nxt = self.outbox.next_due(self.name)
            return IDLE_RECHECK if nxt is None else min(IDLE_RECHECK, max(0.0, nxt - now))
        if self.window is not None:
            self.window.reserve(len(claimed))
        # Shielded: a batch that has started is finished (or cut short at the drain deadline) and
        # recorded, even during shutdown.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                self._send_all, claimed, now + self.policy.claim_timeout, limiter=limiter
            )
        self._progress.set()
        self._progress = anyio.Event()
        return None

    def _expire(self, now: float) -> None:
        last = self._expired_at
        if last is not None and last <= now < last + EXPIRE_EVERY:
            return
        self._expired_at = now
        n = self.outbox.expire(self.name, now - self.policy.max_age, now)
        if n:
            self.metrics.attempts.labels(self.name, "expired").inc(n)
            self.metrics.dead.labels(self.name).inc(n)
            log.warning("notify.expired", channel=self.name, count=n, max_age=self.policy.max_age)

    # -- in the sending thread ------------------------------------------------------------------------------
    def _send_all(self, claimed: Sequence[Claimed], until: float) -> None:
        started = 0
        lost: set[int] = set()
        try:
            for i, item in enumerate(claimed):
                if time.monotonic() >= self._stop_at:
                    self.outbox.release([c.seq for c in claimed[i:]])
                    return
                if until - self.clock.now() < self.policy.claim_timeout / 2:
                    until, lost = self._renew(claimed[i:], lost)
                if item.seq in lost:
                    continue
                if self.muter is not None and self._silenced(item):
                    continue
                if self.window is not None and not self.window.start(self.clock.now()):
                    # Another instance took the slot first: the rest waits for the next one.
                    self.outbox.release([c.seq for c in claimed[i:]])
                    return
                started += 1
                try:
                    outcome: Outcome = self.channel.send(item.alert)
                except Exception as exc:  # a channel plugin's bug is a failed attempt, not a dead worker
                    outcome = Retry("error", redact(f"{type(exc).__name__}: {exc}")[:500])
                try:
                    self._settle(item, outcome, self.clock.now())
                except Exception:
                    # The state could not record it: give the rest back (if it answers; else their
                    # claims run out); this one is sent again once its claim ran out, at most once more.
                    with contextlib.suppress(StateError):
                        self.outbox.release([c.seq for c in claimed[i + 1 :]])
                    raise
                if isinstance(outcome, Retry):
                    self.outbox.release([c.seq for c in claimed[i + 1 :]])
                    return
        finally:
            if self.window is not None:  # the slots of claimed rows that were not sent
                self.window.release(len(claimed) - started)

    def _renew(self, rest: Sequence[Claimed], lost: set[int]) -> tuple[float, set[int]]:
        """A long batch (a slow channel) keeps its claims: renewed while half their time is left. A
        row whose claim ran out and that another sender took meanwhile is not sent here."""
        until = self.clock.now() + self.policy.claim_timeout
        wanted = [c.seq for c in rest if c.seq not in lost]
        held = self.outbox.renew(wanted, self.owner, until)
        gone = set(wanted) - held
        if gone:
            log.warning(
                "delivery.claim_lost",
                channel=self.name,
                rows=len(gone),
                hint="their claim ran out before they were sent; another sender has them",
            )
        return until, lost | gone

    def _silenced(self, item: Claimed) -> bool:
        """Held back by an active silence: recorded as silenced, counted, not sent."""
        assert self.muter is not None
        now = self.clock.now()
        why = self.muter.silenced_by(item.alert, now)
        if why is None:
            return False
        self.outbox.silenced(item.seq, f"silenced: {why}", now)
        self.metrics.silenced.labels(self.name).inc()
        log.info("notify.silenced", channel=self.name, id=item.alert.id, rule=item.alert.rule, by=why)
        return True

    def _settle(self, item: Claimed, outcome: Outcome, now: float) -> None:
        name, alert = self.name, item.alert
        attempts = item.attempts + 1
        if isinstance(outcome, Delivered):
            self.outbox.delivered(item.seq, now)
            if self.failures:
                log.info("channel.recovered", channel=name, after_failures=self.failures)
                self.metrics.circuit_open.labels(name).set(0)
            self.failures = 0
            self.open_until = 0.0
            metrics = self._on_delivered
            if metrics is None:
                metrics = self._on_delivered = (
                    self.metrics.attempts.labels(name, "delivered"),
                    self.metrics.sent.labels(name),
                    self.metrics.latency.labels(name),
                )
            attempts_delivered, sent, latency = metrics
            attempts_delivered.inc()
            sent.inc()
            latency.observe(max(0.0, now - alert.detected_at))
            log.debug("notify.sent", channel=name, id=alert.id, rule=alert.rule, attempts=attempts)
            return
        self.metrics.failures.labels(name, outcome.reason).inc()
        if isinstance(outcome, Permanent):
            self.outbox.dead(item.seq, f"{outcome.reason}: {outcome.detail}", now)
            self.metrics.attempts.labels(name, "permanent").inc()
            self.metrics.dead.labels(name).inc()
            log.error(
                "notify.dead", channel=name, id=alert.id, rule=alert.rule, attempts=attempts,
                reason=outcome.reason, error=outcome.detail,
            )  # fmt: skip
            return
        self.metrics.attempts.labels(name, "retry").inc()
        self.failures += 1
        self.metrics.circuit_open.labels(name).set(1)
        if attempts >= self.policy.max_attempts:
            self.outbox.dead(item.seq, f"{outcome.reason}: {outcome.detail}", now)
            self.metrics.dead.labels(name).inc()
            log.error(
                "notify.dead", channel=name, id=alert.id, rule=alert.rule, attempts=attempts,
                reason=outcome.reason, error=outcome.detail, why="max_attempts reached",
            )  # fmt: skip
            return
        after = outcome.after
        if after is None and outcome.status == 429:
            after = self.policy.retry_after_default
        at = now + self.retry.delay(attempts, after)
        if self.window is not None:
            at = max(at, self.window.plan(now)[1])
        self.outbox.retry(item.seq, f"{outcome.reason}: {outcome.detail}", at)
        self.open_until = at
        log.warning(
            "notify.retry", channel=name, id=alert.id, rule=alert.rule, attempts=attempts,
            reason=outcome.reason, status=outcome.status, retry_in=round(at - now, 3), error=outcome.detail,
        )  # fmt: skip
