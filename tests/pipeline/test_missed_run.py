"""``monitor.missed_run``: a scheduled run that does not appear within a rule's ``grace`` of its due time
is one notification per (monitor, due time), at due + grace and not before; a run that comes late
resolves it; due times follow the monitor's own schedule (``nextRunAt``, else its cron in its time
zone, across DST changes); a restart does not report it again. A real daemon against the fake
servers; the test drives poll cycles and the daemon's tick on a ManualClock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import RunningFake, Scenario, fake_server
from runwatch.model import rfc3339
from runwatch.service.app import Daemon
from tests.pipeline.monitor_harness import config as harness_config
from tests.pipeline.monitor_harness import daemon_for, queued

pytestmark = pytest.mark.anyio

T0 = 1_780_000_000.0

RULES = """
rules:
  - name: missed
    match: {kind: monitor.missed_run}
    grace: 2m
    notify: [ch]
    send_resolved: true
    title: "{{ monitor_id }} missed the run due {{ due_at }}"
  - name: missed-long
    match: {kind: monitor.missed_run}
    grace: 5m
    notify: [other]
  - name: everything
    match: {}
    notify: [other]
"""


def missed(daemon: Daemon) -> list[tuple[str, str, str, str]]:
    """(rule, monitor, firing/resolved, type) of every notification about a missed run."""
    return [(a.rule, a.monitor_id, a.status, a.type) for a in queued(daemon) if a.rule.startswith("missed")]


async def step_to(daemon: Daemon, clock: ManualClock, t0: float, until: float, provider: str) -> None:
    """Poll and tick every 10 s of scenario time up to ``until`` (inclusive), as the daemon's loops do."""
    while clock.now() - t0 + 10 <= until + 1e-6:
        clock.advance(10)
        await daemon.poll_once(provider)
        daemon.lifecycle_tick()


SCHEDULED = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                # Due at 300 s; no run ever comes.
                {"id": "monitor_never", "metadata": {"team": "data"}, "skipped_runs": [300]},
                # Due at 300 s; its run shows up at 500 s, late.
                {
                    "id": "monitor_late",
                    "runs": [
                        {
                            "id": "mrun_late",
                            "scheduled_at": 300,
                            "timeline": [
                                {"at": 500, "status": "running"},
                                {"at": 520, "status": "completed"},
                            ],
                        }
                    ],
                },
                # Due at 300 s; its run comes on time.
                {
                    "id": "monitor_ok",
                    "runs": [{"id": "mrun_ok", "timeline": [{"at": 302, "status": "running"}]}],
                },
            ]
        }
    }
)


async def test_a_run_that_never_comes_is_reported_at_due_plus_grace_once_and_a_late_one_resolves(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    async with fake_server("exa", SCHEDULED, clock) as exa:
        cfg = config(tmp_path, "exa", exa)
        async with daemon_for(cfg, clock) as daemon:
            t0 = exa.fake.t0
            assert await daemon.poll_once("exa")
            daemon.lifecycle_tick()
            rec = daemon.store.monitors.get("exa", "monitor_never")
            assert rec is not None and rec.due == t0 + 300  # nextRunAt, from the first listing
            await step_to(daemon, clock, t0, 410, "exa")
            assert missed(daemon) == []  # due at 300, grace 2m: not before 420
            await step_to(daemon, clock, t0, 420, "exa")
            assert sorted(missed(daemon)) == [
                ("missed", "monitor_late", "firing", "monitor.missed_run"),
                ("missed", "monitor_never", "firing", "monitor.missed_run"),
            ]
            note = next(a for a in queued(daemon) if a.monitor_id == "monitor_never")
            assert note.title == f"monitor_never missed the run due {rfc3339(t0 + 300)}"
            assert (note.run_id, note.occurred_at, note.channel) == ("", pytest.approx(t0 + 300), "ch")
        # A restart (kill -9 alike: the state is all there is) neither repeats nor loses anything.
        async with daemon_for(cfg, clock) as daemon:
            await step_to(daemon, clock, t0, 590, "exa")
            # The late run came (seen at the next poll of its monitor): its alert resolves, once.
            assert sorted(missed(daemon)[2:]) == [("missed", "monitor_late", "resolved", "run.status")]
            await step_to(daemon, clock, t0, 620, "exa")
            # The 5m rule: only the monitor still missing its run; the 2m rule's alert is still open.
            assert missed(daemon)[3:] == [("missed-long", "monitor_never", "firing", "monitor.missed_run")]
            alerts = queued(daemon)
            assert not any(a.type == "monitor.missed_run" and a.monitor_id == "monitor_ok" for a in alerts)
            assert not any(a.rule == "everything" and a.type.startswith("monitor.") for a in alerts)
            await step_to(daemon, clock, t0, 900, "exa")
            assert len(queued(daemon)) == len(alerts)
            assert daemon.store.alerts.firing() == 1  # monitor_never's alert stays open


def berlin(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


async def test_a_cron_in_a_dst_zone_is_due_at_the_right_instant_in_spring(tmp_path: Path) -> None:
    """Europe/Berlin 09:00 daily, on 2027-03-28 (clocks go 02:00 CET -> 03:00 CEST): 07:00 UTC, not
    08:00 UTC as the day before; no nextRunAt, so runwatch computes it from the cadence."""
    start = berlin(2027, 3, 28, 0, 0)
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {
                        "id": "monitor_berlin",
                        "cron": "0 9 * * *",
                        "timezone": "Europe/Berlin",
                        "announce_next_run": False,
                    }
                ]
            }
        }
    )
    clock = ManualClock(start)
    async with fake_server("exa", scenario, clock) as exa:
        cfg = config(tmp_path, "exa", exa)
        async with daemon_for(cfg, clock) as daemon:
            assert await daemon.poll_once("exa")
            rec = daemon.store.monitors.get("exa", "monitor_berlin")
            assert rec is not None and rec.due == berlin(2027, 3, 28, 7, 0)
            clock.advance(berlin(2027, 3, 28, 6, 59) - clock.now())
            await daemon.poll_once("exa")
            daemon.lifecycle_tick()
            for _ in range(17):  # to 07:01:50: polled every 10 s, not yet late by the grace
                clock.advance(10)
                await daemon.poll_once("exa")
                daemon.lifecycle_tick()
            assert missed(daemon) == []
            clock.advance(10)  # 07:02:00
            await daemon.poll_once("exa")
            daemon.lifecycle_tick()
            [note] = [a for a in queued(daemon) if a.rule == "missed"]
            assert "due 2027-03-28T07:00:00.000Z" in note.title
            rec = daemon.store.monitors.get("exa", "monitor_berlin")
            # Still watched for the 5m rule; the next one (again 07:00 UTC, CEST) is known.
            assert rec is not None and (rec.due, rec.next_due) == (
                berlin(2027, 3, 28, 7, 0),
                berlin(2027, 3, 29, 7, 0),
            )


async def test_a_cron_in_the_hour_autumn_repeats_is_due_once(tmp_path: Path) -> None:
    """Europe/Berlin 02:30 daily on 2027-10-31 (02:00-03:00 happens twice): due once, at the first
    02:30 (00:30 UTC), so one missed run, not a second one an hour later. An Olostep monitor whose
    ``schedule`` gives no ``next_run_at``."""
    start = berlin(2027, 10, 31, 0, 0)
    scenario = Scenario.model_validate(
        {
            "olostep": {
                "monitors": [
                    {
                        "id": "monitor_autumn",
                        "cron": "30 2 * * *",
                        "timezone": "Europe/Berlin",
                        "announce_next_run": False,
                    }
                ]
            }
        }
    )
    clock = ManualClock(start)
    async with fake_server("olostep", scenario, clock) as olostep:
        cfg = config(tmp_path, "olostep", olostep)
        async with daemon_for(cfg, clock) as daemon:
            assert await daemon.poll_once("olostep")
            rec = daemon.store.monitors.get("olostep", "monitor_autumn")
            assert rec is not None and rec.due == berlin(2027, 10, 31, 0, 30)
            clock.advance(berlin(2027, 10, 31, 0, 31) - clock.now())
            await daemon.poll_once("olostep")
            daemon.lifecycle_tick()
            assert missed(daemon) == []
            clock.advance(60)  # 00:32 UTC
            await daemon.poll_once("olostep")
            daemon.lifecycle_tick()
            assert missed(daemon) == [("missed", "monitor_autumn", "firing", "monitor.missed_run")]
            for minutes in (58, 1, 1, 10):  # to 01:32 UTC and beyond: the repeated 02:30 is no due
                clock.advance(minutes * 60)
                await daemon.poll_once("olostep")
                daemon.lifecycle_tick()
            assert [a.rule for a in queued(daemon)] == ["missed", "missed-long"]
            rec = daemon.store.monitors.get("olostep", "monitor_autumn")
            assert rec is not None and rec.due == berlin(2027, 11, 1, 1, 30)  # 02:30 CET next day


async def test_a_disabled_monitor_owes_no_run(tmp_path: Path) -> None:
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {
                        "id": "monitor_off",
                        "status_changes": [{"at": 50, "status": "disabled"}],
                        "skipped_runs": [300],
                    },
                    {"id": "monitor_on", "skipped_runs": [300]},
                ]
            }
        }
    )
    clock = ManualClock(T0)
    async with fake_server("exa", scenario, clock) as exa:
        cfg = config(tmp_path, "exa", exa)
        async with daemon_for(cfg, clock) as daemon:
            assert await daemon.poll_once("exa")
            await step_to(daemon, clock, exa.fake.t0, 700, "exa")
            assert sorted(missed(daemon)) == [
                ("missed", "monitor_on", "firing", "monitor.missed_run"),
                ("missed-long", "monitor_on", "firing", "monitor.missed_run"),
            ]


def config(tmp_path: Path, provider: str, fake: RunningFake[Any]) -> Path:
    return harness_config(tmp_path, provider, fake, RULES, ["ch", "other"])
