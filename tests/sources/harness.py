"""One provider source against its fake on loopback, a real state, and a ManualClock: cycle by cycle.

What the daemon does in ``poll_once``, minus rules and delivery: each batch a source yields is diffed
against the state (``runwatch.pipeline.detect.diff``, the Detect stage's own function) and recorded, so a test
sees exactly which changes a cycle would report, and which requests it cost (the fake's request log).
Nothing is mocked: the source speaks HTTP to the fake, the state is SQLite in ``tmp_path``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runwatch.clock import ManualClock
from runwatch.fakes import RunningFake, Scenario, fake_server
from runwatch.metrics import Metrics
from runwatch.model import Change
from runwatch.pipeline.detect import diff
from runwatch.sources.base import MonitorBatch, PollReport, Source
from runwatch.sources.registry import PROVIDERS
from runwatch.store import CatchUp, State

KEYS = {"exa": "exa-harness-key-3f9a1c77e2", "olostep": "olostep-harness-key-8b2d4e61c0"}
#: Route names per provider, in the order a table of request counts lists them.
ROUTES = {
    "exa": ("list_monitors", "get_monitor", "list_runs", "get_run"),
    "olostep": ("list_monitors", "get_monitor", "list_events", "get_run"),
}


@dataclass
class Cycle:
    """What one poll cycle read, reported and cost."""

    at: float
    report: PollReport
    batches: list[MonitorBatch]
    changes: list[Change]
    #: Requests by route name, and by path, during this cycle.
    routes: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)

    def asked(self) -> set[str]:
        """The monitors this cycle sent a request about (the list endpoint aside)."""
        return {p.split("/")[3] for p in self.paths if p.count("/") >= 3}

    def table(self, provider: str) -> tuple[int, ...]:
        """Requests per route, in ``ROUTES[provider]`` order."""
        return tuple(self.routes[r] for r in ROUTES[provider])

    def run_ids(self) -> list[str]:
        return [s.run_id for b in self.batches for s in b.snapshots]


@dataclass
class Harness:
    """A source, its fake, a state and the clock they share."""

    provider: str
    running: RunningFake[Any]
    clock: ManualClock
    state: State
    metrics: Metrics
    source: Source
    #: Builds the source anew, as a restarted daemon does.
    build: Callable[[], Source]
    not_before: float | None = None
    cycles: list[Cycle] = field(default_factory=list)

    @property
    def t0(self) -> float:
        t0: float = self.running.fake.t0
        return t0

    async def cycle(self, **poll: Any) -> Cycle:
        """One poll cycle at the clock's time: every batch diffed and recorded, as the daemon does;
        ``poll`` goes to the source's ``poll`` (``read_now``, ``only``: what a push asks for)."""
        log = self.running.fake.requests
        routes, paths = Counter(log.by_route), Counter({p: n for (_, p), n in log.by_path.items()})
        now = self.clock.now()
        batches: list[MonitorBatch] = []
        changes: list[Change] = []
        async with self.source.poll(self.state.runs, now=now, not_before=self.not_before, **poll) as (
            stream,
            report,
        ):
            async for batch in stream:
                batches.append(batch)
                for snap in batch.snapshots:
                    changes.extend(diff(self.state.runs.run(self.provider, snap.run_id), snap, now))
                self.state.record(
                    self.provider,
                    batch.snapshots,
                    [],
                    now,
                    monitor_id=batch.monitor_id,
                    retired=batch.retired,
                    catch_up=None if batch.backlog is None else CatchUp(batch.backlog),
                )
        cycle = Cycle(now - self.t0, report, batches, changes)
        cycle.routes = Counter(log.by_route) - routes
        cycle.paths = Counter({p: n for (_, p), n in log.by_path.items()}) - paths
        self.cycles.append(cycle)
        return cycle

    async def restart(self) -> None:
        """What a daemon restart keeps: the state file (reopened, its memory rebuilt from it), not the
        source's memory (built anew)."""
        await self.source.aclose()
        self.state.close()
        self.state = State(self.state.path.parent)
        self.source = self.build()

    async def cycles_until(self, end: float, step: float) -> list[Cycle]:
        """A cycle now and every ``step`` seconds of scenario time up to ``end`` (inclusive)."""
        out = []
        while True:
            out.append(await self.cycle())
            if self.clock.now() - self.t0 + step > end + 1e-6:
                return out
            self.clock.advance(step)

    def errors(self, reason: str) -> float:
        """``runwatch_poll_errors_total{provider, reason}`` so far."""
        value = self.metrics.registry.get_sample_value(
            "runwatch_poll_errors_total", {"provider": self.provider, "reason": reason}
        )
        return value or 0.0


@asynccontextmanager
async def harness(
    provider: str,
    scenario: Scenario,
    state_dir: Path,
    *,
    clock: ManualClock | None = None,
    client: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """Serve ``scenario`` and build the registry's source for ``provider`` against it.

    Defaults: ``poll_interval`` 10 s and ``idle_poll_interval`` 60 s of scenario time, a request budget
    high enough never to wait (tests count requests, not seconds), fast retries.
    """
    clock = clock or ManualClock()
    spec = PROVIDERS[provider]
    async with fake_server(provider, scenario, clock) as running:
        options: dict[str, Any] = {
            "base_url": running.base_url,
            "api_key": KEYS[provider],
            "poll_interval": 10,
            "idle_poll_interval": 60,
            "max_requests_per_second": 100_000,
            "retries": 1,
        }
        options.update(settings)
        metrics = Metrics()

        def build() -> Source:
            return spec.source(
                spec.settings(**options), metrics, backoff_initial=0.01, backoff_max=0.05, **(client or {})
            )

        h = Harness(provider, running, clock, State(state_dir), metrics, build(), build)
        try:
            yield h
        finally:
            await h.source.aclose()
            h.state.close()


def exa_run(run_id: str, *steps: tuple[float, str], **extra: Any) -> dict[str, Any]:
    """A scenario run: ``exa_run("mrun_1", (0, "created"), (5, "completed"))``."""
    timeline = [{"at": at, "status": status} for at, status in steps]
    return {"id": run_id, "timeline": timeline, **extra}


def olostep_run(run_id: str, start: float, end: float | None = None, **extra: Any) -> dict[str, Any]:
    """A scenario run that starts at ``start`` and, if ``end`` is given, completes then."""
    events: list[dict[str, Any]] = [{"at": start, "type": "work_received"}]
    if end is not None:
        events.append({"at": end, "type": "run_complete"})
    return {"id": run_id, "events": events, **extra}
