"""``monitor.status``: a monitor paused, disabled, failed or removed is one notification per transition,
read from the listing the source already fetches; the first listing is silent; a restart does not
re-fire; every change carries the monitor object (``{{ monitor.metadata.team }}``). A real daemon
against the fake servers, driven cycle by cycle on a ManualClock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import Fault, RunningFake, Scenario, fake_server
from tests.pipeline.monitor_harness import config as harness_config
from tests.pipeline.monitor_harness import daemon_for, queued

pytestmark = pytest.mark.anyio

T0 = 1_780_000_000.0

RULES = """
rules:
  - name: monitor-state
    match: {kind: monitor.status}
    notify: [ch]
    title: >-
      {{ monitor_id }} {{ from or 'new' }} -> {{ to }}
      {% if monitor.metadata is defined %}team={{ monitor.metadata.team }}
      {%- else %}q={{ monitor.query }}{% endif %}
    body: "{{ failed_reason }}"
  - name: run-seen
    match: {kind: run.status}
    notify: [runs]
    title: "{{ monitor_id }} run {{ run_id }} team={{ monitor.metadata.team }}"
  - name: everything
    match: {}
    notify: [other]
"""


EXA = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {
                    "id": "monitor_news",
                    "metadata": {"team": "data"},
                    "status_changes": [{"at": 100, "status": "disabled"}, {"at": 400, "status": "enabled"}],
                    "runs": [{"id": "mrun_1", "timeline": [{"at": 30, "status": "running"}]}],
                },
                {"id": "monitor_old", "metadata": {"team": "web"}, "removed_at": 200},
            ]
        }
    }
)


async def test_exa_monitor_disabled_and_removed_once_each_silent_first_and_not_again_after_restart(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    async with fake_server("exa", EXA, clock) as exa:
        cfg = config(tmp_path, "exa", exa)
        async with daemon_for(cfg, clock) as daemon:
            assert await daemon.poll_once("exa")
            assert queued(daemon) == []  # the first listing is a silent baseline
            clock.advance(40)
            assert await daemon.poll_once("exa")  # a run of monitor_news: its template sees the monitor
            [run] = queued(daemon)[:1]
            assert (run.rule, run.title) == ("run-seen", "monitor_news run mrun_1 team=data")
            clock.advance(80)  # t=120: the next listing shows monitor_news disabled
            assert await daemon.poll_once("exa")
            status = [a for a in queued(daemon) if a.type == "monitor.status"]
            assert [(a.rule, a.channel, a.title) for a in status] == [
                ("monitor-state", "ch", "monitor_news enabled -> disabled team=data")
            ]
            first = status[0]
            assert (first.run_id, first.from_status, first.to_status) == ("", "enabled", "disabled")
            clock.advance(70)
            assert await daemon.poll_once("exa")  # listed again, still disabled: nothing new
            assert len([a for a in queued(daemon) if a.type == "monitor.status"]) == 1
            clock.advance(60)  # t=250: monitor_old is gone from the listing
            assert await daemon.poll_once("exa")
            status = [a.title for a in queued(daemon) if a.type == "monitor.status"]
            assert status[1:] == ["monitor_old enabled -> deleted team=web"]
            # A rule without kind keeps its meaning: runs only, not monitors.
            assert {a.type for a in queued(daemon) if a.rule == "everything"} == {"run.status"}
        async with daemon_for(cfg, clock) as again:  # a restart re-lists: nothing fires twice
            before = len(queued(again))
            assert await again.poll_once("exa")
            clock.advance(61)
            assert await again.poll_once("exa")
            assert len(queued(again)) == before
            clock.advance(120)  # t=431: enabled again, after the restart
            assert await again.poll_once("exa")
            assert [a.title for a in queued(again)][before:] == ["monitor_news disabled -> enabled team=data"]


OLOSTEP = Scenario.model_validate(
    {
        "olostep": {
            "monitors": [
                {
                    "id": "monitor_prices",
                    "query": "price of the thing",
                    "status_changes": [
                        {"at": 100, "status": "failed", "error_message": "target site blocks us"},
                        {"at": 300, "status": "deleted"},
                    ],
                },
                {"id": "monitor_gone", "query": "gone soon", "removed_at": 100},
            ]
        }
    }
)


async def test_olostep_failed_with_its_error_and_a_vanished_monitor_only_once_a_get_confirms(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    async with fake_server("olostep", OLOSTEP, clock) as olostep:
        cfg = config(tmp_path, "olostep", olostep)
        async with daemon_for(cfg, clock) as daemon:
            assert await daemon.poll_once("olostep")
            assert queued(daemon) == []
            # monitor_gone vanishes, but its GET fails: unknown this cycle, nothing reported.
            refuse = Fault(kind="status", status=503, path="/v1/monitors/monitor_gone")
            fault = olostep.fake.faults.add(refuse)
            clock.advance(120)
            await daemon.poll_once("olostep")
            status = [a for a in queued(daemon) if a.type == "monitor.status"]
            assert [(a.monitor_id, a.from_status, a.to_status, a.failed_reason) for a in status] == [
                ("monitor_prices", "active", "failed", "target site blocks us")
            ]
            assert status[0].title == "monitor_prices active -> failed q=price of the thing"
            assert fault.hits >= 1
            olostep.fake.faults.remove(fault)
            clock.advance(61)  # next listing: the GET answers 404 now, so it is gone
            assert await daemon.poll_once("olostep")
            status = [a for a in queued(daemon) if a.type == "monitor.status"]
            assert [(a.monitor_id, a.to_status) for a in status][1:] == [("monitor_gone", "deleted")]
            clock.advance(120)  # t=301: monitor_prices deleted: hidden from the list, GET says deleted
            assert await daemon.poll_once("olostep")
            status = [a for a in queued(daemon) if a.type == "monitor.status"]
            assert [(a.monitor_id, a.from_status, a.to_status) for a in status][2:] == [
                ("monitor_prices", "failed", "deleted")
            ]
            assert status[2].title == "monitor_prices failed -> deleted q=price of the thing"
            clock.advance(61)
            assert await daemon.poll_once("olostep")
            assert len([a for a in queued(daemon) if a.type == "monitor.status"]) == 3


async def test_a_monitor_created_after_the_first_listing_appears_from_nothing(tmp_path: Path) -> None:
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {"id": "monitor_first"},
                    {"id": "monitor_new", "metadata": {"team": "growth"}, "added_at": 30},
                ]
            }
        }
    )
    clock = ManualClock(T0)
    async with fake_server("exa", scenario, clock) as exa:
        cfg = config(tmp_path, "exa", exa)
        async with daemon_for(cfg, clock) as daemon:
            assert await daemon.poll_once("exa")
            clock.advance(61)
            assert await daemon.poll_once("exa")
            [note] = queued(daemon)
            assert (note.monitor_id, note.from_status, note.to_status) == ("monitor_new", None, "enabled")
            assert note.title == "monitor_new new -> enabled team=growth"


async def test_a_stuck_run_carries_its_monitor_too(tmp_path: Path) -> None:
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {
                        "id": "monitor_slow",
                        "metadata": {"team": "infra"},
                        "runs": [{"id": "mrun_slow", "timeline": [{"at": 30, "status": "running"}]}],
                    }
                ]
            }
        }
    )
    rules = """
rules:
  - name: stuck
    match: {kind: run.stuck}
    stuck_after: 2m
    notify: [ch]
    title: "{{ run_id }} stuck, team={{ monitor.metadata.team }}"
"""
    clock = ManualClock(T0)
    async with fake_server("exa", scenario, clock) as exa:
        cfg = config(tmp_path, "exa", exa)
        (tmp_path / "rules" / "main.yaml").write_text(rules)
        async with daemon_for(cfg, clock) as daemon:
            assert await daemon.poll_once("exa")
            clock.advance(40)
            assert await daemon.poll_once("exa")
        # After a restart, before any listing: the monitor comes from the state.
        async with daemon_for(cfg, clock) as daemon:
            clock.advance(200)
            daemon.lifecycle_tick()
            [note] = queued(daemon)
            assert note.title == "mrun_slow stuck, team=infra"


def config(tmp_path: Path, provider: str, fake: RunningFake[Any]) -> Path:
    return harness_config(tmp_path, provider, fake, RULES, ["ch", "runs", "other"])
