"""Flap damping through the real pipeline stages and state: a monitor alternating between failing and
completing is reported once as flapping, then kept quiet until a quiet window passes; the end is one
notification, and all of it survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from runwatch.clock import ManualClock
from runwatch.model import Alert
from tests.pipeline.test_grouping import SCHEMA, queued
from tests.pipeline.test_lifecycle import T0, Rig

pytestmark = pytest.mark.anyio

FLAPPY = """
rules:
  - name: flappy
    match: {provider: exa, kind: run.status, to: failed}
    notify: [ch]
    flapping: {count: 3, within: 10m, quiet: 5m}
    send_resolved: true
"""


def sent(r: Rig) -> list[tuple[str, str, str, str]]:
    """(status, flapping label, run_id, title) of every queued notification."""
    return [(a.status, a.labels.get("flapping", ""), a.run_id, a.title) for a in queued(r)]


def transitions(r: Rig, event: str) -> float:
    value = r.metrics.registry.get_sample_value("runwatch_alert_transitions_total", {"event": event})
    assert value is not None
    return value


async def alternate(r: Rig, clock: ManualClock, runs: range, first: str = "failed") -> None:
    other = "completed" if first == "failed" else "failed"
    for i in runs:
        await r.see(f"r{i}", first if i % 2 else other)
        clock.advance(10)
        r.tick()


async def test_flapping_is_reported_once_then_quiet_then_its_end_once(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, FLAPPY, clock)
    r.metrics.prime({}, {}, ["flappy"])
    assert transitions(r, "flapping") == 0 and transitions(r, "flapping_ended") == 0  # primed
    await alternate(r, clock, range(1, 9))  # r1 failed, r2 completed, ... r8 completed: 7 alternations
    got = sent(r)
    assert [(s, f, run) for s, f, run, _ in got] == [
        ("firing", "", "r1"), ("resolved", "", "r2"), ("firing", "", "r3"), ("resolved", "", "r4"),
        ("firing", "true", "r5"),  # the 4th alternation is more than count: flapping, once
    ]  # fmt: skip
    assert got[4][3] == "[flapping] [warning] exa m1 run r5: failed"
    jsonschema.validate(queued(r)[4].payload(), SCHEMA)
    # The last alternation (r8) was at +70 s: quiet until +370 s.
    clock.advance(370 - 80 - 1)
    r.tick()
    assert len(sent(r)) == 5
    clock.advance(1)
    r.tick()
    r.tick()
    ended = sent(r)[5:]
    assert [(s, f, run) for s, f, run, _ in ended] == [("resolved", "ended", "r8")]
    assert ended[0][3] == "[flapping ended] [warning] exa m1 run r8: completed"
    assert (transitions(r, "flapping"), transitions(r, "flapping_ended")) == (1, 1)
    assert r.state.alerts.open == {}
    await r.see("r9", "failed")  # a fresh failure after the flapping: an ordinary alert again
    assert sent(r)[-1][:3] == ("firing", "", "r9")


async def test_flapping_that_settles_failing_fires_again_and_then_resolves(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, FLAPPY, clock)
    await alternate(r, clock, range(1, 8))  # ends on r7 failed at +60 s
    assert len(sent(r)) == 5
    await r.see("r8", "failed")  # failing again is no alternation: the quiet window runs from +60 s
    clock.advance(360 - 70 - 1)
    r.tick()
    assert len(sent(r)) == 5
    clock.advance(1)
    r.tick()
    [(status, flag, run, title)] = sent(r)[5:]
    assert (status, flag, run) == ("firing", "ended", "r8")
    assert title.startswith("[flapping ended] ")
    await r.see("r9", "completed")  # an ordinary resolve from here on
    assert sent(r)[-1][:3] == ("resolved", "", "r9")


async def test_a_restart_while_flapping_keeps_it_quiet_and_ends_it_once(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    r = Rig(tmp_path, FLAPPY.replace("    send_resolved: true\n", ""), clock)
    await alternate(r, clock, range(1, 7))
    assert [f for _, f, _, _ in sent(r)] == ["", "", "true"]  # no resolves without send_resolved
    r.state.close()

    again = Rig(tmp_path, FLAPPY.replace("    send_resolved: true\n", ""), clock)
    await alternate(again, clock, range(7, 10))  # still flapping after the restart: quiet
    assert len(sent(again)) == 3
    clock.advance(300 - 10 - 1)  # the last alternation (r9) was 10 s ago
    again.tick()
    assert len(sent(again)) == 3
    clock.advance(1)
    again.tick()
    assert len(sent(again)) == 4 and sent(again)[-1][:3] == ("firing", "ended", "r9")
    assert transitions(again, "flapping_ended") == 1


async def test_flapping_drops_the_pending_group_and_sends_the_flapping_notice_instead(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    rules = FLAPPY.replace("send_resolved: true", "group_wait: 1h\n    group_interval: 1h")
    r = Rig(tmp_path, rules, clock)
    await alternate(r, clock, range(1, 7))
    assert [(s, f) for s, f, _, _ in sent(r)] == [("firing", "true")]
    clock.advance(3600)
    r.tick()
    assert len(sent(r)) == 1  # the storm's matches are not sent later as a group


def test_a_row_written_before_grouping_still_loads() -> None:
    from runwatch.store.alert_state import OpenAlert

    old = json.dumps(
        {"rule": "x", "group": {"provider": "exa"}, "firing": True, "opened_at": 1.0, "matches": [],
         "next_repeat_at": None, "repeats": 0, "last": []}
    )  # fmt: skip
    a = OpenAlert.from_json("k", old)
    assert (a.pending, a.next_flush_at, a.flapping, a.flips) == ([], None, False, [])
    assert Alert.from_payload({"id": "msg_1", "run_id": "r1"}).payload()["alerts"][0]["run_id"] == "r1"


def test_bad_flapping_and_grouping_keys_name_file_line_and_field(tmp_path: Path) -> None:
    from runwatch.rules import load_rules
    from runwatch.yamlfile import FileProblems

    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n"
        "  - name: a\n"
        "    notify: ch\n"
        "    flapping: {count: 0}\n"
        "  - name: b\n"
        "    notify: ch\n"
        "    group_wait: 0s\n"
        "    flapping: {within: 1h, quiet: soon}\n"
    )
    with pytest.raises(FileProblems) as caught:
        load_rules([path])
    assert [str(p).replace(str(path), "r.yaml") for p in caught.value.problems] == [
        "r.yaml:4: rules[0].flapping.count: Input should be greater than or equal to 1",
        "r.yaml:4: rules[0].flapping.within: required key is missing",
        "r.yaml:7: rules[1].group_wait: '0s': a duration must be positive",
        "r.yaml:8: rules[1].flapping.quiet: 'soon' is not a duration (use e.g. 500ms, 30s, 5m, 1h)",
    ]
