"""Leadership (runwatch/service/leadership.py): which instance polls which provider, against a real
PostgreSQL, and its wiring into the daemon (runwatch/service/app.py).

Two instances live in one process, each with its own connection. Time is driven: the leases' clock is
a ManualClock handed to both the database statements and each instance's own deadline, and each
instance's loop is stepped by the test as its ``run`` would step it (every ``lease/3``); the one test of
``run`` itself uses short real leases.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.errors import FencedOut
from runwatch.fakes import FakeExa, RunningFake, Scenario, fake_server
from runwatch.metrics import Metrics
from runwatch.model import RunSnapshot
from runwatch.service.app import Daemon
from runwatch.service.endpoints import STANDBY
from runwatch.service.leadership import Leadership, config_digest
from runwatch.sources.base import MonitorBatch
from runwatch.store import Hint, Location, Notification, open_state
from runwatch.store.leases import RETENTION_LEASE, poll_lease
from runwatch.store.postgres.leases import PostgresLeases
from runwatch.store.sqlite.database import connect
from runwatch.store.sqlite.leases import SqliteLeases
from runwatch.store.sqlite.runs import SqliteRuns
from tests.conftest import ReceiverServer, make_alert, write_config
from tests.postgres import Cluster
from tests.store.test_leases import FENCE_SQL
from tests.test_end_to_end import EXA_KEY, FAST

pytestmark = pytest.mark.anyio

LEASE = 3.0
RENEW = LEASE / 3
EXA, OLOSTEP = poll_lease("exa"), poll_lease("olostep")
LEASES = (EXA, OLOSTEP, RETENTION_LEASE)


@pytest.fixture
def closing() -> Iterator[list[PostgresLeases | SqliteLeases]]:
    made: list[PostgresLeases | SqliteLeases] = []
    yield made
    for x in made:
        x.close()


@pytest.fixture
def instance(pg_url: str, closing: list[PostgresLeases | SqliteLeases]) -> Callable[..., Leadership]:
    """An instance's leadership on the test's database, on the given clocks."""

    def make(
        name: str,
        clock: ManualClock,
        *,
        db_clock: ManualClock | None = None,
        digest: str = "d1",
        providers: tuple[str, ...] = ("exa", "olostep"),
    ) -> Leadership:
        leases = PostgresLeases(pg_url, clock=db_clock or clock)
        closing.append(leases)
        metrics = Metrics()
        metrics.prime(providers, [], [])
        return Leadership(
            leases, leases, instance=name, lease=LEASE, providers=providers, metrics=metrics,
            clock=clock, digest=digest,
        )  # fmt: skip

    return make


def leader(x: Leadership, provider: str) -> float | None:
    return x.metrics.registry.get_sample_value("runwatch_leader", {"provider": provider})


def changes(x: Leadership, provider: str) -> float | None:
    return x.metrics.registry.get_sample_value("runwatch_leader_changes_total", {"provider": provider})


def leading(x: Leadership) -> set[str]:
    return {n for n in LEASES if x.fence(n) is not None}


async def test_the_first_instance_leads_everything_and_the_second_stands_by(
    instance: Callable[..., Leadership],
) -> None:
    clock = ManualClock()
    a, b = instance("runwatch-a", clock), instance("runwatch-b", clock)
    assert leader(a, "exa") == 0 and changes(a, "exa") == 0  # exists at 0 before anything happened
    await a.step()
    await b.step()
    assert leading(a) == set(LEASES) and leading(b) == set()
    assert (leader(a, "exa"), leader(a, "olostep"), leader(b, "exa")) == (1, 1, 0)
    assert (changes(a, "exa"), changes(b, "exa")) == (1, 0)
    fence = a.require(EXA)
    assert (fence.lease, fence.holder) == (EXA, "runwatch-a")
    for _ in range(10):  # renewals keep it where it is
        clock.advance(RENEW)
        await a.step()
        await b.step()
    assert leading(a) == set(LEASES) and leading(b) == set() and changes(a, "exa") == 1


async def test_failover_within_lease_and_one_renewal_and_never_two_leaders(
    instance: Callable[..., Leadership],
) -> None:
    """The leader stops at a different point of its renewal cycle each round; the standby steps on its
    own rhythm. At every tenth of a second neither lease has two believers, and the standby leads within
    ``lease + lease/3`` of the old leader's last renewal."""
    clock = ManualClock()
    a, b = instance("runwatch-a", clock), instance("runwatch-b", clock)
    await a.step()
    holder, standby = a, b
    last_renewal = clock.now()
    for round_ in range(6):
        stop_at = clock.now() + 2 * RENEW + round_ * 0.37  # the holder dies (or pauses) there
        next_h = clock.now() + RENEW
        next_s = clock.now() + RENEW * (0.3 + 0.1 * round_)
        taken_at: float | None = None
        while taken_at is None:
            clock.advance(0.1)
            now = clock.now()
            if now < stop_at and now >= next_h:
                await holder.step()
                last_renewal, next_h = now, next_h + RENEW
            if now >= next_s:
                await standby.step()
                next_s += RENEW
            for name in LEASES:
                assert not (holder.fence(name) and standby.fence(name)), f"{name} has two leaders at {now}"
            if standby.fence(EXA) is not None:
                taken_at = now
            assert now - stop_at < 3 * LEASE, "nobody took over"
        assert taken_at - last_renewal <= LEASE + RENEW + 0.1 + 1e-9
        assert leading(standby) == set(LEASES)
        holder, standby = standby, holder
        last_renewal = taken_at
        await standby.step()  # the old holder wakes: it finds itself a standby
        assert leading(standby) == set()
    assert changes(a, "exa") == 4 and changes(b, "exa") == 3  # a: the first, then every other round


async def test_a_leader_paused_past_its_lease_is_a_standby_before_it_does_anything(
    instance: Callable[..., Leadership], pg_url: str, log_lines: io.StringIO
) -> None:
    clock = ManualClock()
    a, b = instance("runwatch-a", clock), instance("runwatch-b", clock)
    await a.step()
    old = a.require(EXA)
    await b.step()
    # SIGSTOP: a does nothing while its lease runs out and b takes over.
    for _ in range(4):
        clock.advance(RENEW + 0.01)
        await b.step()
    assert leading(b) == set(LEASES)
    # SIGCONT: the first thing a asks says it does not lead, before its loop has run.
    assert leading(a) == set()
    with pytest.raises(FencedOut, match="does not hold the lease poll:exa"):
        a.require(EXA)
    assert leader(a, "exa") == 1  # not yet told...
    await a.step()
    assert leader(a, "exa") == 0 and leader(b, "exa") == 1  # ...now it is
    lines = log_lines.getvalue().splitlines()
    assert any("leader.lost" in x and "poll:exa" in x and "paused" in x for x in lines)
    # Its old token fences nothing: a write under it finds no lease (the database's own check).
    with psycopg.connect(pg_url) as conn:
        real_now = "extract(epoch from clock_timestamp())"
        fence_at = FENCE_SQL.replace(real_now, str(clock.now()))
        assert conn.execute(fence_at, (EXA, old.holder, old.token)).fetchall() == []
        new = b.require(EXA)
        assert conn.execute(fence_at, (EXA, new.holder, new.token)).fetchall() == [(1,)]
    await a.step()
    assert leading(a) == set()  # and it does not take it back while b renews


async def test_a_renewal_refused_ends_leadership_at_once(instance: Callable[..., Leadership]) -> None:
    """Should this instance's clock run slow beside the database's, its belief outlasts the lease (that
    is what the bound assumes away); its next renewal is refused and it stops there."""
    own, db = ManualClock(), ManualClock()
    a = instance("runwatch-a", own, db_clock=db)
    b = instance("runwatch-b", db)
    await a.step()
    db.advance(LEASE + 0.5)
    await b.step()
    assert leading(b) == set(LEASES)
    assert a.fence(EXA) is not None  # its own clock has not moved
    await a.step()
    assert leading(a) == set() and leader(a, "exa") == 0


async def test_a_database_that_goes_away_ends_leadership_at_the_deadline(
    instance: Callable[..., Leadership], postgres: Cluster
) -> None:
    clock = ManualClock()
    a = instance("runwatch-a", clock)
    await a.step()
    token = a.require(EXA).token
    postgres.stop("fast")
    try:
        clock.advance(RENEW)
        await a.step()  # cannot renew: still the leader until its deadline
        assert a.fence(EXA) is not None
        clock.advance(LEASE - RENEW)
        assert a.fence(EXA) is None  # the deadline passed: it stops, without the database
        await a.step()
        assert leader(a, "exa") == 0
    finally:
        postgres.start()
    await a.step()  # back: the lease ran out meanwhile, so it is taken afresh, under a new token
    assert a.require(EXA).token == token + 1


async def test_instances_with_different_configs_are_a_warning_and_a_metric(
    instance: Callable[..., Leadership], log_lines: io.StringIO
) -> None:
    clock = ManualClock()
    a, b = instance("runwatch-a", clock, digest="aaaa"), instance("runwatch-b", clock, digest="bbbb")
    mismatch = "runwatch_config_mismatch"
    await a.step()
    assert a.metrics.registry.get_sample_value(mismatch) == 0
    await b.step()
    await a.step()
    assert a.metrics.registry.get_sample_value(mismatch) == 1
    assert b.metrics.registry.get_sample_value(mismatch) == 1
    assert "config.mismatch" in log_lines.getvalue() and "runwatch-b=bbbb" in log_lines.getvalue()
    b.digest = "aaaa"  # b reloaded the same config
    await b.step()
    await a.step()
    assert a.metrics.registry.get_sample_value(mismatch) == 0
    # An instance not seen for a lease is gone, not disagreeing.
    b.digest = "cccc"
    await b.step()
    clock.advance(LEASE + 1)
    await a.step()
    assert a.metrics.registry.get_sample_value(mismatch) == 0


async def test_a_provider_a_reload_removes_is_released_and_leaves_the_metric(
    instance: Callable[..., Leadership],
) -> None:
    clock = ManualClock()
    a, b = instance("runwatch-a", clock), instance("runwatch-b", clock)
    await a.step()
    await b.step()
    a.set_providers(["exa"])
    b.set_providers(["exa"])
    assert leader(b, "olostep") is None  # a standby that no longer polls it has no "0" to alert on
    await a.step()
    assert a.fence(OLOSTEP) is None and leader(a, "olostep") is None and a.fence(EXA) is not None
    a.set_providers(["exa", "olostep"])
    await a.step()
    assert a.fence(OLOSTEP) is not None and leader(a, "olostep") == 1


async def test_the_loop_fails_over_in_real_time_and_a_clean_stop_hands_over_at_once(
    pg_url: str, closing: list[PostgresLeases | SqliteLeases]
) -> None:
    lease = 0.9

    def make(name: str) -> Leadership:
        leases = PostgresLeases(pg_url)
        closing.append(leases)
        return Leadership(leases, leases, instance=name, lease=lease, providers=["exa"], metrics=Metrics())

    a, b = make("runwatch-a"), make("runwatch-b")
    async with anyio.create_task_group() as tg:
        a_scope = anyio.CancelScope()

        async def run_a() -> None:
            with a_scope:
                await a.run()

        tg.start_soon(run_a)
        assert await a.wait_leading(EXA, 10)
        for _ in range(3):  # b steps a few times as a standby (it asks; a holds the lease)
            await b.step()
        assert b.fence(EXA) is None
        tg.start_soon(b.run)
        a_scope.cancel()  # a dies without a word (its renewals stop)
        died = time.monotonic()
        assert await b.wait_leading(EXA, 10)
        took = time.monotonic() - died
        assert took <= lease + lease / 3 + 0.3, took
        await b.release_all()  # a clean stop
        tg.cancel_scope.cancel()
    c = make("runwatch-c")
    await c.step()
    assert c.fence(EXA) is not None  # at once, not a lease later


def test_sqlite_leads_whatever_its_clock_says_with_a_token_that_grows(tmp_path: Path) -> None:
    from runwatch.store import State

    State(tmp_path).close()
    clock = ManualClock()
    tokens = []
    for _restart in range(2):
        leases = SqliteLeases(tmp_path / "runwatch.sqlite3", clock)
        try:
            x = Leadership(
                leases,
                leases,
                instance="solo",
                lease=LEASE,
                providers=["exa"],
                metrics=Metrics(),
                clock=clock,
            )
            x.take_now()
            tokens.append(x.require(EXA).token)
            clock.advance(86400)  # a suspended laptop: nobody else can have taken it
            assert x.fence(EXA) is not None
        finally:
            leases.close()
    assert tokens[1] > tokens[0]


def test_the_config_digest_is_what_decides_what_is_sent(tmp_path: Path) -> None:
    def digest(extra: str = "", rules: str = "rules:\n  - {name: r, notify: [ops]}\n") -> str:
        cfg = write_config(
            tmp_path, f"channels: {{ops: {{apprise: 'json://127.0.0.1:9/x'}}}}\n{extra}", rules
        )
        config = load_config(cfg)
        return config_digest(config, config.rule_paths())

    base = digest()
    assert digest() == base
    same = "state_dir: /elsewhere\nmetrics_listen: 127.0.0.1:9999\nlog_level: debug\nlog_format: json\n"
    assert digest(same) == base  # host-specific keys differ between hosts by design
    assert digest(rules="# a comment\nrules:\n- name: r\n  notify: [ops]\n") == base
    assert digest(rules="rules:\n  - {name: r2, notify: [ops]}\n") != base
    assert digest("delivery: {max_attempts: 3}\n") != base
    assert digest("providers: {exa: {poll_interval: 5m}}\n") != base
    assert digest("silences: [{matchers: {provider: exa}, ends_at: 2030-01-01T00:00:00Z}]\n") != base
    key = "exa-secret-key-0123456789"
    with_key = digest(f"providers: {{exa: {{api_key: {key}}}}}\n")
    assert with_key != base and key not in with_key


# -- the daemon ---------------------------------------------------------------------------------------
SCENARIO = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {
                    "id": "monitor_1",
                    "runs": [
                        {
                            "id": "mrun_1",
                            "timeline": [
                                {"at": 0, "status": "created"},
                                {"at": 10, "status": "running"},
                                {"at": 20, "status": "failed", "failed_reason": "Quota exceeded"},
                            ],
                        }
                    ],
                }
            ]
        }
    }
)
RULES = "rules:\n  - {name: every-status, match: {provider: exa, kind: run.status}, notify: [hook]}\n"


@asynccontextmanager
async def exa_daemon(
    tmp_path: Path, receiver: ReceiverServer, fake_clock: ManualClock, rules: str = RULES, **daemon: object
) -> AsyncIterator[tuple[Daemon, RunningFake[FakeExa]]]:
    async with fake_server("exa", SCENARIO, fake_clock) as exa:
        cfg = write_config(
            tmp_path,
            f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: 50ms, idle_poll_interval: 50ms}}
channels:
  hook: {{apprise: "{receiver.url("/hook")}"}}
delivery: {{retry_initial: 50ms, retry_max: 200ms}}
""",
            rules,
        )
        yield Daemon(load_config(cfg), client_options=FAST, **daemon), exa  # type: ignore[arg-type]


def pg_daemon(
    tmp_path: Path, exa: RunningFake[FakeExa], receiver: ReceiverServer, url: str, poll: str
) -> Daemon:
    """A daemon whose state and leases are on the PostgreSQL at ``url``, polling the fake ``exa``."""
    cfg = write_config(
        tmp_path,
        f"""
state_dir: {tmp_path / "state"}
state: {{url: "{url}"}}
metrics_listen: 127.0.0.1:0
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: {poll}}}
channels:
  hook: {{apprise: "{receiver.url("/hook")}"}}
""",
        RULES,
    )
    return Daemon(load_config(cfg), client_options=FAST)


async def test_a_lease_taken_over_in_the_middle_of_a_cycle_is_a_refused_write_not_a_crash(
    tmp_path: Path, receiver: ReceiverServer, pg_url: str, log_lines: io.StringIO
) -> None:
    """The state and the leases on PostgreSQL: this instance begins a cycle as exa's leader, then the
    lease is another's (it was paused, say). The cycle's write is refused by the database (inside the
    source's task group, so it comes wrapped in an exception group): one ``poll.fenced`` line, no
    crash counted, nothing written."""
    async with fake_server("exa", SCENARIO, ManualClock(time.time())) as exa:
        daemon = pg_daemon(tmp_path, exa, receiver, pg_url, "50ms")
        try:
            await daemon.leadership.step()
            fence = daemon.leadership.require(EXA)
            with psycopg.connect(pg_url) as conn:  # another instance holds it now, with a newer token
                conn.execute("UPDATE runwatch_leases SET holder = 'runwatch-b', token = token + 1")
            await daemon.cycle("exa", fence)
            polls = daemon.metrics.registry.get_sample_value
            assert polls("runwatch_polls_total", {"provider": "exa", "outcome": "crash"}) in (None, 0.0)
            assert "event=poll.fenced provider=exa" in log_lines.getvalue()
            assert "poll.crashed" not in log_lines.getvalue()
            with psycopg.connect(pg_url) as conn:
                assert conn.execute("SELECT count(*) FROM runwatch_runs").fetchone() == (0,)
        finally:
            for source in daemon.sources.values():
                await source.aclose()
            daemon.leadership.leases.close()
            daemon.store.close()


def detected(daemon: Daemon) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "runwatch_changes_detected_total", {"provider": "exa", "kind": "run.status"}
    )
    return value or 0.0


async def test_with_sqlite_the_daemon_leads_from_its_first_moment(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    async with exa_daemon(tmp_path, receiver, ManualClock(time.time())) as (daemon, _):
        assert daemon.leadership.fence(EXA) is not None and daemon.leadership.fence(RETENTION_LEASE)
        async with daemon.running():
            await daemon.wait_polls("exa", 2)
            m = daemon.metrics.registry
            assert m.get_sample_value("runwatch_leader", {"provider": "exa"}) == 1
            assert m.get_sample_value("runwatch_leader_changes_total", {"provider": "exa"}) == 1
            assert m.get_sample_value("runwatch_config_mismatch") == 0


async def test_a_standby_daemon_polls_nothing_yet_delivers_and_takes_over_with_fresh_memory(
    tmp_path: Path, receiver: ReceiverServer, pg_url: str, closing: list[PostgresLeases | SqliteLeases]
) -> None:
    """runwatch-a leads exa, then is paused past its lease; runwatch-b polls meanwhile and records the
    run's failure; a takes over again. It must poll from what b recorded (nothing new to report), not
    from its memory of before (which would detect ``running -> failed`` a second time)."""
    fake_clock, lease_clock = ManualClock(time.time()), ManualClock()
    a_leases, b_leases = PostgresLeases(pg_url, clock=lease_clock), PostgresLeases(pg_url, clock=lease_clock)
    closing.extend([a_leases, b_leases])
    async with exa_daemon(tmp_path, receiver, fake_clock, leases=a_leases, lease_clock=lease_clock) as (
        daemon,
        exa,
    ):
        assert daemon.leadership.fence(EXA) is None  # shared: nothing is taken before the loop asks
        async with daemon.running() as http, httpx.AsyncClient() as client:
            await daemon.leadership.step()
            await daemon.wait_polls("exa", 2)  # the baseline: mrun_1 created
            fake_clock.advance(12)
            base = daemon.polls_done["exa"]
            await daemon.wait_polls("exa", base + 2)
            assert detected(daemon) == 1  # created -> running
            await receiver.receiver.wait_for(1, "/hook")

            # a is paused past its lease; b takes exa over.
            lease_clock.advance(daemon.leadership.lease + 0.1)
            token = b_leases.acquire(EXA, "runwatch-b", daemon.leadership.lease)
            assert token is not None
            assert daemon.leadership.fence(EXA) is None
            with anyio.fail_after(10):  # a cycle begun before the lease ran out ends; then it stands by
                await daemon.wait_standing_by("exa")
            standby_at, asked = daemon.polls_done["exa"], exa.fake.requests.total
            with anyio.fail_after(10):  # six poll intervals: a standby polls none of them
                await daemon.wait_standing_by("exa", rounds=6)
            assert (daemon.polls_done["exa"], exa.fake.requests.total) == (standby_at, asked)
            ready = await client.get(f"{http.url}/readyz")  # a standby is ready: exa is not its to poll
            assert (ready.status_code, ready.json()["providers"]) == (200, {"exa": STANDBY})

            # Meanwhile b polls: mrun_1 failed, recorded (with its notification) in the shared state.
            fake_clock.advance(10)
            b_db = connect(daemon.store.path, create=False)
            try:
                b_db.execute("BEGIN IMMEDIATE")
                snap = RunSnapshot("exa", "monitor_1", "mrun_1", "failed", {"id": "mrun_1"})
                SqliteRuns(b_db).write("exa", [snap], fake_clock.now(), "monitor_1")
                b_db.execute("COMMIT")
            finally:
                b_db.close()
            # Delivery runs on every instance: a sends what is queued while it polls nothing.
            daemon.store.record("exa", [], [Notification(make_alert(7, channel="hook"))], 1.0)
            daemon.deliverer.wake({"hook"})
            await receiver.receiver.wait_for(2, "/hook")
            assert (daemon.polls_done["exa"], exa.fake.requests.total) == (standby_at, asked)

            # b stops; a takes over at its next step and polls from the state b left.
            b_leases.release(EXA, "runwatch-b", token)
            await daemon.leadership.step()
            assert daemon.leadership.require(EXA).token == token + 1
            await daemon.wait_polls("exa", standby_at + 3)
            assert detected(daemon) == 1, "running -> failed detected again from stale memory"
            assert daemon.store.runs.is_done("exa", "mrun_1")


async def test_a_write_after_the_lease_is_lost_is_refused_before_it_reaches_the_store(
    tmp_path: Path, receiver: ReceiverServer, pg_url: str, closing: list[PostgresLeases | SqliteLeases]
) -> None:
    lease_clock = ManualClock()
    leases = PostgresLeases(pg_url, clock=lease_clock)
    closing.append(leases)
    async with exa_daemon(
        tmp_path, receiver, ManualClock(time.time()), leases=leases, lease_clock=lease_clock
    ) as (daemon, _):
        await daemon.leadership.step()
        daemon.detect.provider_settled("exa")
        before = daemon.store.db.execute("SELECT count(*) FROM runs").fetchone()
        lease_clock.advance(daemon.leadership.lease)  # paused past its lease, between two batches
        snap = RunSnapshot("exa", "monitor_1", "mrun_9", "running", {"id": "mrun_9"})
        try:
            with pytest.raises(FencedOut):
                await daemon.pipeline(MonitorBatch("exa", "monitor_1", [snap]))
            assert daemon.store.db.execute("SELECT count(*) FROM runs").fetchone() == before
        finally:
            for source in daemon.sources.values():
                await source.aclose()
            daemon.store.close()


async def test_clock_made_changes_are_made_by_the_leader_only(
    tmp_path: Path, receiver: ReceiverServer, pg_url: str, closing: list[PostgresLeases | SqliteLeases]
) -> None:
    """A run stuck for an hour: the standby's tick decides nothing about it; the same daemon, once it
    leads exa, reports it (once)."""
    lease_clock = ManualClock()
    mine, other = PostgresLeases(pg_url, clock=lease_clock), PostgresLeases(pg_url, clock=lease_clock)
    closing.extend([mine, other])
    held = other.acquire(EXA, "runwatch-b", LEASE)
    assert held is not None
    stuck = "rules:\n  - {name: stuck, match: {kind: run.stuck}, stuck_after: 30m, notify: [hook]}\n"
    async with exa_daemon(
        tmp_path, receiver, ManualClock(time.time()), stuck, leases=mine, lease_clock=lease_clock
    ) as (daemon, _):
        try:
            await daemon.leadership.step()
            assert daemon.leadership.fence(EXA) is None
            hour_ago = time.time() - 3600
            run = RunSnapshot("exa", "monitor_1", "mrun_1", "running", {"id": "mrun_1"}, created_at=hour_ago)
            daemon.store.record("exa", [run], [], hour_ago, monitor_id="monitor_1")  # as runwatch-b did
            daemon.lifecycle_tick()
            assert daemon.store.outbox.counts() == {}
            other.release(EXA, "runwatch-b", held)
            await daemon.leadership.step()
            daemon.lifecycle_tick()
            daemon.lifecycle_tick()
            assert daemon.store.outbox.counts() == {("hook", "pending"): 1}
        finally:
            for source in daemon.sources.values():
                await source.aclose()
            daemon.store.close()


async def test_a_push_another_instance_took_is_read_by_the_providers_leader(
    tmp_path: Path, receiver: ReceiverServer, pg_url: str
) -> None:
    """With several instances, a push may reach a standby, which records its hint in the shared state.
    The leader of that provider finds it (``take_shared_hints``, every second while the daemon runs),
    wakes its poller to read what the push names, and the read consumes it; a standby takes nothing."""
    async with fake_server("exa", SCENARIO, ManualClock(time.time())) as exa:
        daemon = pg_daemon(tmp_path, exa, receiver, pg_url, "60s")
        standby = open_state(Location(tmp_path / "b", pg_url))  # another instance's store
        try:
            await daemon.leadership.step()
            assert daemon.leadership.fence(EXA) is not None
            assert daemon.take_shared_hints() == []  # nothing waits
            pushed = Hint("exa", "evt_r1_completed", "monitor_1", "", "monitor.run.completed", time.time())
            assert standby.hints.add(pushed)
            assert daemon.store.hints.pending("exa") == []  # not in the leader's memory yet
            assert daemon.take_shared_hints() == ["exa"]
            assert [h.event_id for h in daemon.store.hints.pending("exa")] == ["evt_r1_completed"]
            assert daemon.pushed.has_fresh("exa")  # its poller is woken to read it
            assert daemon.take_shared_hints() == []  # known now: woken once
            await daemon.read_pushed("exa")
            assert daemon.store.hints.pending("exa") == []
            with psycopg.connect(pg_url) as conn:
                row = conn.execute("SELECT consumed_at FROM runwatch_push_hints").fetchone()
                assert row is not None and row[0] is not None
            with psycopg.connect(pg_url) as conn:  # the lease is another's now: a standby takes none
                conn.execute("UPDATE runwatch_leases SET holder = 'runwatch-b', token = token + 1")
            later = Hint("exa", "evt_r2", "monitor_1", "", "monitor.run.created", time.time())
            assert standby.hints.add(later)
            await daemon.leadership.step()
            assert daemon.take_shared_hints() == []
        finally:
            standby.close()
            for source in daemon.sources.values():
                await source.aclose()
            daemon.leadership.leases.close()
            daemon.store.close()
