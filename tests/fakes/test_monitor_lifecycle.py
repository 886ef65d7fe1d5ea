"""What the fakes play back of a monitor's own life: status changes, removal, skipped scheduled runs,
a schedule without ``nextRunAt``/``next_run_at``. Over real loopback HTTP, on a ManualClock."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import Scenario, fake_server
from runwatch.fakes._common import iso
from runwatch.fakes.scenario import load_scenario
from runwatch.yamlfile import FileProblems

pytestmark = pytest.mark.anyio


async def test_exa_monitor_status_changes_removal_and_skipped_runs() -> None:
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {
                        "id": "monitor_a",
                        "status_changes": [{"at": 10, "status": "disabled"}],
                        "skipped_runs": [30],
                        "runs": [{"id": "mrun_1", "timeline": [{"at": 60, "status": "running"}]}],
                    },
                    {"id": "monitor_b", "removed_at": 20, "announce_next_run": False, "skipped_runs": [5]},
                ]
            }
        }
    )
    clock = ManualClock()
    async with (
        fake_server("exa", scenario, clock) as exa,
        httpx.AsyncClient(base_url=exa.base_url, headers={"x-api-key": "k"}) as client,
    ):
        t0 = exa.fake.t0
        listed = (await client.get("/v0/monitors")).json()["data"]
        a, b = listed
        assert (a["status"], a["nextRunAt"], b["nextRunAt"]) == ("enabled", iso(t0 + 30), None)
        assert b["cadence"] == {"cron": "0 9 * * *", "timezone": "Etc/UTC"}
        clock.advance(20)
        listed = (await client.get("/v0/monitors")).json()["data"]
        assert [m["id"] for m in listed] == ["monitor_a"]
        assert (listed[0]["status"], listed[0]["updatedAt"]) == ("disabled", iso(t0 + 10))
        assert (await client.get("/v0/monitors/monitor_b")).status_code == 404
        assert (await client.get("/v0/monitors/monitor_b/runs")).status_code == 404
        clock.advance(15)  # the skipped run's time passed with no run; the next due is the real one
        mon = (await client.get("/v0/monitors/monitor_a")).json()
        assert mon["nextRunAt"] == iso(t0 + 60)
        assert (await client.get("/v0/monitors/monitor_a/runs")).json()["data"] == []


async def test_olostep_monitor_fails_with_its_error_then_is_deleted_then_purged() -> None:
    scenario = Scenario.model_validate(
        {
            "olostep": {
                "monitors": [
                    {
                        "id": "monitor_a",
                        "status_changes": [
                            {"at": 10, "status": "failed", "error_message": "blocked"},
                            {"at": 20, "status": "deleted"},
                        ],
                        "removed_at": 30,
                        "announce_next_run": False,
                        "cron": "30 2 * * *",
                        "timezone": "Europe/Berlin",
                    }
                ]
            }
        }
    )
    clock = ManualClock()
    async with (
        fake_server("olostep", scenario, clock) as olostep,
        httpx.AsyncClient(base_url=olostep.base_url, headers={"Authorization": "Bearer k"}) as client,
    ):
        t0 = olostep.fake.t0
        [mon] = (await client.get("/v1/monitors")).json()["monitors"]
        assert mon["status"] == "active"
        assert mon["schedule"] == {
            "frequency": "daily", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "next_run_at": None,
        }  # fmt: skip
        clock.advance(10)
        [mon] = (await client.get("/v1/monitors")).json()["monitors"]
        assert (mon["status"], mon["error_message"], mon["updated"]) == ("failed", "blocked", int(t0 + 10))
        clock.advance(10)
        assert (await client.get("/v1/monitors")).json()["monitors"] == []
        assert (await client.get("/v1/monitors/monitor_a")).json()["status"] == "deleted"
        with_deleted = (await client.get("/v1/monitors", params={"include_deleted": "true"})).json()
        assert [m["status"] for m in with_deleted["monitors"]] == ["deleted"]
        clock.advance(10)
        assert (await client.get("/v1/monitors/monitor_a")).status_code == 404
        with_deleted = (await client.get("/v1/monitors", params={"include_deleted": "true"})).json()
        assert with_deleted["monitors"] == []


def test_status_changes_must_be_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "exa:\n  monitors:\n    - id: m\n      status_changes:\n"
        "        - {at: 20s, status: disabled}\n        - {at: 10s, status: enabled}\n"
    )
    with pytest.raises(FileProblems) as exc:
        load_scenario(path)
    assert "s.yaml:6: exa.monitors[0].status_changes[1].at: goes back in time" in str(exc.value)
