"""Poll what can change: which monitors each cycle asks about, for both providers, cycle by cycle.

Each provider's real source polls its fake on loopback; a ManualClock moves the story and the cycles
(poll_interval 10 s, idle_poll_interval 60 s of scenario time), and the fake's request log says which
monitors each cycle cost a request. Plus ``next_cron`` across daylight-saving changes.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runwatch.fakes import Scenario
from runwatch.sources.schedule import next_cron
from tests.sources.harness import exa_run, harness, olostep_run

pytestmark = pytest.mark.anyio
PROVIDERS = ["exa", "olostep"]

IDLE, SCHED, HAND = "monitor_idle", "monitor_sched", "monitor_hand"
ALL = {IDLE, SCHED, HAND}


def story(**hand: Any) -> Scenario:
    """One idle monitor, one with a run scheduled at 95 s (running by 100 s, done at 120 s), and one
    whose run at 130 s was started by hand (no ``nextRunAt`` announces it)."""
    return Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {"id": IDLE, "runs": [exa_run("mrun_old", (-7200, "created"), (-3600, "completed"))]},
                    {
                        "id": SCHED,
                        "runs": [
                            exa_run("mrun_sched", (95, "created"), (100, "running"), (120, "completed"))
                        ],
                    },
                    {
                        "id": HAND,
                        "runs": [exa_run("mrun_hand", (130, "created"), (140, "completed"), manual=True)],
                    },
                ]
            },
            "olostep": {
                "monitors": [
                    {"id": IDLE, "runs": [olostep_run("run_old", -7200, -3600)]},
                    {"id": SCHED, "runs": [olostep_run("run_sched", 95, 120)]},
                    {"id": HAND, "runs": [olostep_run("run_hand", 130, 140, manual=True)]},
                ]
            },
        }
    )


def first_seen(cycles: list[Any]) -> dict[str, float]:
    seen: dict[str, float] = {}
    for c in cycles:
        for run_id in c.run_ids():
            seen.setdefault(run_id, c.at)
    return seen


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_idle_monitors_at_the_idle_pace_scheduled_ones_at_their_due_time(
    provider: str, tmp_path: Path
) -> None:
    async with harness(provider, story(), tmp_path) as h:
        cycles = await h.cycles_until(250, 10)
    asked = {c.at: c.asked() for c in cycles}
    # Idle monitors every 60 s, each at its phase (the first listing spreads them over the interval:
    # idle 15 s, sched 35 s, hand 55 s, each polled in the cycle nearest); the scheduled one from its
    # due time (95 s: the first cycle after it is 100 s) until its run is seen and finished (120 s),
    # then idle again at its phase. The monitor list every 60 s.
    expected: dict[float, set[str]] = {at: set() for at in asked}
    expected.update({0: ALL, 100: {SCHED}, 110: {SCHED, HAND}, 120: {SCHED}})
    for start, mid in ((10, IDLE), (30, SCHED), (50, HAND)):
        for at in range(start, 251, 60):
            expected[at] = expected[at] | {mid}
    assert asked == expected
    listings = [c.at for c in cycles if c.routes["list_monitors"]]
    assert listings == [0, 60, 120, 180, 240]
    assert all(c.routes["list_monitors"] <= 1 for c in cycles)
    sched, hand = ("mrun_sched", "mrun_hand") if provider == "exa" else ("run_sched", "run_hand")
    seen = first_seen(cycles)
    assert seen[sched] == 100  # the first cycle after its due time
    assert seen[hand] == 170  # started by hand at 130 s: seen within idle_poll_interval (its phase)
    statuses = [
        (ch.run_id, ch.to_status) for c in cycles for ch in c.changes if ch.kind.value == "run.status"
    ]
    assert statuses.count((sched, "completed")) == 1
    assert statuses.count((hand, "completed")) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_run_that_shows_after_the_next_one_is_announced_is_still_seen_next_cycle(
    provider: str, tmp_path: Path
) -> None:
    """Due at 95 s, but the provider creates the run only at 125 s; the listing at 120 s already
    announces no next run. The monitor stays hot until the run it was due for shows."""
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {
                        "id": SCHED,
                        "runs": [exa_run("mrun_late", (125, "created"), (150, "completed"), scheduled_at=95)],
                    }
                ]
            },
            "olostep": {
                "monitors": [{"id": SCHED, "runs": [olostep_run("run_late", 125, 150, scheduled_at=95)]}]
            },
        }
    )
    async with harness(provider, scenario, tmp_path) as h:
        cycles = await h.cycles_until(200, 10)
    assert first_seen(cycles)["mrun_late" if provider == "exa" else "run_late"] == 130
    polled = [c.at for c in cycles if c.asked()]
    # First sight, its phase (35 s: the middle of the interval), its phase again (95 s), then hot.
    assert polled == [0, 30, 90, 100, 110, 120, 130, 140, 150]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_idle_monitor_costs_at_most_a_fifth_of_polling_it_every_cycle(
    provider: str, tmp_path: Path
) -> None:
    """The default intervals (poll 60 s, idle 5 m) against the same source polling every cycle
    (idle_poll_interval = poll_interval): requests per monitor per hour, the list included, measured
    over half an hour after a first cycle that reads what each monitor already had."""
    monitors = [f"monitor_{i}" for i in range(3)]
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {"id": m, "runs": [exa_run(f"mrun_{m}", (-7200, "created"), (-3600, "failed"))]}
                    for m in monitors
                ]
            },
            "olostep": {
                "monitors": [{"id": m, "runs": [olostep_run(f"run_{m}", -7200, -3600)]} for m in monitors]
            },
        }
    )
    per_hour: dict[float, float] = {}
    for idle in (300.0, 60.0):
        async with harness(
            provider, scenario, tmp_path / str(idle), poll_interval=60, idle_poll_interval=idle
        ) as h:
            cycles = await h.cycles_until(1800, 60)
            half_hour = cycles[1:]  # 30 cycles
            per_hour[idle] = 2 * sum(sum(c.routes.values()) for c in half_hour) / len(monitors)
    assert per_hour[300.0] <= per_hour[60.0] / 5, per_hour


def finished_monitors(ids: list[str], running: tuple[str, ...] = ()) -> Scenario:
    """A finished run on each monitor of ``ids``; a run that goes on for hours on each of ``running``."""
    return Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {"id": m, "runs": [exa_run(f"mrun_{m}", (-7200, "created"), (-3600, "completed"))]}
                    for m in ids
                ]
                + [
                    {"id": m, "runs": [exa_run(f"mrun_{m}", (-100, "created"), (-90, "running"))]}
                    for m in running
                ]
            },
            "olostep": {
                "monitors": [{"id": m, "runs": [olostep_run(f"run_{m}", -7200, -3600)]} for m in ids]
                + [{"id": m, "runs": [olostep_run(f"run_{m}", -100)]} for m in running]
            },
        }
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_idle_polls_are_spread_across_the_idle_interval(provider: str, tmp_path: Path) -> None:
    """100 idle monitors, poll 10 s, idle 60 s: the first cycle asks about every monitor (first sight);
    after it each cycle asks about a sixth of them, never a burst, and each monitor is asked about
    exactly once in every idle interval."""
    monitors = [f"monitor_{i:03d}" for i in range(100)]
    async with harness(provider, finished_monitors(monitors), tmp_path) as h:
        cycles = await h.cycles_until(180, 10)
    assert cycles[0].asked() == set(monitors)
    per_cycle = [len(c.asked()) for c in cycles[1:]]
    assert all(16 <= n <= 17 for n in per_cycle), per_cycle  # 100 / 6 each cycle
    for k in range(3):  # cycles 1-6, 7-12, 13-18: one idle interval each
        window = cycles[1 + 6 * k : 7 + 6 * k]
        asked = Counter(m for c in window for m in c.asked())
        assert asked == Counter(monitors), k
    # The requests follow: per cycle, a sixth of what the first round of the monitors cost.
    first_round = sum(sum(c.routes.values()) - c.routes["list_monitors"] for c in cycles[1:7])
    assert max(sum(c.routes.values()) - c.routes["list_monitors"] for c in cycles[1:]) <= first_round / 6 + 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_small_request_budget_defers_idle_polls_never_the_active_ones(
    provider: str, tmp_path: Path
) -> None:
    """A budget of 1 request/s (10 a cycle) for 30 idle monitors and 2 with a run going on, 2 workers:
    a cycle starts idle polls only while it has sent under 80 % of its budget, the rest wait for a
    later cycle (the longest waiting first); once the active ones are known they are polled in every
    cycle, first. The budget's waits are not waited here (an injected sleep)."""

    async def no_wait(seconds: float) -> None:
        return None

    idle = [f"monitor_i{i:02d}" for i in range(30)]
    active = ("monitor_zactive1", "monitor_zactive2")
    per_poll = 1 if provider == "exa" else 2  # Exa: the run list; Olostep: the monitor and its events
    async with harness(
        provider,
        finished_monitors(idle, active),
        tmp_path,
        max_requests_per_second=1,
        concurrency=2,
        client={"sleep": no_wait},
    ) as h:
        cycles = await h.cycles_until(300, 10)
    assert cycles[0].report.deferred > 0
    for c in cycles:
        # Idle polls start while under 8 requests (80 % of 10), plus the one each worker had begun.
        idle_polls = len(c.asked() - set(active))
        assert idle_polls * per_poll <= 8 + 2 * per_poll, (c.at, idle_polls)
    first = next(k for k, c in enumerate(cycles) if set(active) <= c.asked())
    assert first <= 12  # the first round of 32 monitors takes several cycles (each new run fetched)
    assert all(set(active) <= c.asked() for c in cycles[first:])
    everyone = set().union(*(c.asked() for c in cycles[: first + 1]))
    assert everyone == set(idle) | set(active)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def utc(t: float | None) -> str:
    assert t is not None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_pushed_monitors_lead_the_idle_ones_and_a_push_cycle_reads_only_them(
    provider: str, tmp_path: Path
) -> None:
    async with harness(provider, story(), tmp_path) as h:
        assert (await h.cycle()).asked() == ALL  # the first: every monitor, and the list
        h.clock.advance(10)
        assert HAND not in (await h.cycle()).asked()  # idle, not due for a while
        # A regular cycle reads a pushed monitor though it is not due (after any hot one).
        assert (await h.cycle(read_now=[HAND])).asked() == {HAND}
        # A cycle of pushed monitors alone: no list, no other monitor, not even one that is due.
        h.clock.advance(60)
        pushed = await h.cycle(read_now=[HAND], only=True)
        assert pushed.asked() == {HAND} and pushed.routes["list_monitors"] == 0
        # ... but one naming a monitor the list has not shown reads the list first (every monitor of
        # the account is watched), and then only what the list holds.
        unknown = await h.cycle(read_now=[HAND, "monitor_new"], only=True)
        assert unknown.routes["list_monitors"] == 1 and unknown.asked() == {HAND}


def test_plan_puts_pushed_monitors_after_the_hot_ones_and_before_the_idle_ones() -> None:
    from runwatch.sources.schedule import Schedule

    sched = Schedule(poll_interval=60, idle_interval=300)
    sched.listed(0.0, {m: None for m in ("hot", "idle_due", "pushed_b", "pushed_a", "quiet")})
    for m in ("hot", "pushed_b", "pushed_a", "quiet"):
        sched.polled(m, 0.0)  # polled just now: not idle-due for a while
    hot, idle = sched.plan(["hot", "idle_due", "pushed_b", "pushed_a", "quiet"], 60.0, lambda m: m == "hot",
                           urgent=["pushed_a", "pushed_b", "hot"])  # fmt: skip
    assert hot == ["hot"]
    assert idle == ["pushed_a", "pushed_b", "idle_due"]  # oldest push first, then the idle ones due


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        # Europe/Berlin, spring 2026 (29 March, 02:00 CET -> 03:00 CEST): 02:00 does not exist that
        # day; cron fires at the jump.
        ("0 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00+00:00", "2026-03-28T01:00"),
        ("0 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+00:00", "2026-03-29T01:00"),
        ("0 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00+00:00", "2026-03-30T00:00"),
        ("30 1 * * *", "Europe/Berlin", "2026-03-28T12:00:00+00:00", "2026-03-29T00:30"),
        # Autumn 2026 (25 October, 03:00 CEST -> 02:00 CET): 02:00 happens twice and fires once.
        ("0 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+00:00", "2026-10-25T00:00"),
        ("0 2 * * *", "Europe/Berlin", "2026-10-25T00:00:00+00:00", "2026-10-26T01:00"),
        ("0 2 * * *", "Europe/Berlin", "2026-10-25T00:30:00+00:00", "2026-10-26T01:00"),
        # ...while an hourly expression fires in both passes through the repeated hour.
        ("30 * * * *", "Europe/Berlin", "2026-10-25T00:40:00+00:00", "2026-10-25T01:30"),
        # Other zones: New York's spring change, Lord Howe's half-hour one, a zone without DST.
        ("0 2 * * *", "America/New_York", "2026-03-08T00:00:00+00:00", "2026-03-08T07:00"),
        ("0 2 * * *", "America/New_York", "2026-03-09T00:00:00+00:00", "2026-03-09T06:00"),
        ("0 9 * * 1", "Australia/Lord_Howe", "2026-04-01T00:00:00+00:00", "2026-04-05T22:30"),
        ("0 9 * * *", "Asia/Kolkata", "2026-03-29T00:00:00+00:00", "2026-03-29T03:30"),
        ("0 9 * * *", None, "2026-03-29T10:00:00+00:00", "2026-03-30T09:00"),
        ("0 9 * * *", "Etc/UTC", "2026-03-29T08:59:00+00:00", "2026-03-29T09:00"),
    ],
)
def test_next_cron_in_its_time_zone(expr: str, tz: str | None, after: str, expected: str) -> None:
    assert utc(next_cron(expr, tz, ts(after))) == expected


@pytest.mark.parametrize(
    ("expr", "tz"), [("0 2 * * *", "Mars/Olympus"), ("not cron", "UTC"), ("61 * * * *", None)]
)
def test_next_cron_unreadable_is_none(expr: str, tz: str | None) -> None:
    assert next_cron(expr, tz, ts("2026-03-29T00:00:00+00:00")) is None
