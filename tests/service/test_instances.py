"""Several runwatch daemons on one PostgreSQL: real processes, the fake providers, a webhook receiver.

Each daemon is ``runwatch run`` in a process of its own (so ``kill -9`` and ``SIGSTOP`` are real),
with its own ``instance`` name and ``state_dir`` and the test session's throwaway PostgreSQL as
``state.url``. The fakes' story moves only when the test advances their clock, one step at a time;
after each step the test waits until the receiver has every notification that step must bring, and
in the end compares what arrived with what the story holds: every change notified, none twice (but
for the documented window a ``kill -9`` may hit: at most one per kill).

Which instance asked a fake, or sent the receiver a notification, is told by the connection: the fakes
and the receiver record each request's peer address, and an instance's process holds that port open
(``/proc``), so a request the dead leader had sent before its ``kill -9`` is never taken for the new
leader's, whenever it is answered.

``lease: 3s`` and ``poll_interval: 1s`` keep the failovers short; the database is asked (leases,
heartbeats, rows) a few times a second where nothing announces what a test waits for.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runwatch.clock import ManualClock
from runwatch.fakes import FakeBase, RunningFake, Scenario, fake_server
from tests.tools import free_port, tcp_ports
from tests.webhook_server import WebhookServer, webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LEASE = 3.0
POLL = 1.0
#: Time the story moves by at each step (each step holds one change per run at most).
STEPS = (10, 20, 30, 40, 50, 60)
#: Slack on a failover bound for starting processes and a loaded 2-core machine.
SLACK = 1.0
PROVIDERS = ("exa", "olostep")
THREE = ("runwatch-a", "runwatch-b", "runwatch-c")

EXA_MONITORS = ("monitor_a", "monitor_b", "monitor_c")
STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {
                    "id": m,
                    "runs": [
                        {"id": f"{m}_1", "timeline": [
                            {"at": 0, "status": "created"}, {"at": 10, "status": "running"},
                            {"at": 20, "status": "completed" if i else "failed", "failed_reason": "quota"},
                        ]},
                        {"id": f"{m}_2", "timeline": [
                            {"at": 30, "status": "created"}, {"at": 40, "status": "running"},
                            {"at": 50, "status": "completed"},
                        ]},
                        {"id": f"{m}_3", "timeline": [
                            {"at": 50, "status": "created"},
                            {"at": 60, "status": "failed", "failed_reason": "quota"},
                        ]},
                    ],
                }
                for i, m in enumerate(EXA_MONITORS)
            ]
        },
        "olostep": {
            "monitors": [
                {
                    "id": "monitor_p",
                    "runs": [
                        {"id": "run_p1", "events": [
                            {"at": 10, "type": "work_received", "message": "work received"},
                            {"at": 20, "type": "node_start", "message": "node start"},
                            {"at": 30, "type": "run_complete", "message": "run complete"},
                        ]},
                        {"id": "run_p2", "events": [
                            {"at": 40, "type": "work_received", "message": "work received"},
                            {"at": 50, "type": "run_complete", "message": "run complete"},
                        ]},
                        {"id": "run_p3", "events": [
                            {"at": 60, "type": "work_received", "message": "work received"},
                        ]},
                    ],
                }
            ]
        },
    }
)  # fmt: skip

RULES = """
rules:
  - {name: status, match: {kind: run.status}, notify: [hook]}
  - {name: steps, match: {kind: run.event}, notify: [hook]}
"""

#: (provider, run, what) of every change the story holds after the first start's baseline at 0, by the
#: step that brings it: a run's statuses, an Olostep run's steps (a run seen first is news from then on).
EXPECTED: dict[int, set[tuple[str, str, str]]] = {
    10: {("exa", f"{m}_1", "running") for m in EXA_MONITORS}
    | {("olostep", "run_p1", "running"), ("olostep", "run_p1", "work_received")},
    20: {("exa", f"{m}_1", "failed" if m == "monitor_a" else "completed") for m in EXA_MONITORS}
    | {("olostep", "run_p1", "node_start")},
    30: {("exa", f"{m}_2", "created") for m in EXA_MONITORS}
    | {("olostep", "run_p1", "run_complete"), ("olostep", "run_p1", "completed")},
    40: {("exa", f"{m}_2", "running") for m in EXA_MONITORS}
    | {("olostep", "run_p2", "running"), ("olostep", "run_p2", "work_received")},
    50: {("exa", f"{m}_2", "completed") for m in EXA_MONITORS}
    | {("exa", f"{m}_3", "created") for m in EXA_MONITORS}
    | {("olostep", "run_p2", "run_complete"), ("olostep", "run_p2", "completed")},
    60: {("exa", f"{m}_3", "failed") for m in EXA_MONITORS}
    | {("olostep", "run_p3", "running"), ("olostep", "run_p3", "work_received")},
}


@dataclass
class Instance:
    """One ``runwatch run`` process and what it needs to be started again."""

    name: str
    config: Path
    log: Path
    metrics: str
    proc: subprocess.Popen[bytes] | None = None
    #: When it was last started (wall clock, as the heartbeats in the state).
    started_at: float = 0.0

    def requests(self, provider: str) -> float:
        """Its ``runwatch_api_requests_total`` to ``provider`` (every endpoint), from its /metrics."""
        text = httpx.get(self.metrics, timeout=5).text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "runwatch_api_requests_total" and s.labels["provider"] == provider
        )

    def ports(self) -> set[int]:
        """The local ports of the TCP connections its process holds open now: what tells whose request
        a fake or the receiver got (they record each request's peer)."""
        return set() if self.proc is None else tcp_ports(self.proc.pid)

    def start(self) -> None:
        self.started_at = time.time()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runwatch", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass
class Cluster:
    """The daemons, the fakes, the receiver and the database of one test."""

    url: str
    exa: RunningFake[Any]
    olostep: RunningFake[Any]
    clock: ManualClock
    rx: WebhookServer
    instances: dict[str, Instance] = field(default_factory=dict)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, args).fetchall()  # type: ignore[arg-type]

    def leader(self, provider: str) -> str | None:
        """The instance holding ``provider``'s lease now, by the database's clock."""
        rows = self.sql(
            "SELECT holder FROM runwatch_leases WHERE name = %s"
            " AND expires_at > extract(epoch from clock_timestamp())",
            f"poll:{provider}",
        )
        return str(rows[0][0]) if rows else None

    def seen(self) -> list[tuple[str, str, str]]:
        """(provider, run, what) of each request the receiver verified, in the order they came."""
        out = []
        for r in self.rx.requests:
            assert r.error is None and r.payload is not None, r.error
            p = r.payload
            what = p["to"] if p["type"] == "run.status" else p["event"]
            out.append((p["provider"], p["run_id"], what))
        return out

    def move(self, at: int) -> None:
        """Move the story to ``at``."""
        self.clock.advance(self.clock_t0 + at - self.clock.now())

    async def arrived(self, at: int) -> None:
        """Until every notification the story holds up to ``at`` has arrived."""
        wanted = set().union(*(EXPECTED[t] for t in STEPS if t <= at))
        await until(lambda: wanted <= set(self.seen()), 20, f"the changes up to {at}")

    async def step(self, at: int) -> None:
        self.move(at)
        await self.arrived(at)

    async def move_until_answered(self, provider: str, at: int) -> None:
        """Move the story to ``at`` and return as soon as ``provider``'s fake has answered a request that
        arrived after the move (its poller is reading, or recording, what the move changed)."""
        log = self.fake(provider).requests
        before = sum(log.started.values())
        self.move(at)
        # More answered than had arrived before the move: one of them arrived after it.
        await log.wait_until(lambda: log.total - log.by_route["not_found"] > before)

    def fake(self, provider: str) -> FakeBase:
        return (self.exa if provider == "exa" else self.olostep).fake

    def owner(self, peer: tuple[str, int] | None) -> str | None:
        """The live instance whose connection has the local address ``peer`` (None: none of them)."""
        if peer is None:
            return None
        return next((i.name for i in self.instances.values() if peer[1] in i.ports()), None)

    def asker(self, provider: str, before: Counter[tuple[str, int]]) -> str | None:
        """The live instance that has made a request to ``provider``'s fake since ``before`` (its
        ``by_client`` then), by the connection it came on: None while only the dead (or nobody) did."""
        now = self.fake(provider).requests.by_client
        for peer in now:
            if now[peer] > before[peer] and (name := self.owner(peer)) is not None:
                return name
        return None

    def renewed(self, provider: str) -> bool:
        """``provider``'s leader has renewed its lease once at least: a kill finds it in its steady
        cycle, not in the second after it took over."""
        rows = self.sql(
            "SELECT expires_at - acquired_at FROM runwatch_leases WHERE name = %s", f"poll:{provider}"
        )
        return bool(rows) and float(rows[0][0]) > LEASE + 0.5

    def settled(self) -> bool:
        """Every notification in the outbox is sent: none pending, none claimed (by a live sender or by
        one killed mid-send, whose claim must run out first)."""
        return self.sql("SELECT count(*) FROM runwatch_notifications WHERE state <> 'sent'") == [(0,)]

    def beating(self) -> bool:
        """Every instance runs and has beaten since it was (re)started."""
        rows = dict(self.sql("SELECT name, last_seen FROM runwatch_instances"))
        return all(i.proc and rows.get(i.name, 0) >= i.started_at for i in self.instances.values())

    @property
    def clock_t0(self) -> float:
        return float(self.exa.fake.t0)


def config(tmp_path: Path, name: str, url: str, exa: Any, olostep: Any, rx: WebhookServer, port: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES)
    cfg = folder / "runwatch.yaml"
    cfg.write_text(
        f"""
instance: {name}
state_dir: {folder / "state"}
state: {{url: "{url}", lease: {LEASE:g}s}}
metrics_listen: 127.0.0.1:{port}
rule_files: [rules.yaml]
providers:
  exa: {{base_url: "{exa.base_url}", api_key: exa-test-key-0123456789, poll_interval: {POLL:g}s,
         idle_poll_interval: {POLL:g}s, retries: 1, timeout: 2s}}
  olostep: {{base_url: "{olostep.base_url}", api_key: olostep-test-key-9876543210, poll_interval: {POLL:g}s,
             idle_poll_interval: {POLL:g}s, retries: 1, timeout: 2s}}
channels:
  hook: {{webhook: {{url: "{rx.url}", secret: {SECRET}, timeout: 2s}}}}
delivery: {{retry_initial: 100ms, retry_max: 200ms, claim_timeout: 3s, shutdown_timeout: 2s}}
log_level: info
"""
    )
    return cfg


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Ask ``check`` a few times a second until it holds; the seconds that took. Fails naming ``what``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await anyio.sleep(0.05)
    return time.monotonic() - began


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    url: str,
    names: tuple[str, ...] = ("runwatch-a", "runwatch-b"),
    *,
    first_alone: bool = False,
) -> AsyncIterator[Cluster]:
    """The daemons named ``names``, started together; ``first_alone``: the first one is started alone
    and leads every provider before the others start as standbys."""
    clock = ManualClock(time.time())
    async with (
        fake_server("exa", STORY, clock) as exa,
        fake_server("olostep", STORY, clock) as olostep,
        webhook_server(SECRET) as rx,
    ):
        c = Cluster(url, exa, olostep, clock, rx)
        for name in names:
            port = free_port()
            cfg = config(tmp_path, name, url, exa, olostep, rx, port)
            c.instances[name] = Instance(
                name, cfg, tmp_path / f"{name}.log", f"http://127.0.0.1:{port}/metrics"
            )
        try:
            if first_alone:
                first = next(iter(c.instances.values()))
                first.start()
                await until(lambda: leads_all(c, first.name), 30, f"{first.name} leading every provider")
            for inst in c.instances.values():
                if inst.proc is None:
                    inst.start()
            await until(lambda: started(c), 30, "both providers polled once (the baseline)")
            yield c
        finally:
            for inst in c.instances.values():
                inst.stop()


def leads_all(c: Cluster, name: str) -> bool:
    try:
        return all(c.leader(p) == name for p in PROVIDERS)
    except psycopg.Error:  # the schema is not made yet
        return False


def started(c: Cluster) -> bool:
    """Every instance beats, and each provider's first poll (the baseline) is recorded."""
    try:
        beats = {str(r[0]) for r in c.sql("SELECT name FROM runwatch_instances")}
        done = c.sql("SELECT count(*) FROM runwatch_meta WHERE key LIKE 'baseline_done:%%'")
    except psycopg.Error:  # the schema is not made yet
        return False
    return beats >= set(c.instances) and done == [(2,)]


def logs(tmp_path: Path) -> str:
    return "\n".join(f"{p.name}:\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))


@contextlib.contextmanager
def showing_logs(tmp_path: Path) -> Iterator[None]:
    """A failure shows the daemons' last log lines with it."""
    try:
        yield
    except BaseException as exc:
        raise AssertionError(f"{exc}\n--- daemon logs ---\n{logs(tmp_path)}") from exc


def check_all_once(c: Cluster, allowed_duplicates: int) -> int:
    """Every change of the story arrived; none but ``allowed_duplicates`` twice; returns duplicates."""
    seen = c.seen()
    assert set(seen) == set().union(*EXPECTED.values())
    ids = Counter(r.id for r in c.rx.requests)
    assert len(ids) == len(set(seen))  # one id per change (a repeat of an id is a duplicate send)
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates <= allowed_duplicates, ids.most_common(3)
    return duplicates


# -- the tests --------------------------------------------------------------------------------------
@pytest.mark.parametrize("names", [THREE[:2], THREE], ids=["two", "three"])
async def test_daemons_notify_every_change_once_and_poll_each_provider_from_one(
    tmp_path: Path, pg_url: str, names: tuple[str, ...]
) -> None:
    """Two, then three daemons at once: each change of the story is notified once, and each provider is
    polled by one instance all along (the lease's holder; no other instance asked it anything)."""
    with showing_logs(tmp_path):
        async with cluster(tmp_path, pg_url, names) as c:
            for at in STEPS:
                await c.step(at)
            check_all_once(c, allowed_duplicates=0)
            for provider in ("exa", "olostep"):  # polled by its leader alone, all along
                leader = c.leader(provider)
                polled = {i.name for i in c.instances.values() if i.requests(provider) > 0}
                assert polled == {leader}, (provider, polled, leader)
            rows = c.sql("SELECT count(*) FROM runwatch_notifications")
            assert rows == [(len(set().union(*EXPECTED.values())),)]


@dataclass
class Kill:
    """One ``kill -9`` of a leader, and what followed: for each provider it led, how long after the kill
    which standby made its first request there."""

    point: str
    victim: str
    led: tuple[str, ...]
    took: dict[str, float] = field(default_factory=dict)
    by: dict[str, str] = field(default_factory=dict)
    #: For a kill while sending: whether the victim had sent the notification the receiver held.
    sending: bool | None = None

    def __str__(self) -> str:
        took = " ".join(f"{p} {self.took[p]:.2f}s by {self.by[p]}" for p in self.led)
        own = "" if self.sending is None else f" (its own send in flight: {'yes' if self.sending else 'no'})"
        return f"{self.point}{own}: {self.victim} led {'+'.join(self.led)}; first request: {took}"


async def kill_the_leader(
    c: Cluster,
    provider: str,
    point: str,
    moment: Callable[[], Awaitable[Any]] | None = None,
    then: Callable[[], None] | None = None,
) -> Kill:
    """With every instance running and the leader renewing its lease, ``kill -9`` the leader of
    ``provider`` when ``moment`` returns (at once: what the kill needs is read before), call ``then``,
    await each provider it led being asked by another instance (a request on that instance's connection:
    none the dead one had sent counts), check that one holds the lease, and start the victim again, a
    standby now."""
    await until(c.beating, 30, "every instance running and beating")
    await until(lambda: c.renewed(provider), 10, f"the leader of {provider} renewing its lease")
    victim = c.leader(provider)
    assert victim is not None
    kill = Kill(point, victim, tuple(p for p in PROVIDERS if c.leader(p) == victim))
    before = {p: Counter(c.fake(p).requests.by_client) for p in kill.led}
    if moment is not None:
        await moment()
    c.instances[victim].kill()
    killed = time.monotonic()
    if then is not None:
        then()

    limit = LEASE + POLL + 10

    async def first_request(p: str) -> None:
        def asked() -> bool:
            name = c.asker(p, before[p])
            if name is not None:
                kill.by[p] = name
            return name is not None

        with anyio.move_on_after(limit):
            await c.fake(p).requests.wait_until(asked)
            kill.took[p] = time.monotonic() - killed

    async with anyio.create_task_group() as tg:
        for p in kill.led:
            tg.start_soon(first_request, p)
    unasked = [p for p in kill.led if p not in kill.took]
    assert not unasked, f"{point}: no instance but the dead {victim} asked {unasked} in {limit:g}s"
    for p in kill.led:
        assert kill.by[p] != victim and c.leader(p) == kill.by[p], (p, kill.by, c.leader(p))
    c.instances[victim].start()  # back, as a standby for the next kill
    return kill


async def test_kill_9_of_the_leader_a_standby_polls_within_lease_and_a_poll_interval(
    tmp_path: Path, pg_url: str
) -> None:
    """Three instances; the leader of a provider is killed seven times, at different points of its cycle:
    idle between two steps; inside the transaction that records a step (held by a lock the test takes
    in PostgreSQL); at once after the story moved (it may be polling); as soon as its fake has answered
    a request asked after a move (it is recording or already sending); as soon as the receiver holds the
    first notification of a step (it may be sending it); the leader of olostep as soon as its fake
    answered, and at a random moment. Each time one of the two others makes its first request to each
    provider the victim led within ``lease`` + ``poll_interval``, and the victim is started again as a
    standby. In the end every change is notified, with at most one duplicate per kill (the send a kill
    cuts off), and recorded once."""
    kills: list[Kill] = []
    held: list[str | None] = []  # who sent the notification the receiver holds

    async def moved(at: int) -> None:
        c.move(at)

    lock: list[psycopg.Connection[Any]] = []

    async def recording(at: int) -> None:
        # Hold the runs table (a real lock, in PostgreSQL) and move the story: the leader's transaction
        # recording the step waits for it, its fence checked and nothing committed.
        held_by = f"runwatch {c.leader('exa')}"
        conn = psycopg.connect(c.url)
        lock.append(conn)
        conn.execute("LOCK TABLE runwatch_runs IN EXCLUSIVE MODE")
        c.move(at)
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO runwatch_runs%%'"
        )
        try:
            await until(lambda: c.sql(waiting, held_by) != [(0,)], 20, "the leader recording, held")
        except BaseException:
            unlock()  # not left to the daemons' shutdown
            raise

    def unlock() -> None:
        while lock:
            lock.pop().close()  # its transaction rolls back: the lock is gone

    async def sending(at: int) -> None:
        c.rx.gate = anyio.Event()  # answers wait: a sender's first send of the step stays in flight
        sent = len(c.rx.requests)
        c.move(at)
        await c.rx.wait_for(sent + 1, delivered=False, timeout=20)
        assert c.seen()[sent] in EXPECTED[at]
        held.append(c.owner(c.rx.requests[sent].peer))

    def answer() -> None:
        assert c.rx.gate is not None
        c.rx.gate.set()
        c.rx.gate = None

    async def at_random(at: int) -> None:
        c.move(at)
        await anyio.sleep(random.uniform(0, POLL))

    with showing_logs(tmp_path):
        async with cluster(tmp_path, pg_url, THREE, first_alone=True) as c:
            kills.append(await kill_the_leader(c, "exa", "idle"))  # of a leader of both
            kills.append(await kill_the_leader(c, "exa", "recording", partial(recording, 10), then=unlock))
            await c.arrived(10)
            kills.append(await kill_the_leader(c, "exa", "moved", partial(moved, 20)))
            await c.arrived(20)
            when = partial(c.move_until_answered, "exa", 30)
            kills.append(await kill_the_leader(c, "exa", "answered", when))
            await c.arrived(30)
            await until(c.settled, 20, "nothing in flight (the next send is the step's)")
            kills.append(await kill_the_leader(c, "exa", "sending", partial(sending, 40), then=answer))
            kills[-1].sending = held == [kills[-1].victim]
            await c.arrived(40)
            when = partial(c.move_until_answered, "olostep", 50)
            kills.append(await kill_the_leader(c, "olostep", "olostep answered", when))
            await c.arrived(50)
            kills.append(await kill_the_leader(c, "olostep", "olostep at random", partial(at_random, 60)))
            await c.arrived(60)
            await until(c.settled, 20, "every notification sent (a cut-off send's claim run out)")
            duplicates = check_all_once(c, allowed_duplicates=len(kills))
            rows = c.sql("SELECT count(*) FROM runwatch_notifications")
            assert rows == [(len(set().union(*EXPECTED.values())),)]  # each change recorded once
    took = [t for k in kills for t in k.took.values()]
    bound = LEASE + POLL + SLACK
    print(f"\nkills={len(kills)} duplicates={duplicates} worst={max(took):.2f}s (bound {bound:g}s)")
    for k in kills:
        print(f"  {k}")
    assert max(took) <= bound, [str(k) for k in kills]
    assert kills[0].led == PROVIDERS


async def test_a_leader_paused_past_its_lease_writes_nothing_when_it_wakes(
    tmp_path: Path, pg_url: str
) -> None:
    """``SIGSTOP`` the leader of exa; the standby takes over and records the story's next step; then
    ``SIGCONT``: the old leader, whose memory is from before that step (so it would record it again),
    writes no row, logs that it lost the lease, and stands by."""
    tables = ("runs", "run_events", "run_stuck", "monitors", "monitor_state", "catch_up", "alerts", "meta")
    with showing_logs(tmp_path):
        async with cluster(tmp_path, pg_url) as c:
            await c.step(10)
            paused = c.leader("exa")
            assert paused is not None
            c.instances[paused].kill(signal.SIGSTOP)
            await c.step(20)  # seen and sent by the other instance, once it holds the lease
            assert c.leader("exa") not in (None, paused)

            def rows() -> list[Any]:
                found: list[Any] = [c.sql(f"SELECT * FROM runwatch_{t} ORDER BY 1, 2") for t in tables]
                outbox = "SELECT id, state, attempts, created_at, finished_at FROM runwatch_notifications"
                found.append(c.sql(outbox + " ORDER BY seq"))
                return found

            before = rows()
            beats = c.sql("SELECT last_seen FROM runwatch_instances WHERE name = %s", paused)
            c.instances[paused].kill(signal.SIGCONT)
            # It runs again: it beats (a standby's heartbeat), and has had two poll intervals to try.
            await until(
                lambda: c.sql("SELECT last_seen FROM runwatch_instances WHERE name = %s", paused) != beats,
                10,
                "the woken instance beats again",
            )
            # It stood by, and has beaten twice since: two poll intervals in which it could have tried.
            log_file = tmp_path / f"{paused}.log"
            await until(lambda: "leader.lost" in log_file.read_text(), 10, "the woken instance stands by")
            await until(lambda: leads_nothing(c.instances[paused]), 10, "runwatch_leader 0 there")
            beat = "SELECT last_seen FROM runwatch_instances WHERE name = %s"
            for _ in range(2):
                beats = c.sql(beat, paused)
                await until(lambda b=beats: c.sql(beat, paused) != b, 10, "another heartbeat")
            assert rows() == before
            assert c.leader("exa") != paused
            log = (tmp_path / f"{paused}.log").read_text()
            assert "leader.lost" in log
            await c.step(30)  # and the story goes on, once each
            check_all_once_upto(c, 30)


def check_all_once_upto(c: Cluster, at: int) -> None:
    wanted = set().union(*(EXPECTED[t] for t in STEPS if t <= at))
    assert set(c.seen()) == wanted
    assert all(n == 1 for n in Counter(r.id for r in c.rx.requests).values())


def state_seen(inst: Instance) -> tuple[float | None, int | None, str]:
    """``runwatch_state_up``, the ``/readyz`` status and its body (None while nothing answers)."""
    base = inst.metrics.removesuffix("/metrics")
    try:
        text = httpx.get(inst.metrics, timeout=5).text
        ready = httpx.get(base + "/readyz", timeout=5)
    except httpx.HTTPError:
        return None, None, ""
    families = text_string_to_metric_families(text)
    up = next((s.value for f in families for s in f.samples if s.name == "runwatch_state_up"), None)
    return up, ready.status_code, ready.text


def shows(inst: Instance, up: float, status: int) -> Callable[[], bool]:
    """Whether ``inst`` shows ``runwatch_state_up`` ``up`` and ``/readyz`` ``status`` now."""
    return lambda: state_seen(inst)[:2] == (up, status)


def samples(inst: Instance, name: str, label: str) -> dict[str, float]:
    """The samples of the metric ``name`` on its /metrics, by the value of ``label``."""
    text = httpx.get(inst.metrics, timeout=5).text
    found = (s for f in text_string_to_metric_families(text) for s in f.samples)
    return {s.labels[label]: s.value for s in found if s.name == name}


def state_errors(inst: Instance) -> dict[str, float]:
    return samples(inst, "runwatch_state_errors_total", "reason")


def leads_nothing(inst: Instance) -> bool:
    """It polls no provider now (``runwatch_leader`` 0 for each): its leases ran out, or it stood by."""
    return not any(samples(inst, "runwatch_leader", "provider").values())


async def test_the_database_stopped_mid_run_shows_and_every_change_is_notified_once_when_back(
    tmp_path: Path, own_postgres: Any
) -> None:
    """The database stops mid-run (the test's own cluster: the session's is shared): the daemons say
    so (``runwatch_state_up`` 0, ``/readyz`` 503 naming the state) and keep running while the story
    moves on; once the database is back they resume by themselves (no restart) and every change of the
    story is notified exactly once, the ones made while it was away included."""
    pg = own_postgres
    url = pg.url(pg.create_database())
    with showing_logs(tmp_path):
        async with cluster(tmp_path, url) as c:
            insts = list(c.instances.values())
            assert all(state_seen(i)[0] == 1 for i in insts)
            assert all(set(state_errors(i)) >= {"unavailable", "fenced", "other"} for i in insts)
            await c.step(10)
            await until(lambda: len(c.rx.requests) == len(c.seen()), 5, "nothing in flight")
            pg.stop()
            c.move(20)  # changes the fakes make while the database is away
            for inst in insts:
                await until(shows(inst, 0, 503), 30, "the state being away shows")
                body = state_seen(inst)[2]
                assert "state" in body and "unreachable" in body, body
                assert state_errors(inst)["unavailable"] > 0
            for inst in insts:  # past every lease: nobody polls, nothing is sent
                await until(lambda inst=inst: leads_nothing(inst), 2 * LEASE + 10, "every lease run out")
            assert all(i.proc is not None and i.proc.poll() is None for i in insts)  # survived
            pg.start()
            for inst in insts:
                await until(shows(inst, 1, 200), 30, "the state being back shows")
            await c.arrived(20)
            for at in STEPS[2:]:
                await c.step(at)
            check_all_once(c, allowed_duplicates=0)


async def test_a_send_acknowledged_while_the_database_is_away_is_sent_again_once(
    tmp_path: Path, own_postgres: Any
) -> None:
    """The receiver holds its answer to the first notification while the test stops the database, then
    acknowledges it: its sender cannot record the outcome, pauses, and once the database is back the
    row, still pending in the state, is sent again when its claim ran out: exactly once more."""
    pg = own_postgres
    url = pg.url(pg.create_database())
    with showing_logs(tmp_path):
        async with cluster(tmp_path, url, names=("runwatch-a",)) as c:
            inst = c.instances["runwatch-a"]
            c.rx.gate = anyio.Event()
            c.move(10)
            await until(lambda: len(c.rx.requests) >= 1, 20, "the first send")
            held = c.rx.requests[0].id
            pg.stop()
            c.rx.gate.set()  # acknowledged now, with nobody to record it
            c.rx.gate = None
            await until(shows(inst, 0, 503), 30, "the state being away shows")
            pg.start()
            await c.arrived(10)
            await until(lambda: sum(r.id == held for r in c.rx.requests) == 2, 20, "the send again")
            for at in STEPS[1:]:
                await c.step(at)
            assert check_all_once(c, allowed_duplicates=1) == 1
            assert Counter(r.id for r in c.rx.requests)[held] == 2
            rows = c.sql("SELECT count(*) FROM runwatch_notifications WHERE state <> 'sent'")
            assert rows == [(0,)]
