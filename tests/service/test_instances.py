"""Several runwatch daemons on one PostgreSQL: real processes, the fake providers, a webhook receiver.

Each daemon is ``runwatch run`` in a process of its own (so ``kill -9`` and ``SIGSTOP`` are real),
with its own ``instance`` name and ``state_dir`` and the test session's throwaway PostgreSQL as
``state.url``. The fakes' story moves only when the test advances their clock, one step at a time;
after each step the test waits until the receiver has every notification that step must bring, and
in the end compares what arrived with what the story holds: every change notified, none twice (but
for the documented window a ``kill -9`` may hit: at most one per kill).

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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runwatch.clock import ManualClock
from runwatch.fakes import RunningFake, Scenario, fake_server
from tests.tools import free_port
from tests.webhook_server import WebhookServer, webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LEASE = 3.0
POLL = 1.0
#: Time the story moves by at each step (each step holds one change per run at most).
STEPS = (10, 20, 30, 40, 50)
#: Slack on a failover bound for starting processes and a loaded 2-core machine.
SLACK = 1.0

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
    | {("olostep", "run_p2", "run_complete"), ("olostep", "run_p2", "completed")},
}


@dataclass
class Instance:
    """One ``runwatch run`` process and what it needs to be started again."""

    name: str
    config: Path
    log: Path
    metrics: str
    proc: subprocess.Popen[bytes] | None = None

    def requests(self, provider: str) -> float:
        """Its ``runwatch_api_requests_total`` to ``provider`` (every endpoint), from its /metrics."""
        text = httpx.get(self.metrics, timeout=5).text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "runwatch_api_requests_total" and s.labels["provider"] == provider
        )

    def start(self) -> None:
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
    tmp_path: Path, url: str, names: tuple[str, ...] = ("runwatch-a", "runwatch-b")
) -> AsyncIterator[Cluster]:
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
            for inst in c.instances.values():
                inst.start()
            await until(lambda: started(c), 30, "both providers polled once (the baseline)")
            yield c
        finally:
            for inst in c.instances.values():
                inst.stop()


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
async def test_two_daemons_notify_every_change_once_and_poll_each_provider_from_one(
    tmp_path: Path, pg_url: str
) -> None:
    with showing_logs(tmp_path):
        async with cluster(tmp_path, pg_url) as c:
            for at in STEPS:
                await c.step(at)
            check_all_once(c, allowed_duplicates=0)
            for provider in ("exa", "olostep"):  # polled by its leader alone, all along
                leader = c.leader(provider)
                polled = {i.name for i in c.instances.values() if i.requests(provider) > 0}
                assert polled == {leader}, (provider, polled, leader)
            rows = c.sql("SELECT count(*) FROM runwatch_notifications")
            assert rows == [(len(set().union(*EXPECTED.values())),)]


async def test_kill_9_of_the_leader_a_standby_polls_within_lease_and_a_poll_interval(
    tmp_path: Path, pg_url: str
) -> None:
    """The leader of exa is killed three times, at different points of its cycle (idle before a step,
    at once after one, when it may be polling or recording, and a random moment later, when it may be
    sending), each time with a standby beside it and then started again as the next standby. The
    standby's first request to exa comes within ``lease`` + ``poll_interval`` of the kill, and every
    change is still notified, with at most one duplicate per kill."""
    took: list[float] = []

    async def kill_the_leader(c: Cluster) -> None:
        leader = c.leader("exa")
        assert leader is not None
        c.instances[leader].kill()
        killed = time.monotonic()
        await anyio.sleep(0.05)  # a request the dead leader had sent is answered first
        asked = c.exa.fake.requests.total
        with anyio.fail_after(LEASE + POLL + 10):
            await c.exa.fake.requests.wait_count(asked + 1)
        took.append(time.monotonic() - killed)
        assert c.leader("exa") not in (None, leader)
        c.instances[leader].start()  # back, as a standby for the next kill

    with showing_logs(tmp_path):
        async with cluster(tmp_path, pg_url) as c:
            for at in STEPS:
                if at == 10:
                    await kill_the_leader(c)  # idle: the step's changes are the new leader's to see
                c.move(at)
                if at == 30:
                    await kill_the_leader(c)
                elif at == 50:
                    await anyio.sleep(random.uniform(0, POLL))
                    await kill_the_leader(c)
                await c.arrived(at)
            duplicates = check_all_once(c, allowed_duplicates=len(took))
    print(f"kills={len(took)} first poll by the new leader after {', '.join(f'{t:.2f}' for t in took)} s;"
          f" duplicates={duplicates}")  # fmt: skip
    assert max(took) <= LEASE + POLL + SLACK, took


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
            await anyio.sleep(2 * POLL)
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


def state_errors(inst: Instance) -> dict[str, float]:
    text = httpx.get(inst.metrics, timeout=5).text
    return {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "runwatch_state_errors_total"
    }


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
            await anyio.sleep(2 * LEASE)  # past every lease: nobody polls, nothing is sent
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
