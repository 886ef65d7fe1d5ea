"""runwatch with several instances on one PostgreSQL, whole daemons: failover and delivery throughput.

    python bench/bench_instances.py                   # both parts (about 5 minutes)
    python bench/bench_instances.py --only failover   # 20 kills, lease 5s, poll_interval 1s
    python bench/bench_instances.py --only delivery   # 5,000 webhooks, 3 rounds
    python bench/bench_instances.py --quick           # 4 kills, 1,000 webhooks, one round: a smoke test
    python bench/bench_instances.py --url postgresql://...   # a database of yours (emptied first)

Every daemon is ``runwatch run`` in a process of its own, on the database (``state.url``).

1. **Failover.** Two daemons poll the fake Exa API (in this process); each round ``kill -9``s the one
   leading exa at a random point of its cycle and times how long until exa is asked again, which only
   the standby can do now: its first poll. The killed one is started again as the next standby.
   Printed: median and worst beside the goal ``lease + poll_interval + 1 s``. Baseline, in the same
   run: a clean stop (SIGTERM gives the leases up), which a standby takes within one renewal.
2. **Deliveries/s.** N notifications are queued in the state, then the daemons (no provider) send them
   to one loopback receiver (``bench_delivery.py``'s, in its own process): two instances on PostgreSQL,
   beside one on SQLite with the same config, rounds alternating. The rate is N-1 over the span of the
   rows' ``finished_at`` (first send acknowledged to last), as each state recorded them; the receiver
   must count exactly N requests per round. Goals: >= 1,000/s and >= 0.8x SQLite.

Without ``--url`` a throwaway cluster is started as the tests start theirs (``tests/postgres.py``).
A missed goal is printed, not an error; a wrong count is exit 1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))  # the tests' own cluster

from bench_delivery import ReceiverProcess  # noqa: E402
from bench_state import Server  # noqa: E402
from tests.tools import tcp_ports  # noqa: E402

from runwatch.clock import ManualClock  # noqa: E402
from runwatch.fakes import Scenario, fake_server  # noqa: E402
from runwatch.model import Alert, notification_id  # noqa: E402
from runwatch.store import Location, Notification, open_shared, open_state  # noqa: E402

EXA_KEY = "exa-bench-key-0123456789"
STORY = Scenario.model_validate(
    {"exa": {"monitors": [
        {"id": f"monitor_{i}", "runs": [{"id": f"run_{i}", "timeline": [{"at": 0, "status": "running"}]}]}
        for i in range(5)
    ]}}
)  # fmt: skip


@contextlib.contextmanager
def database(url: str | None) -> Iterator[tuple[Callable[[], str], Server]]:
    """A function that gives a fresh empty database's URL each call, and the server's CPU gauge (of
    the throwaway cluster only)."""
    if url is not None:

        def emptied() -> str:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public")
            return url

        yield emptied, Server(None)
        return
    from tests.postgres import _start_cluster

    cluster = _start_cluster()
    running = next(cluster)
    try:
        yield (lambda: running.url(running.create_database())), Server(running.folder / "data")
    finally:
        with contextlib.suppress(StopIteration):
            next(cluster)


class Daemon:
    """One ``runwatch run`` process on a config of its own."""

    def __init__(self, folder: Path, config: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "runwatch.yaml"
        self.config.write_text(config)
        self.log = folder / "runwatch.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runwatch", "run", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def started(self) -> bool:
        """It logged that it runs (its workers are sending from then on)."""
        return self.log.exists() and b"runwatch.started" in self.log.read_bytes()

    def cpu(self) -> float:
        """CPU seconds of the process (every thread), from ``/proc``."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(30)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGTERM)


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchall()  # type: ignore[arg-type]


def leader(url: str, provider: str) -> str | None:
    rows = sql(
        url,
        "SELECT holder FROM runwatch_leases WHERE name = %s"
        " AND expires_at > extract(epoch from clock_timestamp())",
        f"poll:{provider}",
    )
    return str(rows[0][0]) if rows else None


async def until(check: Any, timeout: float, what: str) -> None:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise SystemExit(f"not within {timeout:g}s: {what}")
        await anyio.sleep(0.05)


def beating(url: str, name: str, since: float) -> bool:
    """``name`` has beaten since ``since`` (unix seconds)."""
    try:
        rows = sql(url, "SELECT last_seen FROM runwatch_instances WHERE name = %s", name)
    except psycopg.Error:
        return False
    return bool(rows) and float(rows[0][0]) >= since


# -- 1. failover ------------------------------------------------------------------------------------
async def failover(url: str, workdir: Path, kills: int, lease: float, poll: float) -> dict[str, list[float]]:
    async with fake_server("exa", STORY, ManualClock(time.time())) as exa:
        daemons = {
            name: Daemon(
                workdir / name,
                f"""
instance: {name}
state_dir: {workdir / name / "state"}
state: {{url: "{url}", lease: {lease:g}s}}
metrics_listen: 127.0.0.1:0
rule_files: []
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: {poll:g}s,
         idle_poll_interval: {poll:g}s, retries: 1, timeout: 2s}}
""",
            )
            for name in ("runwatch-a", "runwatch-b")
        }
        took: dict[str, list[float]] = {"kill": [], "clean": []}
        try:
            for d in daemons.values():
                d.start()
            began = time.time()
            await until(lambda: all(beating(url, n, began) for n in daemons), 60, "both daemons beat")
            await until(lambda: leader(url, "exa") is not None, 60, "a leader of exa")
            for how, rounds in (("kill", kills), ("clean", max(2, kills // 4))):
                for _ in range(rounds):
                    name = leader(url, "exa")
                    assert name is not None
                    await anyio.sleep(random.uniform(0, poll))  # a random point of its cycle
                    [other] = [d for n, d in daemons.items() if n != name]
                    log = exa.fake.requests
                    before = Counter(log.by_client)
                    stopped = time.monotonic()
                    daemons[name].signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)

                    def asked(log: Any = log, before: Counter[Any] = before, other: Daemon = other) -> bool:
                        """The standby asked: a request on one of its connections (one the dead leader
                        had sent, answered late, is not taken for it)."""
                        assert other.proc is not None
                        ports = tcp_ports(other.proc.pid)
                        return any(log.by_client[p] > before[p] and p[1] in ports for p in log.by_client)

                    with anyio.fail_after(3 * lease + 10):
                        await log.wait_until(asked)
                    took[how].append(time.monotonic() - stopped)
                    again = time.time()
                    daemons[name].start()  # the next standby
                    await until(lambda n=name, t=again: beating(url, n, t), 60, f"{name} back")
        finally:
            for d in daemons.values():
                d.stop()
    return took


# -- 2. deliveries/s --------------------------------------------------------------------------------
def alerts(n: int, channel: str, tag: str) -> list[Alert]:
    now = time.time()
    return [
        Alert(
            id=notification_id(f"exa:run_{tag}_{i}:status:failed", "exa-run-failed", channel),
            type="run.status", channel=channel, provider="exa", monitor_id=f"monitor_{i % 40:02d}",
            run_id=f"run_{tag}_{i}", rule="exa-run-failed", severity="critical",
            title=f"exa monitor monitor_{i % 40:02d}: run run_{tag}_{i} failed",
            body="Quota exceeded: the run stopped after 412 of 500 items.", detected_at=now, occurred_at=now,
            from_status="running", to_status="failed", failed_reason="Quota exceeded",
        )
        for i in range(n)
    ]  # fmt: skip


@dataclass
class Round:
    rate: float
    #: CPU seconds per delivery: runwatch's processes, and the database server's (None: not measured).
    cpu: float
    server: float | None


def deliveries(
    url: str | None,
    workdir: Path,
    receiver: ReceiverProcess,
    n: int,
    tag: str,
    instances: int,
    server: Server,
) -> tuple[Round, list[str]]:
    """Queue ``n`` notifications, let ``instances`` daemons send them; (the round's figures, errors)."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    path = f"/{tag}"
    state_dir = workdir / tag / "state"
    store = open_state(Location(state_dir, url))  # queued, and held back (dead) until the daemons run
    store.record("exa", [], [Notification(a) for a in alerts(n, "hook", tag)], time.time())
    for c in store.outbox.claim("hook", time.time(), n, "bench", 60):
        store.outbox.dead(c.seq, "held back by the benchmark", time.time())
    store.close()
    state = f'state: {{url: "{url}"}}\n' if url else ""
    daemons = [
        Daemon(
            workdir / tag / f"i{k}",
            f"""
instance: bench-{k}
state_dir: {state_dir if k == 0 else workdir / tag / f"i{k}" / "state"}
{state}metrics_listen: 127.0.0.1:0
rule_files: []
channels:
  hook: {{webhook: {{url: "http://127.0.0.1:{receiver.port}{path}", secret: {secret}}}}}
""",
        )
        for k in range(instances)
    ]
    errors: list[str] = []
    try:
        for d in daemons:
            d.start()
        deadline = time.monotonic() + 60
        while not all(d.started() for d in daemons) and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu0, server0 = sum(d.cpu() for d in daemons), server.cpu() if url else None
        shared = open_shared(Location(state_dir, url))  # runwatch outbox replay --dead
        shared.outbox.replay([], dead=True, channel=None, now=time.time())
        shared.close()
        deadline = time.monotonic() + max(120.0, n / 50)
        while receiver.stats(path)["count"] < n and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = (sum(d.cpu() for d in daemons) - cpu0) / n
        server1 = server.cpu() if url else None
    finally:
        for d in daemons:
            d.stop()
    server_cpu = (server1 - server0) / n if server0 is not None and server1 is not None else None
    got = receiver.stats(path)
    if got["count"] != n or got["bad"]:
        errors.append(f"{tag}: the receiver got {got['count']} requests, expected {n}")
    if url is None:
        db = sqlite3.connect(state_dir / "runwatch.sqlite3")
        span = db.execute("SELECT min(finished_at), max(finished_at), count(*) FROM notifications"
                          " WHERE state = 'sent'").fetchone()  # fmt: skip
        db.close()
    else:
        [span] = sql(url, "SELECT min(finished_at), max(finished_at), count(*) FROM runwatch_notifications"
                          " WHERE state = 'sent'")  # fmt: skip
    first, last, sent = span
    if sent != n:
        errors.append(f"{tag}: {sent} rows sent in the state, expected {n}")
    return Round((n - 1) / max(1e-9, float(last) - float(first)), cpu, server_cpu), errors


def delivery_lines(args: argparse.Namespace, pg: list[Round], lite: list[Round]) -> list[str]:
    def each(xs: list[float], fmt: str) -> str:
        return "(rounds: " + " ".join(format(x, fmt) for x in xs) + ")"

    pg_rate, lite_rate = statistics.median(r.rate for r in pg), statistics.median(r.rate for r in lite)
    ratios = [p.rate / q.rate for p, q in zip(pg, lite, strict=True)]
    ratio = statistics.median(ratios)
    us = [1e6 * r.cpu for r in pg], [1e6 * r.cpu for r in lite]
    servers = [1e6 * r.server for r in pg if r.server is not None]
    out = [
        f"deliveries/s, {args.n:,} signed webhooks to one loopback receiver, {args.rounds} round(s)",
        f"  2 instances on PostgreSQL   {pg_rate:>8,.0f}/s   goal >= 1,000/s:"
        f" {'meets' if pg_rate >= 1000 else 'MISSES'}   {each([r.rate for r in pg], ',.0f')}",
        f"  baseline: 1 on SQLite       {lite_rate:>8,.0f}/s   {each([r.rate for r in lite], ',.0f')}",
        f"  ratio                        {ratio:>7.2f}x   goal >= 0.8x:"
        f" {'meets' if ratio >= 0.8 else 'MISSES'}   {each(ratios, '.2f')}",
        f"  CPU per delivery, runwatch   {statistics.median(us[0]):>6.0f} us on PostgreSQL (both instances),"
        f" {statistics.median(us[1]):.0f} us on SQLite (the daemons' processes, while they send)",
    ]
    if servers:
        out.append(
            f"  CPU per delivery, server     {statistics.median(servers):>6.0f} us (the PostgreSQL processes)"
        )
    return out


def main(args: argparse.Namespace) -> int:
    errors: list[str] = []
    lines: list[str] = []
    with database(args.url) as (fresh, server), tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "failover"):
            took = anyio.run(failover, fresh(), workdir / "failover", args.kills, args.lease, args.poll)
            goal = args.lease + args.poll + 1
            lines.append(
                "failover, whole daemons: 2 on PostgreSQL,"
                f" lease {args.lease:g}s, poll_interval {args.poll:g}s"
            )
            lines.append(f"{'':<44} {'median':>8} {'worst':>8}   goal")
            for how, label, bound in (
                ("kill", f"kill -9 -> first poll by the new leader ({len(took['kill'])})", goal),
                (
                    "clean",
                    f"baseline: SIGTERM -> first poll ({len(took['clean'])})",
                    args.lease / 3 + args.poll,
                ),
            ):
                v = took[how]
                verdict = "meets" if max(v) <= bound else "MISSES"
                lines.append(
                    f"  {label:<42} {statistics.median(v):>6.2f} s {max(v):>6.2f} s"
                    f"   <= {bound:.2f} s: {verdict}"
                )
            lines.append("  kills: " + " ".join(f"{t:.2f}" for t in took["kill"]))
        if args.only in (None, "delivery"):
            receiver = ReceiverProcess()
            pg: list[Round] = []
            lite: list[Round] = []
            try:
                for r in range(args.rounds):
                    order = [("pg", 2), ("lite", 1)] if r % 2 == 0 else [("lite", 1), ("pg", 2)]
                    for kind, instances in order:
                        url = fresh() if kind == "pg" else None
                        got, errs = deliveries(
                            url, workdir, receiver, args.n, f"{kind}{r}", instances, server
                        )
                        (pg if kind == "pg" else lite).append(got)
                        errors += errs
            finally:
                receiver.stop()
            lines += delivery_lines(args, pg, lite)
    print(f"runwatch instances benchmark; python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print("\n".join(lines))
    for e in errors:
        print(f"ERROR: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["failover", "delivery"])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--poll", type=float, default=1.0, help="poll_interval, seconds (default 1)")
    parser.add_argument("--n", type=int, default=5000, help="notifications per delivery round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--url", help="a PostgreSQL database to use, emptied first (default: a throwaway one)"
    )
    parser.add_argument("--quick", action="store_true", help="4 kills, 1,000 notifications, one round")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.kills, parsed.n, parsed.rounds = 4, 1000, 1
    sys.exit(main(parsed))
