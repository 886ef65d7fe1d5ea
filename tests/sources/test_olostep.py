"""The Olostep source against the fake Olostep API: what each cycle costs (with and without
``last_run`` in the monitor list), catching up after downtime, and events without ``id`` or ``ts``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runwatch.fakes import Scenario
from runwatch.sources.olostep import EVENTS_PAGE, MAX_EVENT_PAGES
from tests.sources.harness import harness, olostep_run

pytestmark = pytest.mark.anyio


def fixed_story(list_last_run: bool) -> Scenario:
    """As the Exa one: a run in progress (a), an idle monitor (b), 30 finished runs and an older one
    still going (c: two event pages), a run scheduled at 25 s (d)."""
    c_runs = [olostep_run("run_long", -6000, 45)]
    c_runs += [olostep_run(f"run_c{i:02d}", -5000 + i, -4000 + i) for i in range(30)]
    steps = [
        {"at": 0, "type": "work_received"},
        {"at": 15, "type": "node_start"},
        {"at": 35, "type": "run_complete"},
    ]
    return Scenario.model_validate(
        {
            "olostep": {
                "list_last_run": list_last_run,
                "monitors": [
                    {"id": "monitor_a", "runs": [{"id": "run_a1", "events": steps}]},
                    {"id": "monitor_b", "runs": [olostep_run("run_b0", -7200, -3600)]},
                    {"id": "monitor_c", "runs": c_runs},
                    {"id": "monitor_d", "runs": [olostep_run("run_d1", 25, 28)]},
                ],
            }
        }
    )


#: Requests per cycle (scenario second -> list_monitors, get_monitor, list_events, get_run) at
#: poll_interval 10 s, idle_poll_interval 60 s. A change that adds a request changes this table.
#: The list as documented (no ``last_run``): read at the idle pace, a GET of each monitor polled.
EXPECTED_DOCUMENTED = {
    0: (1, 4, 5, 33),  # c: two event pages; every run seen for the first time is fetched
    10: (0, 2, 2, 2),  # a and c have unfinished runs
    20: (0, 2, 2, 2),
    30: (0, 4, 4, 3),  # d's scheduled run was due at 25 s; b at its phase (27.5 s: idle polls spread)
    40: (0, 2, 2, 2),
    50: (0, 1, 1, 1),
    60: (1, 1, 1, 0),  # the list, and d at its phase (57.5 s)
    70: (0, 1, 1, 0),  # a (72.5 s)
    80: (0, 0, 0, 0),
    90: (0, 1, 1, 0),  # b (87.5 s)
    100: (0, 1, 1, 0),  # c (102.5 s)
    110: (0, 0, 0, 0),
    120: (1, 1, 1, 0),  # the list and d
    130: (0, 1, 1, 0),  # a
}
#: The list carrying ``last_run``: one list request in each cycle that polls anything, no GETs.
EXPECTED_WITH_LAST_RUN = {t: (int(sum(row) > 0), 0, row[2], row[3]) for t, row in EXPECTED_DOCUMENTED.items()}


@pytest.mark.parametrize("list_last_run", [False, True])
async def test_request_counts_per_cycle(tmp_path: Path, list_last_run: bool) -> None:
    async with harness("olostep", fixed_story(list_last_run), tmp_path) as h:
        cycles = await h.cycles_until(130, 10)
    expected = EXPECTED_WITH_LAST_RUN if list_last_run else EXPECTED_DOCUMENTED
    assert {int(c.at): c.table("olostep") for c in cycles} == expected
    status = [
        (ch.run_id, ch.to_status) for c in cycles[1:] for ch in c.changes if ch.kind.value == "run.status"
    ]
    assert status == [("run_d1", "completed"), ("run_a1", "completed"), ("run_long", "completed")]


async def test_catch_up_after_downtime_reports_every_run_once(tmp_path: Path) -> None:
    """More runs than one cycle's event pages while the daemon was down: the rest next cycle."""
    runs = MAX_EVENT_PAGES * EVENTS_PAGE + 30
    during = [
        {
            "id": f"run_{i:04d}",
            "result": "failed" if i == 0 else "completed",
            "events": [
                {"at": 100 + 10 * i, "type": "work_received"},
                {"at": 105 + 10 * i, "type": "run_complete", "data": {"error": "boom"} if i == 0 else {}},
            ],
        }
        for i in range(runs)
    ]
    scenario = Scenario.model_validate(
        {
            "olostep": {
                "monitors": [{"id": "monitor_busy", "runs": [olostep_run("run_before", 0, 5), *during]}]
            }
        }
    )
    async with harness("olostep", scenario, tmp_path) as h:
        h.clock.advance(50)
        assert (await h.cycle()).run_ids() == ["run_before"]
        h.clock.advance(100 + 10 * runs)
        first = await h.cycle()
        assert first.routes["list_events"] == MAX_EVENT_PAGES
        h.clock.advance(10)
        second = await h.cycle()
        assert second.routes["list_events"] == 1 + 2  # the newest page, then the 30 runs left
        assert second.routes["get_run"] == 30
    statuses = Counter(
        (ch.run_id, ch.to_status) for c in h.cycles[1:] for ch in c.changes if ch.kind.value == "run.status"
    )
    assert len(statuses) == runs and set(statuses.values()) == {1}
    assert ("run_0000", "failed") in statuses


def steps(*names: str, omit: list[str]) -> list[dict[str, Any]]:
    return [
        {"at": 10 * i, "type": name, "omit": omit, "message": f"{name} {i}"} for i, name in enumerate(names)
    ]


@pytest.mark.parametrize("omit", [["id"], ["ts"], ["id", "ts"]])
async def test_events_without_id_or_ts_are_reported_once_across_polls_in_any_order(
    tmp_path: Path, omit: list[str]
) -> None:
    """Each poll returns the events so far in another order; each is still reported exactly once,
    and the answers that lack ``id``/``ts`` are counted."""
    events = steps("work_received", "node_start", "node_start", "fetch", "run_complete", omit=omit)
    scenario = Scenario.model_validate(
        {
            "olostep": {
                "monitors": [
                    {"id": "monitor_x", "runs": [{"id": "run_x", "shuffle_events": True, "events": events}]}
                ]
            }
        }
    )
    async with harness("olostep", scenario, tmp_path) as h:
        cycles = await h.cycles_until(50, 5)
        for gap in ("id", "ts"):
            counted = h.errors(f"event_no_{gap}")
            assert counted > 0 if gap in omit else counted == 0
    reported = [ch.event.message for c in cycles for ch in c.changes if ch.event is not None]
    assert sorted(reported) == sorted(e["message"] for e in events)
    if "ts" not in omit:
        assert reported == [e["message"] for e in events]  # in ts order, though served shuffled
    finished = [ch.to_status for c in cycles for ch in c.changes if ch.kind.value == "run.status"]
    assert finished == ["running", "completed"]
