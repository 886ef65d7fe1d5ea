"""What the fake servers play back: monitors and runs whose states change at set scenario times.

A scenario is data, not code, so the demo, the tests and the benchmark share one format and a broken
scenario file is reported like any other runwatch file (``path:line: field: problem``). Times are
offsets from the fake's start (``t0``): ``0s``, ``1.5s``, ``500ms``, ``-2h`` (negative = before start).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from ruamel.yaml import YAML

from runwatch import yamlfile
from runwatch.fakes._common import Offset
from runwatch.fakes.faults import Fault

__all__ = [
    "EXA_STATUSES",
    "ExaMonitor",
    "ExaMonitorStatus",
    "ExaRun",
    "ExaSection",
    "ExaStep",
    "OlostepEvent",
    "OlostepMonitor",
    "OlostepMonitorStatus",
    "OlostepRun",
    "OlostepSection",
    "Scenario",
    "check_scenario",
    "default_scenario",
    "dump_scenario",
    "generate_scenario",
    "load_scenario",
]

#: The MonitorRun statuses Exa documents; anything else needs ``allow_unknown: true`` on the step.
EXA_STATUSES: tuple[str, ...] = ("created", "running", "completed", "failed", "canceled")

DEMO_SCENARIO = Path(__file__).resolve().parent.parent / "demo" / "scenario.yaml"


class _Model(BaseModel):
    # Unknown keys are errors: a typo in a scenario must not silently change the story.
    model_config = ConfigDict(extra="forbid")


class ExaStep(_Model):
    """One status a run takes at one time; the run shows the latest step at or before now."""

    at: Offset
    status: str
    failed_reason: str | None = None
    #: Send a status Exa does not document (to test that clients tolerate it).
    allow_unknown: bool = False

    @model_validator(mode="after")
    def _known_status(self) -> ExaStep:
        if self.status not in EXA_STATUSES and not self.allow_unknown:
            raise ValueError(
                f"status {self.status!r} is not one of {', '.join(EXA_STATUSES)}"
                " (set allow_unknown: true to send it anyway)"
            )
        return self


class ExaRun(_Model):
    id: str = ""
    type: Literal["search", "refresh"] = "search"
    #: Started by hand between schedules: the monitor's ``nextRunAt`` never announces it.
    manual: bool = False
    #: When the schedule fired (what ``nextRunAt`` announced); the run itself appears at its first
    #: timeline entry, which may be later (a provider takes a while to create it). Default: that entry.
    scheduled_at: Offset | None = None
    timeline: list[ExaStep] = Field(min_length=1)


class ExaMonitorStatus(_Model):
    """The monitor's status from ``at`` on (someone disabled or re-enabled it)."""

    at: Offset
    status: Literal["enabled", "disabled"]


class ExaMonitor(_Model):
    id: str = ""
    webset_id: str = ""
    cron: str = "0 9 * * *"
    timezone: str = "Etc/UTC"
    status: Literal["enabled", "disabled"] = "enabled"
    #: Later statuses, in time order.
    status_changes: list[ExaMonitorStatus] = Field(default_factory=list)
    #: Created at this time: not in the list (404 on every path under it) before.
    added_at: Offset | None = None
    #: Deleted at this time: gone from the list, 404 on every path under it.
    removed_at: Offset | None = None
    #: Times the schedule fired but no run was ever created (``nextRunAt`` announces them).
    skipped_runs: list[Offset] = Field(default_factory=list)
    #: False: ``nextRunAt`` stays null, so a client must compute due times from ``cadence``.
    announce_next_run: bool = True
    behavior: Literal["search", "refresh"] = "search"
    #: ``behavior.config``; None gives a minimal valid one (search: a result count, refresh: contents).
    behavior_config: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    runs: list[ExaRun] = Field(default_factory=list)


class ExaSection(_Model):
    monitors: list[ExaMonitor] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill_ids(self) -> ExaSection:
        # Exa ids are free-form; generated ones are stable so tests and alerts can name them.
        for m_i, mon in enumerate(self.monitors, 1):
            mon.id = mon.id or f"monitor_{m_i:04d}"
            mon.webset_id = mon.webset_id or f"webset_{m_i:04d}"
            for r_i, run in enumerate(mon.runs, 1):
                run.id = run.id or f"mrun_{m_i:04d}_{r_i:04d}"
        return self


class OlostepEvent(_Model):
    """One AgentLogEvent; ``type`` is the step name, ``data`` extra keys of the event object."""

    at: Offset
    type: str = Field(min_length=1)
    message: str = ""
    stream: str = "agent"
    data: dict[str, Any] = Field(default_factory=dict)
    #: AgentLogEvent fields to leave out (the seed shows both, but a poller must not depend on them).
    omit: list[Literal["id", "ts"]] = Field(default_factory=list)


class OlostepRun(_Model):
    id: str = Field(default="", pattern=r"^run_")
    #: ``last_run.status`` once a ``run_complete`` event is visible.
    result: Literal["completed", "failed"] = "completed"
    #: The monitor's ``error_message`` while this failed run is its ``last_run``.
    error_message: str | None = None
    change_detected: bool = False
    summary: str | None = None
    snapshot: dict[str, Any] | None = None
    #: Which key of ``AgentLogEvent.event`` holds the step name (undocumented upstream).
    event_key: Literal["type", "event", "name"] = "type"
    #: Return events in a scrambled (deterministic) order, to test that clients sort by ``ts``.
    shuffle_events: bool = False
    #: Started by hand between schedules: ``schedule.next_run_at`` never announces it.
    manual: bool = False
    #: When the schedule fired (what ``next_run_at`` announced); the run shows from its first event.
    scheduled_at: Offset | None = None
    events: list[OlostepEvent] = Field(min_length=1)


OlostepStatus = Literal["provisioning", "active", "paused", "failed", "deleted"]


class OlostepMonitorStatus(_Model):
    """The monitor's status from ``at`` on; ``deleted`` hides it from the list (GET still answers)."""

    at: Offset
    status: OlostepStatus
    #: The monitor's ``error_message`` while in this status (e.g. why it ``failed``).
    error_message: str | None = None


class OlostepMonitor(_Model):
    id: str = Field(default="", pattern=r"^monitor_")
    status: OlostepStatus = "active"
    #: Later statuses, in time order.
    status_changes: list[OlostepMonitorStatus] = Field(default_factory=list)
    #: Created at this time: not in the list (404 on GET) before.
    added_at: Offset | None = None
    #: Purged at this time: gone from the list (even with ``include_deleted``), 404 on GET.
    removed_at: Offset | None = None
    #: Times the schedule fired but no run was ever created (``next_run_at`` announces them).
    skipped_runs: list[Offset] = Field(default_factory=list)
    #: False: ``schedule.next_run_at`` stays null, so a client must use ``cron``/``timezone``.
    announce_next_run: bool = True
    #: What the monitor watches, in words (a required field of Olostep's monitor object).
    query: str = "Tell me when this page changes"
    frequency: str = "daily"
    cron: str = "0 9 * * *"
    timezone: str = "UTC"
    #: The monitor's ``webhook.url``: posted to (unsigned) when a run of it completes.
    webhook_url: str | None = None
    runs: list[OlostepRun] = Field(default_factory=list)


class OlostepSection(_Model):
    monitors: list[OlostepMonitor] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    #: The monitor list carries each monitor's ``last_run`` too (undocumented there, but seen in some
    #: answers); off by default, as documented.
    list_last_run: bool = False

    @model_validator(mode="after")
    def _fill_ids(self) -> OlostepSection:
        for m_i, mon in enumerate(self.monitors, 1):
            mon.id = mon.id or f"monitor_{m_i:04d}"
            for r_i, run in enumerate(mon.runs, 1):
                run.id = run.id or f"run_{m_i:04d}_{r_i:04d}"
        return self


class Scenario(_Model):
    """A story for one or both fakes; a fake ignores the other provider's section."""

    description: str = ""
    exa: ExaSection = Field(default_factory=ExaSection)
    olostep: OlostepSection = Field(default_factory=OlostepSection)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Scenario:
        # load_scenario runs these checks itself to report each with its own file line.
        if info.context and info.context.get("defer_checks"):
            return self
        problems = check_scenario(self)
        if problems:
            raise ValueError("; ".join(f"{yamlfile.dotted(loc)}: {msg}" for loc, msg in problems))
        return self


Loc = tuple[str | int, ...]


def check_scenario(scenario: Scenario) -> list[tuple[Loc, str]]:
    """Cross-field problems a field type cannot see: duplicate ids, times that go backwards."""
    out: list[tuple[Loc, str]] = []

    def check_times(times: list[float], where: Loc, field: str) -> None:
        for i in range(1, len(times)):
            if times[i] < times[i - 1]:
                out.append(((*where, field, i, "at"), "goes back in time (entries must be in time order)"))

    def check_unique(ids: list[str], where: Loc, what: str) -> None:
        seen: set[str] = set()
        for i, ident in enumerate(ids):
            if ident in seen:
                out.append(((*where, i, "id"), f"duplicate {what} id {ident!r}"))
            seen.add(ident)

    def check_scheduled(scheduled: float | None, first: float, where: Loc) -> None:
        if scheduled is not None and scheduled > first:
            out.append(((*where, "scheduled_at"), "is after the run's first entry (it cannot start early)"))

    exa_mons = scenario.exa.monitors
    check_unique([m.id for m in exa_mons], ("exa", "monitors"), "monitor")
    for m_i, exa_mon in enumerate(exa_mons):
        check_unique([r.id for r in exa_mon.runs], ("exa", "monitors", m_i, "runs"), "run")
        check_times([c.at for c in exa_mon.status_changes], ("exa", "monitors", m_i), "status_changes")
        for r_i, exa_run in enumerate(exa_mon.runs):
            where: Loc = ("exa", "monitors", m_i, "runs", r_i)
            check_times([s.at for s in exa_run.timeline], where, "timeline")
            check_scheduled(exa_run.scheduled_at, exa_run.timeline[0].at, where)
    ol_mons = scenario.olostep.monitors
    check_unique([m.id for m in ol_mons], ("olostep", "monitors"), "monitor")
    for m_i, ol_mon in enumerate(ol_mons):
        check_unique([r.id for r in ol_mon.runs], ("olostep", "monitors", m_i, "runs"), "run")
        check_times([c.at for c in ol_mon.status_changes], ("olostep", "monitors", m_i), "status_changes")
        for r_i, ol_run in enumerate(ol_mon.runs):
            where = ("olostep", "monitors", m_i, "runs", r_i)
            check_times([e.at for e in ol_run.events], where, "events")
            check_scheduled(ol_run.scheduled_at, ol_run.events[0].at, where)
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file; every problem is raised at once as FileProblems naming file:line: field."""
    path = Path(path)
    shown = str(path)
    root = yamlfile.load(path, shown)
    if root is None:
        root = {}
    if not isinstance(root, dict):
        raise yamlfile.FileProblems([yamlfile.Problem(shown, 1, "", "a scenario must be a mapping")])
    try:
        scenario = Scenario.model_validate(yamlfile.plain(root), context={"defer_checks": True})
    except ValidationError as exc:
        raise yamlfile.FileProblems(yamlfile.problems_from_validation(exc, root, shown)) from None
    problems = check_scenario(scenario)
    if problems:
        raise yamlfile.FileProblems(
            [
                yamlfile.Problem(shown, yamlfile.line_of(root, loc), yamlfile.dotted(loc), msg)
                for loc, msg in problems
            ]
        )
    return scenario


def default_scenario() -> Scenario:
    """The demo story (``runwatch/demo/scenario.yaml``): what ``runwatch fake`` plays without --scenario."""
    return load_scenario(DEMO_SCENARIO)


def dump_scenario(scenario: Scenario) -> str:
    """YAML text that :func:`load_scenario` reads back to an equal scenario (e.g. a generated one)."""
    data = scenario.model_dump(mode="json", exclude_defaults=True)
    buf = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, buf)
    return buf.getvalue()


def generate_scenario(
    monitors: int,
    runs_per_monitor: int,
    *,
    provider: str,
    start: float = 0.0,
    spacing: float = 10.0,
    duration: float = 3.0,
    failure_rate: float = 0.1,
    seed: int = 0,
) -> Scenario:
    """A large regular scenario for the benchmark.

    Each monitor gets ``runs_per_monitor`` runs, one every ``spacing`` seconds from ``start``; monitors
    are staggered across one spacing so changes arrive evenly rather than in bursts. Each run takes
    ``duration`` seconds (created/running/finished, or three log events); about ``failure_rate`` of
    them fail, chosen by a seeded RNG so a benchmark is repeatable. ``provider`` is ``exa``,
    ``olostep`` or ``both``.
    """
    if provider not in ("exa", "olostep", "both"):
        raise ValueError(f"provider must be exa, olostep or both, not {provider!r}")
    rng = random.Random(seed)
    exa_mons: list[ExaMonitor] = []
    ol_mons: list[OlostepMonitor] = []
    for m in range(monitors):
        offset = start + spacing * m / max(monitors, 1)
        exa_runs: list[ExaRun] = []
        ol_runs: list[OlostepRun] = []
        for r in range(runs_per_monitor):
            t = round(offset + r * spacing, 3)
            mid, end = round(t + duration / 3, 3), round(t + duration, 3)
            failed = rng.random() < failure_rate
            reason = f"Quota exceeded (generated failure {m}/{r})" if failed else None
            if provider in ("exa", "both"):
                exa_runs.append(
                    ExaRun(
                        id=f"mrun_{m:05d}_{r:04d}",
                        timeline=[
                            ExaStep(at=t, status="created"),
                            ExaStep(at=mid, status="running"),
                            ExaStep(at=end, status="failed" if failed else "completed", failed_reason=reason),
                        ],
                    )
                )
            if provider in ("olostep", "both"):
                last = OlostepEvent(at=end, type="run_complete", message="run complete")
                if failed:
                    last = OlostepEvent(
                        at=end, type="run_complete", message=f"run failed: {reason}", data={"error": reason}
                    )
                ol_runs.append(
                    OlostepRun(
                        id=f"run_{m:05d}_{r:04d}",
                        result="failed" if failed else "completed",
                        error_message=reason,
                        change_detected=not failed and rng.random() < 0.5,
                        events=[
                            OlostepEvent(at=t, type="work_received", message="work received"),
                            OlostepEvent(at=mid, type="node_start", message="node start fetch"),
                            last,
                        ],
                    )
                )
        if provider in ("exa", "both"):
            exa_mons.append(
                ExaMonitor(id=f"monitor_bench_{m:05d}", webset_id=f"webset_{m:05d}", runs=exa_runs)
            )
        if provider in ("olostep", "both"):
            ol_mons.append(OlostepMonitor(id=f"monitor_bench_{m:05d}", runs=ol_runs))
    return Scenario(
        description=f"generated: {monitors} monitors x {runs_per_monitor} runs",
        exa=ExaSection(monitors=exa_mons),
        olostep=OlostepSection(monitors=ol_mons),
    )
