"""Scenario files: the format, its errors (file:line: field), the demo story and generated scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runwatch.fakes import Fault, Scenario, default_scenario, dump_scenario, generate_scenario, load_scenario
from runwatch.fakes._common import parse_offset
from runwatch.yamlfile import FileProblems

GOOD = """\
exa:
  monitors:
    - id: monitor_prod_news
      webset_id: webset_abc
      cron: "0 9 * * *"
      status: enabled
      runs:
        - id: mrun_001
          type: search
          timeline:
            - {at: 0s, status: created}
            - {at: 2s, status: running}
            - {at: 4s, status: failed, failed_reason: "Quota exceeded for webset"}
    - runs:
        - timeline: [{at: -1.5s, status: completed}]
olostep:
  monitors:
    - id: monitor_ol_prices
      runs:
        - id: run_0001
          result: completed
          error_message: null
          event_key: event
          events:
            - {at: 0s, type: work_received, message: "work received"}
            - {at: 1s, type: node_start, message: "node start fetch"}
            - {at: 3s, type: run_complete, message: "run complete"}
  faults:
    - {path: "/v1/monitors/*/runs/*", kind: status, status: 500, count: 2}
    - {kind: rate_limit, retry_after: 2s, after: 1m, until: 90s}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(FileProblems) as info:
        load_scenario(write(tmp_path, text))
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0.0), ("2s", 2.0), ("1.5s", 1.5), ("500ms", 0.5), ("5m", 300.0), ("-2h", -7200.0), (3, 3.0)],
)
def test_offsets(text: str | int, seconds: float) -> None:
    assert parse_offset(text) == seconds


@pytest.mark.parametrize("bad", ["2x", "", "soon", True])
def test_bad_offsets(bad: str | bool) -> None:
    with pytest.raises(ValueError, match="time offset"):
        parse_offset(bad)


def test_load_good_file(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD))
    news, generated = scenario.exa.monitors
    assert news.runs[0].timeline[2].failed_reason == "Quota exceeded for webset"
    assert generated.id == "monitor_0002"
    assert generated.webset_id == "webset_0002"
    assert generated.runs[0].id == "mrun_0002_0001"
    assert generated.runs[0].timeline[0].at == -1.5
    run = scenario.olostep.monitors[0].runs[0]
    assert (run.event_key, [e.at for e in run.events]) == ("event", [0.0, 1.0, 3.0])
    count_fault, window_fault = scenario.olostep.faults
    assert (count_fault.kind, count_fault.status, count_fault.count) == ("status", 500, 2)
    assert (window_fault.retry_after, window_fault.after, window_fault.until) == (2.0, 60.0, 90.0)


def test_empty_file_is_an_empty_scenario(tmp_path: Path) -> None:
    assert load_scenario(write(tmp_path, "# nothing yet\n")) == Scenario()


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("type: search", "type: serch").replace("{at: 2s,", "{at: 2x,")
    text = text.replace("- id: run_0001", "- id: r_0001").replace(
        "kind: rate_limit", "kind: rate_limit, colour: red"
    )
    path = str(tmp_path / "scenario.yaml")
    found = problems(tmp_path, text)
    assert any(p.startswith(f"{path}:9: exa.monitors[0].runs[0].type:") for p in found), found
    assert any(p.startswith(f"{path}:12: exa.monitors[0].runs[0].timeline[1].at:") for p in found), found
    assert any(p.startswith(f"{path}:20: olostep.monitors[0].runs[0].id:") for p in found), found
    assert f"{path}:30: olostep.faults[1].colour: unknown key" in found
    assert len(found) == 4


def test_unknown_exa_status_needs_allow_unknown(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace("status: running}", "status: paused}"))
    assert len(found) == 1
    assert ":12: exa.monitors[0].runs[0].timeline[1]: status 'paused'" in found[0]
    text = GOOD.replace("status: running}", "status: paused, allow_unknown: true}")
    assert load_scenario(write(tmp_path, text)).exa.monitors[0].runs[0].timeline[1].status == "paused"


def test_cross_checks_point_at_the_entry(tmp_path: Path) -> None:
    text = GOOD.replace("{at: 4s, status: failed", "{at: 1s, status: failed").replace(
        "- runs:\n", "- id: monitor_prod_news\n      runs:\n"
    )
    found = problems(tmp_path, text)
    assert any(":13: exa.monitors[0].runs[0].timeline[2].at: goes back in time" in p for p in found), found
    assert any(":14: exa.monitors[1].id: duplicate monitor id 'monitor_prod_news'" in p for p in found), found


def test_cross_checks_apply_to_scenarios_built_in_code() -> None:
    run = {"id": "run_1", "events": [{"at": 0, "type": "work_received"}]}
    with pytest.raises(ValidationError, match="duplicate run id 'run_1'"):
        Scenario.model_validate({"olostep": {"monitors": [{"id": "monitor_a", "runs": [run, run]}]}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exa: [\n", ":2: invalid YAML"),
        ("- just\n- a list\n", ":1: a scenario must be a mapping"),
        ("exa:\n  monitors: {}\n", ":2: exa.monitors: Input should be a valid list"),
        (
            "olostep:\n  monitors:\n    - runs:\n        - events: []\n",
            ":4: olostep.monitors[0].runs[0].events:",
        ),
    ],
)
def test_structural_errors(tmp_path: Path, text: str, expected: str) -> None:
    [found] = problems(tmp_path, text)
    assert expected in found


def test_missing_file_is_a_file_problem(tmp_path: Path) -> None:
    with pytest.raises(FileProblems, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_fault_model_validates() -> None:
    with pytest.raises(ValidationError):
        Fault(kind="status", status=200)
    with pytest.raises(ValidationError):
        Fault.model_validate({"kind": "explode"})
    fault = Fault.model_validate({"kind": "slow", "delay": "250ms", "count": 3})
    assert (fault.delay, fault.count, fault.hits) == (0.25, 3, 0)


def test_demo_story_is_the_yaml_file() -> None:
    scenario = default_scenario()
    [news] = scenario.exa.monitors
    assert news.id == "monitor_prod_news"
    runs = {r.id: r for r in news.runs}
    assert [r.timeline[0].at for r in news.runs] == [-7200.0, 0.0, 1.0]
    failed = [r for r in news.runs if r.timeline[-1].status == "failed"]
    assert [r.timeline[-1].failed_reason for r in failed] == [
        "Quota exceeded: webset search credits exhausted"
    ]
    assert runs["mrun_a"].timeline[-1].at == 3.0
    prices, broken = scenario.olostep.monitors
    assert prices.id == "monitor_prices_daily"
    assert [e.type for e in prices.runs[0].events] == ["work_received", "node_start", "run_complete"]
    assert broken.runs[0].result == "failed"
    assert broken.runs[0].error_message
    latest = max(e.at for m in scenario.olostep.monitors for r in m.runs for e in r.events)
    assert latest <= 10


def test_generate_scenario_is_repeatable_and_mixed() -> None:
    scenario = generate_scenario(20, 10, provider="exa", failure_rate=0.2, seed=7)
    assert scenario == generate_scenario(20, 10, provider="exa", failure_rate=0.2, seed=7)
    assert len(scenario.exa.monitors) == 20
    assert scenario.olostep.monitors == []
    runs = [r for m in scenario.exa.monitors for r in m.runs]
    assert len(runs) == 200
    assert len({r.id for r in runs}) == 200
    ends = [r.timeline[-1].status for r in runs]
    assert 0 < ends.count("failed") < 100
    starts = sorted({r.timeline[0].at for r in runs})
    assert len(starts) > 100  # spread over time, not one burst


def test_generate_both_providers() -> None:
    scenario = generate_scenario(3, 2, provider="both", failure_rate=1.0)
    assert len(scenario.exa.monitors) == len(scenario.olostep.monitors) == 3
    run = scenario.olostep.monitors[0].runs[0]
    assert run.result == "failed"
    assert run.error_message
    assert run.events[-1].type == "run_complete"
    with pytest.raises(ValueError, match="provider"):
        generate_scenario(1, 1, provider="nope")


def test_dump_round_trips(tmp_path: Path) -> None:
    for scenario in (default_scenario(), generate_scenario(4, 3, provider="both", seed=1)):
        assert load_scenario(write(tmp_path, dump_scenario(scenario))) == scenario


def test_a_run_cannot_be_due_after_it_shows() -> None:
    late = {"id": "run_1", "scheduled_at": "5s", "events": [{"at": 1, "type": "work_received"}]}
    with pytest.raises(ValidationError, match=r"scheduled_at: is after the run's first entry"):
        Scenario.model_validate({"olostep": {"monitors": [{"id": "monitor_a", "runs": [late]}]}})
    early = {
        "id": "mrun_1",
        "scheduled_at": "-5s",
        "manual": False,
        "timeline": [{"at": 1, "status": "created"}],
    }
    Scenario.model_validate({"exa": {"monitors": [{"runs": [early]}]}})


def test_new_keys_round_trip(tmp_path: Path) -> None:
    scenario = Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {
                        "runs": [
                            {
                                "manual": True,
                                "scheduled_at": "-1s",
                                "timeline": [{"at": 0, "status": "created"}],
                            }
                        ]
                    }
                ]
            },
            "olostep": {
                "list_last_run": True,
                "monitors": [
                    {"runs": [{"events": [{"at": 0, "type": "work_received", "omit": ["id", "ts"]}]}]}
                ],
                "faults": [{"kind": "echo_key", "status": 400, "echo_at": 284, "size": 1000}],
            },
        }
    )
    path = tmp_path / "s.yaml"
    path.write_text(dump_scenario(scenario))
    assert load_scenario(path) == scenario
