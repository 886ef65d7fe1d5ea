"""Channel workers on an injected clock: retries, Retry-After, dead letters, TTL, breaker, rate, order.

Real parts: the SQLite state, the webhook kind posting to a loopback receiver that verifies signatures,
and apprise posting json:// to the same receiver. Time moves only when the test advances the clock.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psycopg
import pytest

from runwatch.clock import ManualClock
from runwatch.delivery import Channel, Deliverer
from runwatch.delivery.apprise import AppriseChannel
from runwatch.delivery.channel import Outcome
from runwatch.delivery.policy import ChannelPolicy, RateSpec
from runwatch.delivery.webhook import WebhookChannel
from runwatch.metrics import Metrics
from runwatch.model import Alert
from runwatch.store import Location, Notification, State, open_state
from tests.conftest import SMTP_PASSWORD, SmtpSink, mailto_url, make_alert
from tests.webhook_server import WebhookServer, webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = 1_780_000_000.0


class Rig:
    """A running Deliverer over a fresh state, one channel, and a webhook receiver."""

    def __init__(self, state: State, deliverer: Deliverer, metrics: Metrics, clock: ManualClock) -> None:
        self.state = state
        self.deliverer = deliverer
        self.metrics = metrics
        self.clock = clock

    def queue(self, *ns: int) -> list[str]:
        alerts = [make_alert(n, channel="hook", at=self.clock.now()) for n in ns]
        self.state.record("exa", [], [Notification(a) for a in alerts], self.clock.now())
        self.deliverer.wake()
        return [a.id for a in alerts]

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, {"channel": "hook", **labels}) or 0.0

    async def until(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        worker = self.deliverer.workers["hook"]
        with anyio.fail_after(timeout):
            while not cond():
                with anyio.move_on_after(0.2):  # re-check; progress is the event that moves it
                    await worker.wait_progress()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.deliverer.wake()
        await anyio.wait_all_tasks_blocked()

    async def settle(self) -> None:
        """Return once no send is in flight: what the worker may send at this clock reading is sent.

        A claimed row is settled only after its receiver answered, so with none claimed and every task
        blocked, moving the clock next cannot fall between a send and its arrival at the receiver.
        """
        worker = self.deliverer.workers["hook"]
        with anyio.fail_after(10):
            while True:
                await anyio.wait_all_tasks_blocked()
                if not self.in_flight():
                    return
                with anyio.move_on_after(0.2):
                    await worker.wait_progress()

    def in_flight(self) -> int:
        sql = "SELECT count(*) FROM notifications WHERE state = 'pending' AND claimed_by IS NOT NULL"
        return int(self.state.db.execute(sql).fetchone()[0])

    def item(self, nid: str) -> object:
        return {i.id: i for i in self.state.outbox.items(state=None, channel=None, limit=None)}[nid]


@asynccontextmanager
async def rig(tmp_path: Path, channel: Channel, policy: ChannelPolicy) -> AsyncIterator[Rig]:
    clock = ManualClock(T0)
    state = State(tmp_path)
    metrics = Metrics()
    deliverer = Deliverer(state.outbox, state.sends, {"hook": channel}, {"hook": policy}, metrics, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(deliverer.run)
        yield Rig(state, deliverer, metrics, clock)
        tg.cancel_scope.cancel()
    state.close()


def hook(rx: WebhookServer) -> WebhookChannel:
    return WebhookChannel("hook", rx.url, [SECRET], timeout=2)


async def test_retry_after_is_honoured_and_wins_over_retry_max(tmp_path: Path) -> None:
    async with webhook_server(SECRET) as rx:
        rx.script = [(429, {"retry-after": "30"})]
        policy = ChannelPolicy(retry_initial=0.01, retry_max=1.0)
        async with rig(tmp_path, hook(rx), policy) as r:
            [nid] = r.queue(1)
            await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="retry") == 1)
            item = r.item(nid)
            assert item.next_attempt_at >= T0 + 30  # type: ignore[attr-defined]
            assert "http_429" in item.last_error  # type: ignore[attr-defined]
            await r.advance(29)
            assert len(rx.requests) == 1  # not a moment before Retry-After allows
            await r.advance(2)
            await r.until(lambda: r.metric("runwatch_notifications_sent_total") == 1)
    assert [q.id for q in rx.delivered()] == [nid]
    assert r.metric("runwatch_delivery_failures_total", reason="http_429") == 1


async def test_apprise_429_waits_at_least_retry_after_default(tmp_path: Path) -> None:
    async with webhook_server(SECRET) as rx:
        rx.script = [429]
        channel = AppriseChannel("hook", f"json://127.0.0.1:{rx.port}/hook")
        policy = ChannelPolicy(retry_initial=0.01, retry_max=0.05, retry_after_default=10.0)
        async with rig(tmp_path, channel, policy) as r:
            [nid] = r.queue(1)
            await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="retry") == 1)
            item = r.item(nid)
            assert item.next_attempt_at >= T0 + 10  # type: ignore[attr-defined]
            assert "429" in item.last_error  # type: ignore[attr-defined] # apprise's own reason is kept
            await r.advance(11)
            await r.until(lambda: r.metric("runwatch_notifications_sent_total") == 1)


async def test_a_permanent_answer_is_a_dead_letter_at_once_with_its_reason(tmp_path: Path) -> None:
    async with webhook_server(SECRET) as rx:
        rx.script = [410]
        async with rig(tmp_path, hook(rx), ChannelPolicy()) as r:
            [nid] = r.queue(1)
            await r.until(lambda: r.metric("runwatch_notifications_dead_total") == 1)
            item = r.item(nid)
            assert item.state == "dead"  # type: ignore[attr-defined]
            assert "HTTP 410" in item.last_error and '"status": 410' in item.last_error  # type: ignore[attr-defined]
            assert r.metric("runwatch_delivery_attempts_total", outcome="permanent") == 1
            await r.advance(3600)
            assert len(rx.requests) == 1


async def test_max_attempts_then_dead(tmp_path: Path) -> None:
    async with webhook_server(SECRET) as rx:
        rx.default = 500
        async with rig(tmp_path, hook(rx), ChannelPolicy(max_attempts=2, retry_initial=1, retry_max=1)) as r:
            [nid] = r.queue(1)
            await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="retry") == 1)
            await r.advance(5)
            await r.until(lambda: r.metric("runwatch_notifications_dead_total") == 1)
            assert r.item(nid).attempts == 2  # type: ignore[attr-defined]


async def test_max_age_expires_what_could_not_be_sent_in_time(tmp_path: Path) -> None:
    async with webhook_server(SECRET) as rx:
        rx.default = 503
        async with rig(tmp_path, hook(rx), ChannelPolicy(max_age=60, retry_initial=10, retry_max=10)) as r:
            [nid] = r.queue(1)
            await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="retry") == 1)
            await r.advance(61)
            await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="expired") == 1)
            item = r.item(nid)
            assert item.state == "dead" and "expired" in item.last_error  # type: ignore[attr-defined]
            assert len(rx.requests) == 1


async def test_a_failing_channel_is_probed_one_at_a_time_then_drains_in_order(tmp_path: Path) -> None:
    async with webhook_server(SECRET) as rx:
        rx.default = 503
        async with rig(tmp_path, hook(rx), ChannelPolicy(retry_initial=5, retry_max=5)) as r:
            ids = r.queue(1, 2, 3, 4, 5)
            await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="retry") == 1)
            assert len(rx.requests) == 1  # the batch stopped at the first failure
            assert r.metric("runwatch_channel_circuit_open") == 1
            await r.advance(7)
            await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="retry") == 2)
            assert len(rx.requests) == 2 and rx.requests[1].id == ids[0]  # one probe: the oldest
            rx.default = 200
            await r.advance(7)
            await r.until(lambda: r.metric("runwatch_notifications_sent_total") == 5)
            assert r.metric("runwatch_channel_circuit_open") == 0
    assert [q.id for q in rx.delivered()] == ids  # the backlog, oldest first, no burst of retries
    assert len(rx.requests) == 7


async def test_rate_limits_sends_on_the_clock(tmp_path: Path) -> None:
    async with (
        webhook_server(SECRET) as rx,
        rig(tmp_path, hook(rx), ChannelPolicy(rate=RateSpec(2, 1.0))) as r,
    ):
        r.queue(1, 2, 3, 4, 5)
        await r.until(lambda: len(rx.delivered()) == 2)
        await r.advance(0.55)
        await r.settle()
        assert len(rx.requests) == 2  # both sends of this second are used until the clock reaches 1 s
        await r.advance(0.45)
        await r.until(lambda: len(rx.delivered()) == 4)
        await r.advance(10)
        await r.until(lambda: len(rx.delivered()) == 5)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_rate_holds_in_every_window_of_one_period(tmp_path: Path, concurrency: int) -> None:
    """``rate: 2/s`` means no window of one second holds a third send, whatever the clock's steps."""
    policy = ChannelPolicy(rate=RateSpec(2, 1.0), concurrency=concurrency)
    async with webhook_server(SECRET) as rx, rig(tmp_path, hook(rx), policy) as r:
        rx.clock = r.clock  # each request is stamped with the clock the worker runs on
        r.queue(*range(1, 8))
        await r.settle()
        for step in [0.25] * 8 + [0.47, 0.5, 0.03, 0.97, 0.5]:
            await r.advance(step)
            await r.settle()
    sent = sorted(q.at - T0 for q in rx.delivered())
    assert len(sent) == 7, sent  # and the rate still lets all of them through, 2 a second
    crowded = [(a, c) for a, c in zip(sent, sent[2:], strict=False) if c - a < 1.0 - 1e-6]
    assert not crowded, f"3 sends within one second: {crowded} (all: {sent})"


async def test_a_reload_that_rebuilds_the_channel_frees_no_slot_of_its_rate(tmp_path: Path) -> None:
    async with (
        webhook_server(SECRET) as rx,
        rig(tmp_path, hook(rx), ChannelPolicy(rate=RateSpec(2, 1.0))) as r,
    ):
        rx.clock = r.clock
        r.queue(*range(1, 7))
        await r.settle()
        assert len(rx.requests) == 2
        r.deliverer.reconfigure({"hook": hook(rx)}, {"hook": ChannelPolicy(rate=RateSpec(3, 1.0))}, {"hook"})
        await r.advance(0.5)
        await r.settle()
        assert len(rx.requests) == 3  # 3/s now, and 2 of this second's 3 went out before the reload
        await r.advance(0.5)
        await r.until(lambda: len(rx.delivered()) == 5)
        await r.advance(0.5)
        await r.until(lambda: len(rx.delivered()) == 6)
    assert [round(q.at - T0, 3) for q in rx.delivered()] == [0, 0, 0.5, 1, 1, 1.5]


async def test_a_restart_frees_no_slot_of_a_rate(tmp_path: Path) -> None:
    """The send times are in the state: a daemon started again within the period (a crash loop, a
    restart by hand) sends no more than the rate allows."""
    async with webhook_server(SECRET) as rx:
        rx.clock = ManualClock(T0)
        async with rig(tmp_path, hook(rx), ChannelPolicy(rate=RateSpec(2, 1.0))) as r:
            r.queue(1, 2, 3, 4)
            await r.until(lambda: len(rx.delivered()) == 2)
        async with rig(tmp_path, hook(rx), ChannelPolicy(rate=RateSpec(2, 1.0))) as r:
            rx.clock = r.clock
            await r.advance(0.5)
            await r.settle()
            assert len(rx.requests) == 2  # this second's two sends were made before the restart
            await r.advance(0.5)
            await r.until(lambda: len(rx.delivered()) == 4)


async def test_two_instances_on_one_database_share_one_rate(tmp_path: Path, pg_url: str) -> None:
    """Two daemons' senders on one PostgreSQL, one channel with ``rate: 2/s``: no window of one second
    holds a third send, whichever instance makes it (each on its own would send 2 a second)."""
    clock = ManualClock(T0)
    policy = {"hook": ChannelPolicy(rate=RateSpec(2, 1.0))}
    stores = [open_state(Location(tmp_path / name, pg_url)) for name in ("a", "b")]
    try:
        async with webhook_server(SECRET) as rx, anyio.create_task_group() as tg:
            rx.clock = clock
            senders = [
                Deliverer(st.outbox, st.sends, {"hook": hook(rx)}, policy, Metrics(), clock) for st in stores
            ]
            for d in senders:
                tg.start_soon(d.run)
            alerts = [make_alert(n, channel="hook", at=T0) for n in range(8)]
            stores[0].record("exa", [], [Notification(a) for a in alerts], T0)

            async def settle() -> None:
                in_flight = "SELECT count(*) FROM runwatch_notifications WHERE claimed_by IS NOT NULL"
                with anyio.fail_after(10):
                    while True:
                        for d in senders:
                            d.wake()
                        await anyio.wait_all_tasks_blocked()
                        with psycopg.connect(pg_url) as conn:
                            if conn.execute(in_flight).fetchone() == (0,):
                                return
                        await progress()  # a send in a thread: until an outcome is recorded

            async def progress() -> None:
                async def one(d: Deliverer) -> None:
                    await d.workers["hook"].wait_progress()
                    g.cancel_scope.cancel()

                with anyio.move_on_after(0.2):  # re-check; progress is the event that moves it
                    async with anyio.create_task_group() as g:
                        for d in senders:
                            g.start_soon(one, d)

            await settle()
            for step in [0.25] * 4 + [0.5, 0.3, 0.2, 0.5, 1.0]:
                clock.advance(step)
                await settle()
            tg.cancel_scope.cancel()
    finally:
        for st in stores:
            st.close()
    sent = sorted(q.at - T0 for q in rx.delivered())
    assert len(sent) == 8, sent
    crowded = [(a, c) for a, c in zip(sent, sent[2:], strict=False) if c - a < 1.0 - 1e-6]
    assert not crowded, f"3 sends within one second: {crowded} (all: {sent})"


async def test_one_dead_channel_does_not_delay_another(tmp_path: Path) -> None:
    async with webhook_server(SECRET) as up, webhook_server(SECRET) as down:
        down.default = "hang"
        clock = ManualClock(T0)
        state = State(tmp_path)
        good = WebhookChannel("good", up.url, [SECRET], timeout=30)
        bad = WebhookChannel("bad", down.url, [SECRET], timeout=30)
        d = Deliverer(state.outbox, state.sends, {"good": good, "bad": bad}, {}, Metrics(), clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(d.run)
            state.record("exa", [], [Notification(make_alert(1, channel="bad"))], T0)
            await down.wait_for(1, delivered=False)  # the bad channel is now stuck in its send
            state.record("exa", [], [Notification(make_alert(i, channel="good")) for i in range(10)], T0)
            d.wake()
            await up.wait_for(10)
            tg.cancel_scope.cancel()
        state.close()


async def test_smtp_refusing_at_data_is_retried_then_delivered(tmp_path: Path, smtp: SmtpSink) -> None:
    smtp.refuse = "554 5.7.1 message rejected for now"
    channel = AppriseChannel("hook", mailto_url(smtp.port))
    async with rig(tmp_path, channel, ChannelPolicy(retry_initial=30, retry_max=30)) as r:
        [nid] = r.queue(1)
        await r.until(lambda: r.metric("runwatch_delivery_attempts_total", outcome="retry") == 1)
        item = r.item(nid)
        assert item.state == "pending" and item.last_error  # type: ignore[attr-defined]
        assert SMTP_PASSWORD not in item.last_error  # type: ignore[attr-defined]
        smtp.refuse = None
        await r.advance(31)
        await smtp.wait_for(1)
        await r.until(lambda: r.metric("runwatch_notifications_sent_total") == 1)
    assert smtp.refused == 1


class BrokenPlugin:
    """A channel kind with a bug: every send raises (a real object, standing in for a buggy plugin)."""

    kind = "broken"
    name = "hook"

    def __init__(self) -> None:
        self.calls = 0

    def send(self, alert: object) -> object:
        self.calls += 1
        raise RuntimeError("plugin bug while sending")

    def close(self) -> None:
        pass


async def test_a_channel_that_raises_is_a_failed_attempt_not_a_dead_worker(tmp_path: Path) -> None:
    plugin = BrokenPlugin()
    async with rig(tmp_path, plugin, ChannelPolicy(retry_initial=1, retry_max=1)) as r:  # type: ignore[arg-type]
        [nid] = r.queue(1)
        await r.until(lambda: r.metric("runwatch_delivery_failures_total", reason="error") == 1)
        assert "plugin bug" in r.item(nid).last_error  # type: ignore[attr-defined]
        await r.advance(2)  # the worker is alive and tries again
        await r.until(lambda: plugin.calls == 2)


class SlowHook(WebhookChannel):
    """A real webhook channel whose every send takes ``took`` seconds of the test's clock, after which
    ``meanwhile`` runs (what another instance does while this one sends)."""

    def __init__(self, rx: WebhookServer, clock: ManualClock, took: float) -> None:
        super().__init__("hook", rx.url, [SECRET], timeout=2)
        self.clock = clock
        self.took = took
        self.meanwhile: Callable[[], None] = lambda: None

    def send(self, alert: Alert) -> Outcome:
        outcome = super().send(alert)
        self.clock.advance(self.took)
        self.meanwhile()
        return outcome


async def test_a_long_batch_renews_its_claims_so_no_other_sender_takes_its_rows(tmp_path: Path) -> None:
    policy = ChannelPolicy(claim_timeout=60)
    async with webhook_server(SECRET) as rx, rig(tmp_path, hook(rx), policy) as r:
        channel = SlowHook(rx, r.clock, took=40)  # 20 sends: 800 s, many times the claim's time
        r.deliverer.reconfigure({"hook": channel}, {"hook": policy}, {"hook"})
        taken: list[str] = []
        channel.meanwhile = lambda: taken.extend(
            c.id for c in r.state.outbox.claim("hook", r.clock.now(), 10, "other", 60)
        )
        ids = r.queue(*range(20))
        await r.until(lambda: r.metric("runwatch_notifications_sent_total") == 20)
    assert taken == []
    assert [q.id for q in rx.delivered()] == ids


async def test_rows_another_sender_took_after_the_claim_ran_out_are_not_sent(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    policy = ChannelPolicy(claim_timeout=60)
    async with webhook_server(SECRET) as rx, rig(tmp_path, hook(rx), policy) as r:
        channel = SlowHook(rx, r.clock, took=70)  # one send outlasts the whole claim
        r.deliverer.reconfigure({"hook": channel}, {"hook": policy}, {"hook"})
        taken: list[str] = []

        def other_instance() -> None:  # takes what ran out (all three: the first is still being sent)
            if not taken:
                taken.extend(c.id for c in r.state.outbox.claim("hook", r.clock.now(), 10, "other", 600))

        channel.meanwhile = other_instance
        ids = r.queue(1, 2, 3)
        await r.until(lambda: "delivery.claim_lost" in log_lines.getvalue())
    assert taken == ids
    assert [q.id for q in rx.delivered()] == ids[:1]  # the rows the other sender holds were not sent here
