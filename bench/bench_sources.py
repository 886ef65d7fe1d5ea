"""runwatch sources benchmark (issue 13): each figure beside its baseline, measured in the same run.

    python bench/bench_sources.py                 # the figures of issue 13 (about five minutes)
    python bench/bench_sources.py --quick         # small shapes, one start each: a smoke test (~1 min)
    python bench/bench_sources.py --only sources --profile   # where runwatch's extra CPU goes

Per provider (exa, olostep), at 200 monitors x 5 runs and 2,000 monitors x 1 run:

1. CPU per request of runwatch (source, detect, match, record: ``Daemon.poll_once``) beside a bare httpx
   async loop making the requests a poller needs (same endpoints, same concurrency, JSON decoded),
   every monitor with unfinished runs; runwatch's cycles and the bare loop's alternate. Goal: <= 1.15x.
2. Requests per monitor per hour over one ``idle_poll_interval`` of simulated cycles (poll_interval
   60s, idle 5m): every monitor active (unfinished runs), and every monitor idle (all runs finished),
   beside "every monitor every cycle" (the cycle that polled every monitor and read the list, 60 times
   an hour: today's pace). Goal: idle <= 1/5.

And once:

3. Memory per tracked run: RSS of ``python -m runwatch run`` (providers off) on a state of 100,000 runs
   minus that on 10,000, over the difference, for finished runs and for unfinished ones. The states
   are written with ``State.record`` (half Exa, half Olostep with three events each). Goal: <= 1 KB.
4. Start-up with 100,000 finished runs: process start to ``/healthz`` answering 200, and RSS, beside an
   empty state's. Goals: within 0.5 s; RSS within 20 MB of the empty state's.
5. The share of a core used by 10,000 monitors (2 % with a run in flight) at ``poll_interval`` 60s and
   the default idle pace, per provider: the CPU of five simulated cycles (one idle interval: one round
   of the idle monitors, the active ones every cycle) over the 300 seconds they stand for. Goal: < 25 %.

How. The fakes (``runwatch.fakes``) run in processes of their own (``--serve-fake``): their CPU is not
counted, and they answer ``stats`` on stdin with their request log. runwatch runs in this process as a
``Daemon`` whose clock is a ``ManualClock`` moved 60 s a cycle (``poll_once`` per cycle), so minutes of
schedule take seconds; the fake's clock is not moved, which is sound because no run changes state
during a measurement (finished runs stay finished, unfinished ones run for two hours) and no monitor's
cron comes due (their schedules are set twelve hours away). Idle monitors (2 and 5) are measured from a
restart on a state that already holds their finished runs: that first cycle reads the list and polls
every monitor, which is exactly what the idle round costs in steady state. CPU is ``getrusage`` of this
process around each cycle; RSS and start-up are read from ``/proc`` of a spawned daemon.
Every cycle's request count is checked against the fake's own log, and every tracked-run count against
what was generated: exit 1 if a count is wrong. A missed goal is printed, not an error.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import ExaSection, OlostepSection, Scenario, fake_server, generate_scenario
from runwatch.model import TERMINAL_STATUSES, RunEvent, RunSnapshot
from runwatch.service.app import Daemon
from runwatch.store import State

KEY = "bench-key"
PROVIDERS = ("exa", "olostep")
HEADERS = {"exa": {"x-api-key": KEY}, "olostep": {"authorization": f"Bearer {KEY}"}}
#: What the daemon reads from the environment; the bench sets its providers in the config file only.
ENV_KEYS = ("EXA_API_KEY", "OLOSTEP_API_KEY", "CREDENTIALS_DIRECTORY")
CONCURRENCY = 8
INTERVAL = 60.0
IDLE_INTERVAL = 300.0
#: The default request budget (``max_requests_per_second``), for the note on what it allows.
DEFAULT_BUDGET = 20.0


def cpu() -> float:
    """CPU seconds of this whole process, every thread (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# The fake, in its own process (``--serve-fake SPEC``): serves a scenario, answers "stats" on stdin.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A scenario for one provider: ``active`` monitors whose runs stay unfinished (two hours) and
    ``idle`` monitors whose runs all finished, ``runs`` runs each, created 20-25 minutes ago."""

    provider: str
    active: int
    idle: int
    runs: int

    @property
    def monitors(self) -> int:
        return self.active + self.idle

    @property
    def total_runs(self) -> int:
        return self.monitors * self.runs


def make_scenario(spec: Spec) -> Scenario:
    # Schedules twelve hours away: no monitor's cron comes due during a measurement, so "idle" stays idle.
    cron = f"0 {(datetime.now(UTC).hour + 12) % 24} * * *"
    exa: list[Any] = []
    olostep: list[Any] = []
    for tag, count, duration in (("a", spec.active, 7200.0), ("i", spec.idle, 30.0)):
        if not count:
            continue
        sc = generate_scenario(
            count, spec.runs, provider=spec.provider, start=-1500.0, spacing=60.0, duration=duration, seed=1
        )
        for exa_mon in sc.exa.monitors:
            exa_mon.id = exa_mon.id.replace("monitor_bench_", f"monitor_{tag}")
            exa_mon.cron = cron
            for exa_run in exa_mon.runs:
                exa_run.id = exa_run.id.replace("mrun_", f"mrun_{tag}")
        for ol_mon in sc.olostep.monitors:
            ol_mon.id = ol_mon.id.replace("monitor_bench_", f"monitor_{tag}")
            ol_mon.cron = cron
            for ol_run in ol_mon.runs:
                ol_run.id = ol_run.id.replace("run_", f"run_{tag}", 1)
        exa += sc.exa.monitors
        olostep += sc.olostep.monitors
    return Scenario(
        description=f"bench: {spec}", exa=ExaSection(monitors=exa), olostep=OlostepSection(monitors=olostep)
    )


def serve_fake(spec: Spec) -> None:
    async def main() -> None:
        async with fake_server(spec.provider, make_scenario(spec)) as running:
            print(f"base_url={running.base_url}", flush=True)
            log = running.fake.requests
            while await anyio.to_thread.run_sync(sys.stdin.readline):
                stats = {"total": log.total, "by_route": dict(log.by_route), "cpu": cpu()}
                stats["errors"] = sum(n for status, n in log.by_status.items() if status != 200)
                print(json.dumps(stats), flush=True)

    anyio.run(main)


class FakeProcess:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-fake", json.dumps(asdict(spec))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("base_url="):
            self.stop()
            raise SystemExit(f"fake {spec.provider} did not start: {line!r}")
        self.base_url = line.removeprefix("base_url=")

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return out

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# --------------------------------------------------------------------------------------------------
# runwatch's side: a Daemon whose clock the benchmark moves, one poll cycle at a time.
# --------------------------------------------------------------------------------------------------


def seed_finished(state_dir: Path, spec: Spec, now: float) -> None:
    """A warm state: every idle monitor's runs recorded finished, as a daemon that ran before holds them
    (one ``State.record``; the active monitors' runs are left for the first poll to find)."""
    scenario = make_scenario(spec)
    monitors = scenario.exa.monitors if spec.provider == "exa" else scenario.olostep.monitors
    snaps = [
        RunSnapshot(spec.provider, mon.id, run.id, "completed", raw={}, finished_at=now - 600)
        for mon in monitors
        if mon.id.startswith("monitor_i")
        for run in mon.runs
    ]
    state = State(state_dir)
    try:
        state.record(spec.provider, snaps, [], now)
    finally:
        state.close()


def write_config(
    workdir: Path, name: str, providers: dict[str, str], metrics_listen: str = "127.0.0.1:0"
) -> Path:
    """A config with one rule and one channel (never reached: nothing changes while measured)."""
    rules = workdir / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "bench.yaml").write_text(
        "rules:\n  - {name: every-status, match: {kind: run.status}, notify: [bench]}\n"
    )
    lines = [
        f"state_dir: {workdir / ('state-' + name)}",
        f"metrics_listen: {metrics_listen}",
        f"rule_files: [{rules}/*.yaml]",
        "channels:\n  bench: {apprise: 'json://127.0.0.1:9/none'}",
        "providers:" if providers else "providers: {}",
    ]
    for provider, base_url in providers.items():
        lines.append(
            f"  {provider}: {{base_url: '{base_url}', api_key: {KEY}, poll_interval: {INTERVAL:g}s,"
            f" idle_poll_interval: {IDLE_INTERVAL:g}s, max_requests_per_second: 1000000,"
            f" concurrency: {CONCURRENCY}}}"
        )
    cfg = workdir / f"runwatch-{name}.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@dataclass
class Cycle:
    """One poll cycle, by runwatch or by the bare loop."""

    cpu: float
    wall: float
    requests: int
    served: int = 0


class DaemonSim:
    """``Daemon.poll_once`` cycles at ``INTERVAL`` by a ManualClock (an integer start: exact sums)."""

    def __init__(
        self, provider: str, base_url: str, workdir: Path, name: str, warm: Spec | None = None
    ) -> None:
        self.provider = provider
        self.clock = ManualClock(float(int(time.time())))
        config = load_config(write_config(workdir, name, {provider: base_url}))
        if warm is not None:
            seed_finished(config.state_dir, warm, self.clock.now())
        self.daemon = Daemon(config, clock=self.clock)
        self.cycles = 0
        self.failed = 0

    def requests(self) -> int:
        total = 0.0
        for metric in self.daemon.metrics.registry.collect():
            for s in metric.samples:
                if s.name == "runwatch_api_requests_total" and s.labels.get("provider") == self.provider:
                    total += s.value
        return int(total)

    async def cycle(self) -> Cycle:
        if self.cycles:
            self.clock.advance(INTERVAL)
        self.cycles += 1
        req, c, w = self.requests(), cpu(), time.perf_counter()
        ok = await self.daemon.poll_once(self.provider)
        spent, wall = cpu() - c, time.perf_counter() - w
        if not ok:
            self.failed += 1
        return Cycle(spent, wall, self.requests() - req)

    def tracked(self) -> int:
        """Runs in the state, counted in the file (so it works whatever the store keeps in memory)."""
        row = self.daemon.store.db.execute(
            "SELECT count(*) FROM runs WHERE provider = ?", (self.provider,)
        ).fetchone()
        return int(row[0])

    async def close(self) -> None:
        self.daemon.store.close()
        await self.daemon.sources[self.provider].aclose()


# --------------------------------------------------------------------------------------------------
# The baseline: a bare httpx async loop making the requests a poller needs, nothing else.
# --------------------------------------------------------------------------------------------------


class BarePoller:
    """The same endpoints runwatch asks, at the same concurrency, JSON decoded; it remembers only which
    runs are unfinished (to fetch them) and which are finished (to skip them)."""

    def __init__(self, provider: str, base_url: str) -> None:
        self.provider = provider
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"accept": "application/json", **HEADERS[provider]},
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
            timeout=30.0,
        )
        self.sem = anyio.Semaphore(CONCURRENCY)
        self.count = 0
        self.errors = 0
        self.monitors: list[str] = []
        self.unfinished: dict[str, set[str]] = {}
        self.done: set[str] = set()
        self.runs: set[str] = set()
        self.listed: dict[str, Any] = {}
        self.list_has_last_run = False

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        async with self.sem:
            self.count += 1
            resp = await self.client.get(path, params=params)
        if resp.status_code != 200:
            self.errors += 1
            return {}
        return resp.json()

    async def cycle(self, listing: bool) -> Cycle:
        req, c, w = self.count, cpu(), time.perf_counter()
        if self.provider == "exa":
            await self._exa(listing)
        else:
            await self._olostep(listing)
        return Cycle(cpu() - c, time.perf_counter() - w, self.count - req)

    async def _each(self, fn: Any) -> None:
        async with anyio.create_task_group() as tg:
            for mid in self.monitors:
                tg.start_soon(fn, mid)

    # Exa: the monitor list (pages of 200) at the idle pace; each monitor's newest runs (one page of
    # 50 holds them all here); a get-run for an unfinished run the page left out (none here).
    async def _exa(self, listing: bool) -> None:
        if listing or not self.monitors:
            ids: list[str] = []
            params: dict[str, Any] = {"limit": 200}
            while True:
                page = await self.get("/v0/monitors", params)
                ids += [m["id"] for m in page.get("data", [])]
                if not page.get("hasMore"):
                    break
                params = {"limit": 200, "cursor": page["nextCursor"]}
            self.monitors = ids
        await self._each(self._exa_monitor)

    async def _exa_monitor(self, mid: str) -> None:
        page = await self.get(f"/v0/monitors/{mid}/runs", {"limit": 50})
        open_ = self.unfinished.setdefault(mid, set())
        listed = set()
        for run in page.get("data", []):
            listed.add(run["id"])
            self._saw(mid, run["id"], run["status"] in TERMINAL_STATUSES)
        for rid in open_ - listed:
            run = await self.get(f"/v0/monitors/{mid}/runs/{rid}")
            if run:
                self._saw(mid, rid, run["status"] in TERMINAL_STATUSES)

    # Olostep: the monitor list (no paging) at the idle pace, or every cycle when it carries each
    # monitor's last_run; else each monitor (for its last_run); its newest events (one page of 25
    # holds every run here); each run not known finished.
    async def _olostep(self, listing: bool) -> None:
        if listing or not self.monitors or self.list_has_last_run:
            body = await self.get("/v1/monitors")
            self.listed = {m["id"]: m for m in body.get("monitors", [])}
            self.list_has_last_run = any("last_run" in m for m in self.listed.values())
            self.monitors = list(self.listed)
        await self._each(self._olostep_monitor)

    async def _olostep_monitor(self, mid: str) -> None:
        monitor = self.listed.get(mid, {})
        if "last_run" not in monitor:
            monitor = await self.get(f"/v1/monitors/{mid}")
        events = await self.get(f"/v1/monitors/{mid}/events", {"limit": 25})
        wanted = [e["run_id"] for e in events.get("data", []) if e["run_id"] not in self.done]
        last = monitor.get("last_run")
        if last and last["id"] not in self.done:
            wanted.append(last["id"])
        wanted += self.unfinished.get(mid, ())
        for rid in dict.fromkeys(wanted):
            run = await self.get(f"/v1/monitors/{mid}/runs/{rid}")
            steps = [(e.get("event") or {}).get("type") for e in run.get("events", [])]
            self._saw(mid, rid, "run_complete" in steps)

    def _saw(self, mid: str, rid: str, finished: bool) -> None:
        self.runs.add(rid)
        if finished:
            self.done.add(rid)
            self.unfinished.get(mid, set()).discard(rid)
        else:
            self.unfinished.setdefault(mid, set()).add(rid)

    async def aclose(self) -> None:
        await self.client.aclose()


# --------------------------------------------------------------------------------------------------
# 1 + 2: CPU per request and requests per monitor per hour.
# --------------------------------------------------------------------------------------------------


@dataclass
class Problems:
    """Counts that are wrong: the benchmark's own correctness, the only reason to exit 1."""

    items: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.items.append(what)


def served(fake: FakeProcess, before: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    now = fake.stats()
    return now["total"] - before["total"], now


@dataclass
class CpuRow:
    provider: str
    shape: str
    ours: list[Cycle]
    bare: list[Cycle]
    profile: Profiles | None = None

    @staticmethod
    def per_request(cycles: list[Cycle]) -> float:
        return sum(c.cpu for c in cycles) / max(1, sum(c.requests for c in cycles))

    @property
    def ratio(self) -> float:
        return self.per_request(self.ours) / self.per_request(self.bare)

    @property
    def cycle_ratios(self) -> list[float]:
        return [
            (o.cpu / max(o.requests, 1)) / (b.cpu / max(b.requests, 1))
            for o, b in zip(self.ours, self.bare, strict=True)
        ]


class Profiles:
    """``--profile``: cProfile around runwatch's and the bare loop's paired cycles, compared per request."""

    GROUPS: tuple[str, ...] = (
        *("runwatch/", "httpx/", "httpcore/", "h11/", "anyio/", "sniffio/", "tenacity/", "asyncio/"),
        *("json/", "prometheus_client/", "croniter/", "dateutil/", "orjson"),
    )

    def __init__(self) -> None:
        # CPU time, not wall time: on a shared machine, wall time charges other processes' turns to
        # whatever function happened to be running.
        self.ours = cProfile.Profile(time.process_time)
        self.bare = cProfile.Profile(time.process_time)

    @classmethod
    def by_group(cls, prof: cProfile.Profile) -> dict[str, float]:
        out: dict[str, float] = {}
        stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        for (filename, _, name), (_, _, tottime, _, _) in stats.items():
            group = next((g for g in cls.GROUPS if g in filename), None)
            if group is None:
                group = f"{name}" if filename == "~" else Path(filename).name
            out[group] = out.get(group, 0.0) + tottime
        return out

    def report(self, row: CpuRow, top: int = 12) -> None:
        n_ours = sum(c.requests for c in row.ours)
        n_bare = sum(c.requests for c in row.bare)
        ours, bare = self.by_group(self.ours), self.by_group(self.bare)
        print(
            f"\n   profile {row.provider} {row.shape}: tottime per request under cProfile, by package"
            f" (runwatch {1e6 * sum(ours.values()) / n_ours:.0f} us,"
            f" bare {1e6 * sum(bare.values()) / n_bare:.0f} us)"
        )
        diff = {k: ours.get(k, 0.0) / n_ours - bare.get(k, 0.0) / n_bare for k in set(ours) | set(bare)}
        for k in sorted(diff, key=lambda k: -diff[k])[:top]:
            print(
                f"     {k[:58]:58} runwatch {1e6 * ours.get(k, 0.0) / n_ours:7.1f}"
                f"   bare {1e6 * bare.get(k, 0.0) / n_bare:7.1f}   +{1e6 * diff[k]:6.1f} us"
            )
        print(f"   runwatch's own functions, cumulative per request ({row.provider} {row.shape}):")
        stats: dict[Any, Any] = pstats.Stats(self.ours).stats  # type: ignore[attr-defined]
        own = [
            (cum, f"{Path(fn).parent.name}/{Path(fn).name}:{line}({name})")
            for (fn, line, name), (_, _, _, cum, _) in stats.items()
            if "runwatch/" in fn
        ]
        for cum, where in sorted(own, reverse=True)[:top]:
            print(f"     {where[:80]:80} {1e6 * cum / n_ours:8.1f} us")


@dataclass
class HourRow:
    provider: str
    shape: str
    state: str
    monitors: int
    cycles: list[Cycle]
    #: Idle rows: the first cycle after the restart (every monitor at first sight), not in ``cycles``.
    restart: Cycle | None = None

    @property
    def per_hour(self) -> float:
        span = INTERVAL * len(self.cycles)
        return sum(c.requests for c in self.cycles) / self.monitors * 3600.0 / span

    @property
    def every_cycle(self) -> float:
        """Today's pace: the cost of a cycle that polls every monitor (and lists them), every cycle."""
        full = max(c.requests for c in [*self.cycles, *([self.restart] if self.restart else [])])
        return full / self.monitors * 3600.0 / INTERVAL


async def measure_active(
    spec: Spec, workdir: Path, args: argparse.Namespace, problems: Problems
) -> tuple[CpuRow, HourRow]:
    """Every monitor active. Runwatch's cycles and the bare loop's alternate (who goes first too), in
    pairs, until each side made ``--min-requests`` (at least ``--pairs`` pairs); runwatch then goes
    on alone up to ``--cycles`` for the requests-per-hour figure."""
    shape = f"{spec.monitors}x{spec.runs}"
    fake = FakeProcess(spec)
    sim = DaemonSim(spec.provider, fake.base_url, workdir, f"{spec.provider}-{shape}-active")
    bare = BarePoller(spec.provider, fake.base_url)
    every = int(IDLE_INTERVAL // INTERVAL)
    profiles = Profiles() if args.profile else None
    try:
        stats = fake.stats()
        first = await sim.cycle()  # the first start: everything new, recorded silently
        n, stats = served(fake, stats)
        problems.check(n == first.requests, f"{spec.provider} {shape}: first poll {first.requests} != {n}")
        problems.check(
            sim.tracked() == spec.total_runs,
            f"{spec.provider} {shape}: {sim.tracked()} runs tracked, {spec.total_runs} generated",
        )
        await bare.cycle(listing=True)  # learns the monitors and which runs are unfinished
        _, stats = served(fake, stats)
        problems.check(
            len(bare.runs) == spec.total_runs,
            f"{spec.provider} {shape}: the bare loop saw {len(bare.runs)} runs of {spec.total_runs}",
        )
        ours: list[Cycle] = []
        base: list[Cycle] = []
        pairs, k = args.pairs, 0
        while k < pairs or k < args.cycles:
            k += 1
            order = ("bare", "ours") if k % 2 else ("ours", "bare")
            for who in order if k <= pairs else ("ours",):
                prof = None if profiles is None else profiles.bare if who == "bare" else profiles.ours
                if prof is not None:
                    prof.enable()
                c = await (bare.cycle(listing=k % every == 0) if who == "bare" else sim.cycle())
                if prof is not None:
                    prof.disable()
                c.served, stats = served(fake, stats)
                (base if who == "bare" else ours).append(c)
                problems.check(
                    c.served == c.requests,
                    f"{spec.provider} {shape} cycle {k}: {who} counted {c.requests}, the fake served"
                    f" {c.served}",
                )
            if k == 1:
                pairs = max(args.pairs, math.ceil(args.min_requests / max(1, base[0].requests)))
        problems.check(sim.failed == 0, f"{spec.provider} {shape}: {sim.failed} poll cycles had errors")
        problems.check(bare.errors == 0, f"{spec.provider} {shape}: {bare.errors} bare requests failed")
        problems.check(stats["errors"] == 0, f"{spec.provider} {shape}: the fake answered errors")
    finally:
        await sim.close()
        await bare.aclose()
        fake.stop()
    cpu_row = CpuRow(spec.provider, shape, ours[: len(base)], base, profiles)
    return cpu_row, HourRow(spec.provider, shape, "active", spec.monitors, ours[: args.cycles])


async def simulate(
    spec: Spec, workdir: Path, cycles: int, problems: Problems, label: str
) -> tuple[Cycle, list[Cycle]]:
    """A restart on a warm state (every idle monitor's runs recorded finished), then ``cycles`` cycles
    of runwatch alone, each cycle's requests checked at the fake.

    The restart's cycle reads the list and polls every monitor (first sight); it also spreads the idle
    monitors' phases over the idle interval, so the ``cycles`` after it (one idle interval) are the
    steady state: each idle monitor once, a fifth of them a cycle, the active ones every cycle.
    Returns the restart's cycle and those.
    """
    fake = FakeProcess(spec)
    sim = DaemonSim(spec.provider, fake.base_url, workdir, label.replace(" ", "-"), warm=spec)
    try:
        stats = fake.stats()
        out: list[Cycle] = []
        for _ in range(cycles + 1):
            c = await sim.cycle()
            c.served, stats = served(fake, stats)
            out.append(c)
        problems.check(
            sim.tracked() == spec.total_runs,
            f"{label}: {sim.tracked()} runs tracked, {spec.total_runs} generated",
        )
        for k, c in enumerate(out):
            problems.check(
                c.served == c.requests, f"{label} cycle {k}: counted {c.requests}, the fake served {c.served}"
            )
        problems.check(sim.failed == 0, f"{label}: {sim.failed} poll cycles had errors")
        problems.check(stats["errors"] == 0, f"{label}: the fake answered errors")
    finally:
        await sim.close()
        fake.stop()
    return out[0], out[1:]


async def measure_idle(spec: Spec, workdir: Path, cycles: int, problems: Problems) -> HourRow:
    shape = f"{spec.monitors}x{spec.runs}"
    restart, out = await simulate(spec, workdir, cycles, problems, f"{spec.provider} {shape} idle")
    return HourRow(spec.provider, shape, "idle", spec.monitors, out, restart)


# --------------------------------------------------------------------------------------------------
# 5: the share of a core used by many mostly idle monitors.
# --------------------------------------------------------------------------------------------------


@dataclass
class CoreRow:
    provider: str
    monitors: int
    active: int
    cycles: list[Cycle]
    restart: Cycle

    @property
    def cpu(self) -> float:
        return sum(c.cpu for c in self.cycles)

    @property
    def share(self) -> float:
        return self.cpu / (INTERVAL * len(self.cycles))

    @property
    def busiest(self) -> Cycle:
        return max(self.cycles, key=lambda c: c.requests)


async def measure_core(spec: Spec, workdir: Path, cycles: int, problems: Problems) -> CoreRow:
    restart, out = await simulate(
        spec, workdir, cycles, problems, f"{spec.provider} {spec.monitors} monitors"
    )
    return CoreRow(spec.provider, spec.monitors, spec.active, out, restart)


# --------------------------------------------------------------------------------------------------
# 3 + 4: states built directly, a daemon started on each in a subprocess.
# --------------------------------------------------------------------------------------------------

RUNS_PER_MONITOR = 50


def build_state(state_dir: Path, runs: int, finished: bool) -> None:
    """``--build-state``: ``runs`` runs, half Exa and half Olostep (with their events), 50 per monitor,
    recorded a monitor at a time; prints how many rows the file holds."""
    state = State(state_dir)
    now = time.time()
    state.set_meta("first_start", str(now - 86400))
    for provider in PROVIDERS:
        state.set_meta(f"baseline_done:{provider}", "1")
    for p_i, provider in enumerate(PROVIDERS):
        share = runs // 2 + (runs % 2 if p_i == 0 else 0)
        for first in range(0, share, RUNS_PER_MONITOR):
            mid = f"monitor_s{first // RUNS_PER_MONITOR:06d}"
            snaps = []
            for i in range(first, min(first + RUNS_PER_MONITOR, share)):
                status = ("failed" if i % 10 == 0 else "completed") if finished else "running"
                run_id = f"{'mrun' if provider == 'exa' else 'run'}_s{i:07d}"
                events: tuple[RunEvent, ...] = ()
                if provider == "olostep":
                    names = ["work_received", "node_start"] + (["run_complete"] if finished else [])
                    ts = int((now - 3600) * 1000)
                    events = tuple(
                        RunEvent(
                            id=f"evt_{run_id}_{k:04d}", ts_ms=ts + k, name=n, message=n.replace("_", " ")
                        )
                        for k, n in enumerate(names)
                    )
                snaps.append(
                    RunSnapshot(
                        provider=provider,
                        monitor_id=mid,
                        run_id=run_id,
                        status=status,
                        raw={},
                        finished_at=now - 3600 if finished else None,
                        events=events,
                    )
                )
            state.record(provider, snaps, [], now, monitor_id=mid)
    (count,) = state.db.execute("SELECT count(*) FROM runs").fetchone()
    state.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    state.close()
    print(count, flush=True)


@dataclass
class Start:
    #: Process start to /healthz 200.
    ready: float
    rss: int
    hwm: int
    #: The process's CPU when the daemon serves.
    cpu_serving: float
    rest_share: float
    #: Process start to the daemon's own /metrics 200.
    serving: float


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` value in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answers(port: int, path: str = "/healthz") -> bool:
    """Whether ``path`` answers 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_daemon(cfg: Path, port: int, log: Path, settle: float) -> Start:
    """Process start to /healthz 200, and to the daemon's own /metrics 200 (the early answer of
    ``runwatch run`` is 503 there: this is when the daemon is built and serving); RSS (current and
    peak) and the CPU at rest ``settle`` seconds after that; SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS and not k.startswith("RUNWATCH_")}
    with log.open("ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        try:
            marks: list[float] = []
            for path in ("/healthz", "/metrics"):
                while not answers(port, path):
                    if proc.poll() is not None or time.perf_counter() - t0 > 120:
                        raise RuntimeError(f"no {path} 200 (exit {proc.poll()}); see {log}")
                    time.sleep(0.005)
                marks.append(time.perf_counter() - t0)
            ready, serving = marks
            cpu_serving = proc_cpu(proc.pid)
            time.sleep(settle)
            rss, hwm = proc_status(proc.pid, "VmRSS"), proc_status(proc.pid, "VmHWM")
            rest = (proc_cpu(proc.pid) - cpu_serving) / settle
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return Start(ready, rss, hwm, cpu_serving, rest, serving)


@dataclass
class StateRow:
    label: str
    runs: int
    starts: list[Start]

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(s, attr) for s in self.starts))

    def least(self, attr: str) -> float:
        return float(min(getattr(s, attr) for s in self.starts))


def measure_states(
    workdir: Path, sizes: tuple[int, int], repeats: int, settle: float, problems: Problems
) -> tuple[list[StateRow], float]:
    """Each state's starts (round robin), and the CPU share of a daemon at rest (empty state, 5 s)."""
    small, big = sizes
    plan = [("empty", 0, True), ("finished", small, True), ("finished", big, True)]
    plan += [("unfinished", small, False), ("unfinished", big, False)]
    rows: list[tuple[StateRow, Path, int]] = []
    for label, runs, finished in plan:
        name = f"{label}-{runs}"
        port = free_port()
        cfg = write_config(workdir, name, {}, metrics_listen=f"127.0.0.1:{port}")
        state_dir = workdir / f"state-{name}"
        out = subprocess.run(
            [sys.executable, __file__, "--build-state", str(state_dir), str(runs), str(int(finished))],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        problems.check(int(out) == runs, f"state {name}: {out.strip()} runs written, {runs} wanted")
        rows.append((StateRow(label, runs, []), cfg, port))
    for _ in range(repeats):  # round robin, so a busy moment of the machine hits every state alike
        for row, cfg, port in rows:
            row.starts.append(start_daemon(cfg, port, workdir / "daemon.log", settle))
    _, cfg, port = rows[0]
    rest = start_daemon(cfg, port, workdir / "daemon.log", 5.0).rest_share
    return [row for row, _, _ in rows], rest


# --------------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


Goals = list[tuple[str, str, str, bool]]


def report_cpu(rows: list[CpuRow], goals: Goals) -> None:
    print(
        "\n1. CPU per request, every monitor active: runwatch's poll cycles (Daemon.poll_once) and a bare"
        " httpx loop's, interleaved (goal: <= 1.15x)"
    )
    print(
        "   provider shape    pairs   req/cycle runwatch   bare   us CPU/req runwatch   bare    ratio"
        "   (cycles: min-max)   ms CPU/cycle runwatch   bare"
    )
    for r in rows:
        rq = sum(c.requests for c in r.ours) / len(r.ours)
        bq = sum(c.requests for c in r.bare) / len(r.bare)
        ratios = r.cycle_ratios
        print(
            f"   {r.provider:8} {r.shape:8} {len(r.bare):5} {rq:18.0f} {bq:6.0f}"
            f" {1e6 * r.per_request(r.ours):21.0f} {1e6 * r.per_request(r.bare):6.0f} {r.ratio:7.2f}x"
            f"   ({min(ratios):.2f}-{max(ratios):.2f})"
            f" {1000 * sum(c.cpu for c in r.ours) / len(r.ours):22.1f}"
            f" {1000 * sum(c.cpu for c in r.bare) / len(r.bare):6.1f}"
        )
        goals.append(
            (f"CPU per request {r.provider} {r.shape}", f"{r.ratio:.2f}x", "<= 1.15x", r.ratio <= 1.15)
        )
        if round(rq) != round(bq):
            print(
                f"   ! {r.provider} {r.shape}: runwatch asks {rq:.0f} requests a cycle,"
                f" the bare loop {bq:.0f}"
            )
    for r in rows:
        if r.profile is not None:
            r.profile.report(r)
    if any(r.profile is not None for r in rows):
        print(
            "   (--profile: the CPU figures above include cProfile's overhead; run without it for the ratios)"
        )


def report_hours(rows: list[HourRow], goals: Goals) -> None:
    n = len(rows[0].cycles)
    print(
        f"\n2. Requests per monitor per hour at poll_interval {INTERVAL:g}s, idle_poll_interval"
        f" {IDLE_INTERVAL:g}s, over {n} simulated cycles (one idle interval),"
        " beside every monitor every cycle (goal: idle <= 1/5)"
    )
    print("   provider shape    state     runwatch  every cycle   ratio   requests in each cycle")
    for r in rows:
        ratio = r.per_hour / r.every_cycle
        per_cycle = " ".join(str(c.requests) for c in r.cycles)
        if r.restart is not None:
            per_cycle += f"   (the restart's: {r.restart.requests})"
        print(
            f"   {r.provider:8} {r.shape:8} {r.state:7} {r.per_hour:10.1f} {r.every_cycle:12.1f}"
            f" {ratio:7.2f}   {per_cycle}"
        )
        if r.state == "idle":
            goals.append(
                (f"idle requests {r.provider} {r.shape}", f"{ratio:.2f}", "<= 0.20", ratio <= 0.2 + 1e-9)
            )
    print(
        "   (active: the cycles after the first poll; idle: the cycles after a restart on a state that holds"
        " their finished runs,\n   whose first cycle polls every monitor (first sight) and spreads them over"
        " the idle interval.\n   every cycle = the requests of the cycle that polled every monitor and read"
        f" the list, times {3600 / INTERVAL:g} cycles an hour: today's pace)"
    )


def report_core(rows: list[CoreRow], goals: Goals) -> None:
    n = len(rows[0].cycles)
    print(
        f"\n5. Share of a core: {rows[0].monitors:,} monitors ({rows[0].active} active), poll_interval"
        f" {INTERVAL:g}s, idle {IDLE_INTERVAL:g}s; CPU of the {n} cycles after a restart's first"
        f" / {INTERVAL * n:g} simulated seconds (goal: < 25 %)"
    )
    print(
        "   provider   CPU s   share   requests in each cycle         busiest: wall   at 20 req/s"
        "   restart: requests  at 20 req/s"
    )
    for r in rows:
        scale = 10_000 / r.monitors
        per_cycle = " ".join(str(c.requests) for c in r.cycles)
        b = r.busiest
        print(
            f"   {r.provider:8} {r.cpu:7.2f} {100 * r.share:6.1f} %   {per_cycle:29} {b.wall:9.1f} s"
            f" {b.requests / DEFAULT_BUDGET:9.0f} s {r.restart.requests:17}"
            f" {r.restart.requests / DEFAULT_BUDGET:9.0f} s"
        )
        share = r.share * scale
        label = f"core share {r.provider} 10,000 monitors"
        if scale != 1:
            label += f" (x{scale:g} of {r.monitors:,})"
        goals.append((label, f"{100 * share:.1f} %", "< 25 %", share < 0.25))
    print(
        "   (at 20 req/s: how long a cycle's requests take under the default max_requests_per_second, which"
        " the bench lifts.\n   Past 80 % of a poll interval's budget a cycle starts no more idle polls: the"
        " rest wait for later cycles, the active\n   monitors are still polled every cycle, first. The"
        " restart's cycle polls every monitor once (first sight); at 20 req/s it is spread over\n   as"
        " many cycles as that takes.)"
    )


def report_states(rows: list[StateRow], rest: float, settle: float, goals: Goals) -> None:
    by = {(r.label, r.runs): r for r in rows}
    empty = by[("empty", 0)]
    print(
        f"\n3+4. `python -m runwatch run` on a built state (providers off), medians of {len(empty.starts)}"
        f" starts; RSS read {settle:g} s after the daemon serves (its /metrics 200)"
    )
    print(
        "   state             runs   /healthz 200 (fastest)   daemon serving   CPU by then        RSS"
        "   peak RSS   RSS - empty"
    )
    for r in rows:
        print(
            f"   {r.label:10} {r.runs:9,} {r.median('ready'):12.2f} s ({r.least('ready'):.2f} s)"
            f" {r.median('serving'):14.2f} s {r.median('cpu_serving'):11.2f} s"
            f" {mb(r.median('rss')):>10} {mb(r.median('hwm')):>10}"
            f" {mb(r.median('rss') - empty.median('rss')):>13}"
        )
    small, big = sorted({r.runs for r in rows if r.runs})
    print(
        f"   memory per tracked run: (RSS at {big:,} runs - RSS at {small:,}) / {big - small:,}"
        " (goal: <= 1 KB)"
    )
    for label in ("finished", "unfinished"):
        per = (by[(label, big)].median("rss") - by[(label, small)].median("rss")) / (big - small)
        print(f"     {label:10} {per:7.0f} bytes per run")
        goals.append((f"memory per {label} run at {big:,} runs", f"{per:.0f} B", "<= 1024 B", per <= 1024))
    fin = by[("finished", big)]
    ready, extra = fin.median("ready"), fin.median("rss") - empty.median("rss")
    print(
        f"   start-up with {big:,} finished runs: /healthz after {ready:.2f} s"
        f" ({ready - empty.median('ready'):+.2f} s on the empty state's {empty.median('ready'):.2f} s);"
        f" the daemon serving after {fin.median('serving'):.2f} s ({empty.median('serving'):.2f} s empty);"
        f" RSS {mb(fin.median('rss'))} = empty + {mb(extra)}"
    )
    goals.append((f"start-up with {big:,} finished runs", f"{ready:.2f} s", "<= 0.5 s", ready <= 0.5))
    goals.append((f"RSS with {big:,} finished runs - empty", mb(extra), "<= 20 MB", extra <= 20 * 2**20))
    print(f"   a daemon at rest (no provider, empty state): {100 * rest:.2f} % of a core over 5 s")


SECTIONS = ("sources", "core", "states")


async def run(args: argparse.Namespace) -> int:
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    problems = Problems()
    goals: Goals = []
    sections = set(args.only.split(","))
    if sections - set(SECTIONS):
        raise SystemExit(f"--only takes {', '.join(SECTIONS)}")
    shapes = [(20, 5), (200, 1)] if args.quick else [(200, 5), (2000, 1)]
    if args.shapes:
        shapes = [(int(m), int(r)) for m, r in (x.split("x") for x in args.shapes.split(","))]
    providers = args.providers.split(",")
    print(
        f"runwatch sources benchmark: python {sys.version.split()[0]}, {os.cpu_count()} cores,"
        f" fakes in processes of their own, concurrency {CONCURRENCY}, request budget lifted,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-sources-") as tmp:
        workdir = Path(tmp)
        if "sources" in sections:
            cpu_rows: list[CpuRow] = []
            hour_rows: list[HourRow] = []
            for provider in providers:
                for monitors, runs in shapes:
                    cpu_row, hour_row = await measure_active(
                        Spec(provider, monitors, 0, runs), workdir, args, problems
                    )
                    cpu_rows.append(cpu_row)
                    hour_rows.append(hour_row)
                    idle = Spec(provider, 0, monitors, runs)
                    hour_rows.append(await measure_idle(idle, workdir, args.cycles, problems))
            report_cpu(cpu_rows, goals)
            report_hours(hour_rows, goals)
        if "core" in sections:
            n = args.core_monitors
            active = max(1, n // 50)
            core_rows = [
                await measure_core(Spec(p, active, n - active, 1), workdir, args.cycles, problems)
                for p in providers
            ]
            report_core(core_rows, goals)
        if "states" in sections:
            sizes = (5_000, 20_000) if args.quick else (10_000, 100_000)
            state_rows, rest = measure_states(workdir, sizes, args.repeats, args.settle, problems)
            report_states(state_rows, rest, args.settle, goals)
    return finish(goals, problems, began)


def finish(goals: Goals, problems: Problems, began: float) -> int:
    """The goals met or missed, the time taken, and the counts that were wrong (exit 1 if any)."""
    print("\nGoals")
    for what, value, goal, ok in goals:
        print(f"   {what:52} {value:>10}   goal {goal:10} {met(ok)}")
    print(f"\n({time.perf_counter() - began:.0f} s; load average now {os.getloadavg()[0]:.2f})")
    if problems.items:
        print("\nWRONG COUNTS (these figures cannot be trusted):")
        for p in problems.items:
            print(f"   {p}")
        return 1
    return 0


def main(argv: Iterable[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20x5 and 200x1, 1,000 monitors, 5,000/20,000 runs")
    p.add_argument(
        "--cycles",
        type=int,
        default=int(IDLE_INTERVAL // INTERVAL),
        help="simulated cycles counted for figures 2 and 5 (default: one idle interval, 5)",
    )
    p.add_argument("--pairs", type=int, default=2, help="figure 1: at least this many pairs of cycles")
    p.add_argument(
        "--min-requests",
        type=int,
        default=None,
        help="figure 1: ... and this many requests a side (default 2000)",
    )
    p.add_argument("--core-monitors", type=int, default=None, help="figure 5: monitors (default 10,000)")
    p.add_argument("--repeats", type=int, default=None, help="figures 3-4: starts per state (default 3)")
    p.add_argument(
        "--settle", type=float, default=1.0, help="figures 3-4: seconds after /healthz to read RSS"
    )
    p.add_argument("--providers", default=",".join(PROVIDERS), help="figures 1, 2 and 5: exa,olostep")
    p.add_argument("--shapes", help="figures 1-2: MONITORSxRUNS,... (default 200x5,2000x1)")
    p.add_argument("--only", default=",".join(SECTIONS), help="any of sources,core,states (default: all)")
    p.add_argument(
        "--profile", action="store_true", help="figure 1 under cProfile: where runwatch's extra CPU goes"
    )
    p.add_argument("--serve-fake", help=argparse.SUPPRESS)
    p.add_argument("--build-state", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.serve_fake:
        serve_fake(Spec(**json.loads(args.serve_fake)))
        return
    if args.build_state:
        build_state(Path(args.build_state[0]), int(args.build_state[1]), args.build_state[2] == "1")
        return
    if args.core_monitors is None:
        args.core_monitors = 1_000 if args.quick else 10_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.min_requests is None:
        args.min_requests = 300 if args.quick else 2000
    sys.exit(anyio.run(run, args))


if __name__ == "__main__":
    main()
