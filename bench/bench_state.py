"""runwatch state benchmark (issue 19): CPU per poll request with the state on PostgreSQL, beside the
same on SQLite, measured in the same run against the same fake.

    python bench/bench_state.py                     # 200 monitors x 5 runs, exa and olostep (~1 min)
    python bench/bench_state.py --url postgresql://user@host/db   # a database of yours (emptied first)
    python bench/bench_state.py --quick             # 20 x 5: a smoke test

Per provider, every monitor active (unfinished runs): two daemons, one with ``state_dir`` (SQLite) and
one with ``state.url`` (PostgreSQL), poll the same fake (in a process of its own) in alternating
``Daemon.poll_once`` cycles, by a ManualClock moved 60 s a cycle, as ``bench_sources.py`` figure 1 does.
CPU is ``getrusage`` of this process around each cycle (every thread, the pool's included). Goal:
PostgreSQL <= 1.2x SQLite per request.

The database server's own CPU is another process's, as the fake's is; with the throwaway cluster this
benchmark starts (no ``--url``), it is read from ``/proc`` for the server's processes and printed
beside, so runwatch + its database can be compared with runwatch + SQLite too. The first poll (every
run new, recorded silently: the writes) is printed as well. Every cycle's request count is checked
against the fake's log, and the runs each store holds against those generated: exit 1 if one is wrong.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.postgres: the throwaway cluster

from bench_sources import (
    INTERVAL,
    Cycle,
    DaemonSim,
    FakeProcess,
    Problems,
    Spec,
    finish,
    served,
    write_config,
)

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.service.app import Daemon

PROVIDERS = ("exa", "olostep")
GOAL = 1.2


class StoreSim(DaemonSim):
    """A daemon's poll cycles (as :class:`bench_sources.DaemonSim`) on the store a URL names, or SQLite."""

    def __init__(self, provider: str, base_url: str, workdir: Path, name: str, url: str | None) -> None:
        self.provider = provider
        self.url = url
        self.clock = ManualClock(float(int(time.time())))
        path = write_config(workdir, name, {provider: base_url})
        if url is not None:
            path.write_text(path.read_text() + f"state: {{url: '{url}'}}\n")
        self.daemon = Daemon(load_config(path), clock=self.clock)
        self.cycles = 0

    async def lead(self) -> None:
        """Take or renew the provider's lease (a PostgreSQL store fences every write), outside the
        measured cycle."""
        await self.daemon.leadership.step()
        self.failed = 0

    def tracked(self) -> int:
        """Runs the store holds, counted in it."""
        if self.url is None:
            return super().tracked()
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM runwatch_runs WHERE provider = %s", (self.provider,))
            return int(row.fetchone()[0])  # type: ignore[index]


class Server:
    """The CPU of the database server's processes (the postmaster and its children), from ``/proc``."""

    def __init__(self, data_dir: Path | None) -> None:
        self.pid = int((data_dir / "postmaster.pid").read_text().split()[0]) if data_dir else None
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float | None:
        if self.pid is None:
            return None
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(entry.name), int(fields[1])
            if pid == self.pid or ppid == self.pid:
                total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return total / self.tick


@dataclass
class Row:
    provider: str
    shape: str
    sqlite: list[Cycle] = field(default_factory=list)
    postgres: list[Cycle] = field(default_factory=list)
    #: The database server's CPU over each PostgreSQL cycle (None: not measurable, a server of yours).
    server: list[float | None] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def per_request(cycles: list[Cycle], extra: float = 0.0) -> float:
        return (sum(c.cpu for c in cycles) + extra) / max(1, sum(c.requests for c in cycles))

    @property
    def ratio(self) -> float:
        return self.per_request(self.postgres) / self.per_request(self.sqlite)

    @property
    def server_cpu(self) -> float | None:
        return None if None in self.server else sum(s or 0.0 for s in self.server)

    @property
    def cycle_ratios(self) -> list[float]:
        return [
            (p.cpu / max(p.requests, 1)) / (s.cpu / max(s.requests, 1))
            for p, s in zip(self.postgres, self.sqlite, strict=True)
        ]


def empty(url: str) -> None:
    """A database of the user's: drop runwatch's tables, so the daemon starts on an empty state."""
    with psycopg.connect(url, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'runwatch%'"):
            conn.execute(f'DROP TABLE "{name}" CASCADE')  # type: ignore[arg-type]


async def measure(
    spec: Spec, workdir: Path, url: str, server: Server, args: argparse.Namespace, problems: Problems
) -> Row:
    shape = f"{spec.monitors}x{spec.runs}"
    row = Row(spec.provider, shape)
    empty(url)
    fake = FakeProcess(spec)
    sims = {
        "sqlite": StoreSim(spec.provider, fake.base_url, workdir, f"{spec.provider}-{shape}-sqlite", None),
        "postgres": StoreSim(spec.provider, fake.base_url, workdir, f"{spec.provider}-{shape}-pg", url),
    }
    try:
        stats = fake.stats()
        for name, sim in sims.items():  # the first poll: every run new, recorded silently
            await sim.lead()
            before = server.cpu()
            c = await sim.cycle()
            after = server.cpu()
            row.first[name] = c.cpu
            if name == "postgres" and before is not None and after is not None:
                row.first["server"] = after - before
            n, stats = served(fake, stats)
            problems.check(n == c.requests, f"{name} {spec.provider} {shape}: first poll {c.requests} != {n}")
            problems.check(
                sim.tracked() == spec.total_runs,
                f"{name} {spec.provider} {shape}: {sim.tracked()} runs held, {spec.total_runs} generated",
            )
        for k in range(args.pairs):
            for name in ("sqlite", "postgres") if k % 2 else ("postgres", "sqlite"):
                await sims[name].lead()
                before = server.cpu()
                c = await sims[name].cycle()
                after = server.cpu()
                c.served, stats = served(fake, stats)
                problems.check(
                    c.served == c.requests,
                    f"{name} {spec.provider} {shape} cycle {k}: counted {c.requests}, served {c.served}",
                )
                if name == "postgres":
                    row.postgres.append(c)
                    row.server.append(None if before is None or after is None else after - before)
                else:
                    row.sqlite.append(c)
        for name, sim in sims.items():
            problems.check(sim.failed == 0, f"{name} {spec.provider} {shape}: {sim.failed} cycles had errors")
    finally:
        for sim in sims.values():
            await sim.close()
        fake.stop()
    return row


def report(rows: list[Row]) -> list[tuple[str, str, str, bool]]:
    goals: list[tuple[str, str, str, bool]] = []
    print(
        "\nCPU per poll request, every monitor active: runwatch on SQLite and on PostgreSQL, cycles"
        f" interleaved (goal: PostgreSQL <= {GOAL:g}x)"
    )
    print(
        "   provider shape    cycles  req/cycle   us CPU/req sqlite  postgres   ratio  (cycles: min-max)"
        "   postgres + server   ratio"
    )
    for r in rows:
        rq = statistics.mean(c.requests for c in r.postgres)
        ratios = r.cycle_ratios
        srv = r.server_cpu
        with_server = "n/a" if srv is None else f"{1e6 * r.per_request(r.postgres, srv):6.0f}"
        srv_ratio = "" if srv is None else f"{r.per_request(r.postgres, srv) / r.per_request(r.sqlite):6.2f}x"
        print(
            f"   {r.provider:8} {r.shape:8} {len(r.postgres):6} {rq:10.0f}"
            f" {1e6 * r.per_request(r.sqlite):17.0f} {1e6 * r.per_request(r.postgres):9.0f} {r.ratio:7.2f}x"
            f"  ({min(ratios):.2f}-{max(ratios):.2f}) {with_server:>19} {srv_ratio:>7}"
        )
        goals.append((f"CPU per request {r.provider} {r.shape}", f"{r.ratio:.2f}x", f"<= {GOAL:g}x",
                      r.ratio <= GOAL))  # fmt: skip
    print("\nThe first poll (every run new, recorded silently in one transaction per monitor): ms CPU")
    print("   provider shape     sqlite  postgres   ratio   database server")
    for r in rows:
        srv = r.first.get("server")
        print(
            f"   {r.provider:8} {r.shape:8} {1000 * r.first['sqlite']:7.0f} {1000 * r.first['postgres']:9.0f}"
            f" {r.first['postgres'] / r.first['sqlite']:6.2f}x"
            f"   {'n/a' if srv is None else f'{1000 * srv:.0f}'}"
        )
    print(
        "   (steady cycles write nothing: a poll that saw nothing new reads only memory, on either store;"
        " 'server' is the PostgreSQL processes' own CPU, not counted in runwatch's)"
    )
    return goals


@contextmanager
def database(url: str | None) -> Iterator[tuple[str, Path | None]]:
    """The URL to measure on, and the cluster's data directory when this benchmark started it."""
    if url is not None:
        yield url, None
        return
    from tests.postgres import _start_cluster

    clusters = _start_cluster()
    cluster = next(clusters)
    try:
        yield cluster.url(cluster.create_database()), cluster.folder / "data"
    finally:
        clusters.close()


async def run(args: argparse.Namespace) -> int:
    for key in ("EXA_API_KEY", "OLOSTEP_API_KEY", "CREDENTIALS_DIRECTORY"):
        os.environ.pop(key, None)
    problems = Problems()
    monitors, runs = (20, 5) if args.quick else (200, 5)
    print(
        f"runwatch state benchmark: python {sys.version.split()[0]}, {os.cpu_count()} cores,"
        f" {monitors} monitors x {runs} runs, poll_interval {INTERVAL:g}s,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    began = time.perf_counter()
    rows: list[Row] = []
    with (
        database(args.url) as (url, data_dir),
        tempfile.TemporaryDirectory(prefix="runwatch-bench-state-") as tmp,
    ):
        server = Server(data_dir)
        for provider in args.providers.split(","):
            rows.append(
                await measure(Spec(provider, monitors, 0, runs), Path(tmp), url, server, args, problems)
            )
    return finish(report(rows), problems, began)


def main(argv: Iterable[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20 monitors x 5 runs, 4 cycles each: a smoke test")
    p.add_argument("--url", help="a PostgreSQL database to measure on (runwatch's tables in it are dropped)")
    p.add_argument("--pairs", type=int, default=None, help="cycles per store after the first (default 10)")
    p.add_argument("--providers", default=",".join(PROVIDERS), help="exa,olostep")
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.pairs is None:
        args.pairs = 4 if args.quick else 10
    sys.exit(anyio.run(run, args))


if __name__ == "__main__":
    main()
