"""``runwatch test-rules``: rule files against test cases, offline, with the daemon's own code.

A case file is a YAML list of cases. Each case is a timeline of changes, as the daemon would detect
them, and the notifications the rules must send for it, exactly: none missing, none extra. The changes
go through the daemon's own stages (:class:`~runwatch.pipeline.Match`, the alert
:class:`~runwatch.pipeline.Lifecycle` with its open alerts in an in-memory database, and
:func:`~runwatch.pipeline.alerts_for`), so what a case shows is what the daemon would send. No network,
no config, no state directory; channel names are not checked against a config (``runwatch check``
does that), so one case file serves every environment.

The format is documented in ``rules/README.md`` ("Testing rules"). Errors in a case file read
``file:line: field: problem``, like every other file runwatch reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from runwatch import log as logsetup
from runwatch import yamlfile
from runwatch.durations import format_duration, parse_duration
from runwatch.metrics import Metrics
from runwatch.model import MONITOR_STATUSES, RUN_STATUSES, SEVERITIES, Alert, Change, ChangeKind, RunEvent
from runwatch.pipeline.chain import Batch
from runwatch.pipeline.lifecycle import Lifecycle
from runwatch.pipeline.match import Match, alerts_for
from runwatch.rules import RuleSet, load_rules
from runwatch.rules.schema import KINDS, PROVIDERS
from runwatch.sources.base import MonitorBatch
from runwatch.store.sqlite.alerts import SqliteAlerts
from runwatch.yamlfile import FileProblems, Problem

if TYPE_CHECKING:
    pass

#: Unix time of a case's second 0 (any fixed value: templates do not see times).
START = 1_780_000_000.0
#: A case that sends more than this (a repeat_interval of 1s over a week) stops there and fails.
MAX_NOTIFICATIONS = 10_000


# --- the case file's format ---------------------------------------------------------------------------


def _at(value: Any) -> float:
    """Seconds since the case's start: a number (0 and up) or a duration (``90s``, ``5m``, ``2h``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected seconds (a number) or a duration such as 90s, 5m, 2h")
    if isinstance(value, str):
        return parse_duration(value)
    if value < 0:
        raise ValueError(f"{value!r}: a time must be 0 or more seconds")
    return float(value)


def _one_of(allowed: Sequence[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not {what} ({', '.join(allowed)})")
        return value

    return AfterValidator(check)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _some(items: list[Any]) -> list[Any]:
    if not items:
        raise ValueError("a case needs at least one change in its timeline")
    return items


At = Annotated[float, BeforeValidator(_at)]
Name = Annotated[str, AfterValidator(_non_empty)]
Status = Annotated[
    str, _one_of(tuple(dict.fromkeys(RUN_STATUSES + MONITOR_STATUSES)), "a run or monitor status")
]


@dataclass(frozen=True, slots=True)
class TextMatch:
    """An expected title or body: the exact text, or ``{regex: ...}`` searched in it."""

    exact: str | None = None
    regex: re.Pattern[str] | None = None

    def __call__(self, text: str) -> bool:
        if self.regex is not None:
            return self.regex.search(text) is not None
        return text == self.exact

    def shown(self) -> str:
        return f"/{self.regex.pattern}/" if self.regex is not None else repr(self.exact)


def _text(value: Any) -> TextMatch:
    if isinstance(value, str):
        # A block scalar (``body: |``) ends with a line break; a sent body never does.
        return TextMatch(exact=value.rstrip("\n"))
    if isinstance(value, dict) and set(value) == {"regex"} and isinstance(value["regex"], str):
        try:
            return TextMatch(regex=re.compile(value["regex"]))
        except re.error as exc:
            raise ValueError(f"invalid regex {value['regex']!r}: {exc.msg}") from None
    raise ValueError("expected the exact text, or {regex: '...'} (searched, like rule regexes)")


Text = Annotated[TextMatch, PlainValidator(_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("expected a mapping (key: value)")
        return data


class Observed(_Strict):
    """One change in a case's timeline: what the daemon would have detected at ``at``."""

    at: At
    provider: Annotated[str, _one_of(PROVIDERS, "a provider")]
    #: Empty only for a source.error (the provider, not a monitor).
    monitor_id: str = ""
    run_id: str = ""
    kind: Annotated[str, _one_of(KINDS, "a change kind")]
    from_: Status | None = Field(None, alias="from")
    to: Status | None = None
    failed_reason: str | None = None
    event: str | None = None
    message: str | None = None
    event_data: dict[str, Any] = Field(default_factory=dict)
    run: dict[str, Any] = Field(default_factory=dict)
    #: The monitor as the provider's listing shows it: what ``monitor.*`` in templates reads.
    monitor: dict[str, Any] = Field(default_factory=dict)
    #: run.stuck: how long the run has been unfinished; source.error: how long the provider has failed;
    #: monitor.missed_run: how late the run is (what ``stuck_after``, ``for``, ``grace`` are compared with).
    lasted: At | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Observed:
        if self.kind != ChangeKind.SOURCE_ERROR and not self.monitor_id.strip():
            raise ValueError(f"a {self.kind} change needs monitor_id")
        if self.kind in (ChangeKind.RUN_STATUS, ChangeKind.RUN_EVENT) and not self.run_id:
            raise ValueError(f"a {self.kind} change needs run_id")
        if self.kind == ChangeKind.RUN_STATUS:
            if self.to is None:
                raise ValueError("a run.status change needs 'to' (the new status)")
            extra = [k for k in ("event", "message") if getattr(self, k) is not None]
            if extra or self.event_data:
                raise ValueError(f"{(extra or ['event_data'])[0]!r} belongs to run.event changes")
        timed = (ChangeKind.RUN_STUCK, ChangeKind.SOURCE_ERROR, ChangeKind.MONITOR_MISSED_RUN)
        if self.kind in timed and self.lasted is None:
            raise ValueError(f"a {self.kind} change needs 'lasted' (how long it has lasted, e.g. 45m)")
        if self.kind == ChangeKind.RUN_EVENT and not self.event:
            raise ValueError("a run.event change needs 'event' (the step name)")
        return self

    def change(self, index: int) -> Change:
        """The Change the daemon would have made of it (keys as the daemon's diff makes them)."""
        kind = ChangeKind(self.kind)
        event = None
        if kind is ChangeKind.RUN_EVENT:
            event = RunEvent(
                id=f"event-{index}",
                ts_ms=int((START + self.at) * 1000),
                name=self.event or "",
                message=self.message or "",
                raw=dict(self.event_data),
            )
        what = f"event:event-{index}" if event is not None else f"status:{self.to}"
        key = f"{self.provider}:{self.run_id}:{what}"
        if not self.run_id:  # the monitor's or the provider's own change: one key per entry
            key = f"{self.provider}:{self.monitor_id}:{self.kind}:{index}"
        return Change(
            key=key,
            kind=kind,
            provider=self.provider,
            monitor_id=self.monitor_id,
            run_id=self.run_id,
            run=dict(self.run),
            from_status=self.from_,
            to_status=self.to,
            event=event,
            failed_reason=self.failed_reason,
            detected_at=START + self.at,
            failing_for=self.lasted or 0.0,
            # A missed run happened at its due time: ``lasted`` before it was reported.
            occurred_at=START + self.at - (self.lasted or 0.0)
            if kind is ChangeKind.MONITOR_MISSED_RUN
            else None,
            monitor=dict(self.monitor),
        )


class Expected(_Strict):
    """One notification a case expects: a key left out is not compared."""

    at: At
    channel: Name
    rule: Name
    severity: Annotated[str, _one_of(SEVERITIES, "a severity")] | None = None
    title: Text | None = None
    body: Text | None = None
    resolved: StrictBool | None = None
    #: How many changes the notification lists (its ``alerts``): 1 unless grouped.
    alerts: Annotated[int, Field(ge=1)] | None = None
    #: Labels it must carry (others are not compared): ``{flapping: "true"}``.
    labels: dict[str, str] | None = None


class Case(_Strict):
    """A timeline of changes and exactly the notifications the rules must send for it."""

    name: Name
    timeline: Annotated[list[Observed], AfterValidator(_some)]
    expect: list[Expected]
    #: Run the clock (repeats) until then; default: the last change or expected notification.
    until: At | None = None


_CASES = TypeAdapter(list[Case])


@dataclass(frozen=True, slots=True)
class CaseFile:
    """A parsed, validated case file, with what is needed to point at its lines."""

    path: str
    cases: list[Case]
    root: Any

    def line_of(self, *loc: str | int) -> int:
        return yamlfile.line_of(self.root, loc)


def load_cases(path: Path, ruleset: RuleSet) -> CaseFile:
    """Read and validate one case file; FileProblems names file, line and field of every problem."""
    shown = str(path)
    root = yamlfile.load(path, shown)
    if not isinstance(root, list):
        raise FileProblems([Problem(shown, 1, "", "expected a list of cases (each: name, timeline, expect)")])
    try:
        cases = _CASES.validate_python(yamlfile.plain(root))
    except ValidationError as exc:
        raise FileProblems(yamlfile.problems_from_validation(exc, root, shown)) from None
    loaded = CaseFile(shown, cases, root)
    problems: list[Problem] = []
    rules = {r.name for r in ruleset}
    first: dict[str, int] = {}
    for i, case in enumerate(cases):
        if case.name in first:
            problems.append(
                Problem(
                    shown,
                    loaded.line_of(i, "name"),
                    f"[{i}].name",
                    f"duplicate case name {case.name!r} (first at line {first[case.name]})",
                )
            )
        first.setdefault(case.name, loaded.line_of(i, "name"))
        for j, exp in enumerate(case.expect):
            if exp.rule not in rules:
                close = difflib.get_close_matches(exp.rule, sorted(rules), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    Problem(
                        shown,
                        loaded.line_of(i, "expect", j, "rule"),
                        f"[{i}].expect[{j}].rule",
                        f"{exp.rule!r} is not a rule in the rule files{hint}",
                    )
                )
    if problems:
        raise FileProblems(problems)
    return loaded


# --- running a case ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One notification the rules sent during a case, at ``at`` seconds from its start."""

    at: float
    channel: str
    rule: str
    severity: str
    title: str
    body: str
    resolved: bool
    alerts: int = 1
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, alert: Alert) -> Sent:
        return cls(
            at=alert.detected_at - START,
            channel=alert.channel,
            rule=alert.rule,
            severity=alert.severity,
            title=alert.title,
            body=alert.body,
            resolved=alert.status == "resolved",
            alerts=len(alert.items()),
            labels=tuple(sorted(alert.labels.items())),
        )


class TooManyNotifications(Exception):
    """A case sent more than MAX_NOTIFICATIONS (a short repeat_interval over a long time)."""


def run_case(ruleset: RuleSet, case: Case) -> list[Sent]:
    """The notifications the daemon would send for the case's timeline, in the order it sends them.

    Changes at the same time for the same monitor form one batch, as one poll of that monitor does;
    time passes between them as the lifecycle's repeats say (each one exactly at its due time).
    """
    metrics = Metrics()
    alerts = SqliteAlerts(sqlite3.connect(":memory:"))
    try:
        match = Match(lambda: ruleset, metrics)
        lifecycle = Lifecycle(alerts, lambda: ruleset, metrics)
        sent: list[Sent] = []

        def keep(new: Sequence[Alert]) -> None:
            sent.extend(Sent.of(a) for a in new)
            if len(sent) > MAX_NOTIFICATIONS:
                raise TooManyNotifications(f"more than {MAX_NOTIFICATIONS} notifications")

        def advance(to: float) -> None:
            """Every repeat, group send and end of flapping that falls due up to ``to`` (case seconds)."""
            while True:
                due = min((t for a in alerts.open.values() if (t := a.next_due()) is not None), default=None)
                if due is None or due > START + to:
                    return
                notes, updates = lifecycle.tick(due)
                if not updates:
                    return
                alerts.apply(updates)
                keep([dataclasses.replace(n.alert, detected_at=due) for n in notes])

        items = sorted(enumerate(case.timeline), key=lambda pair: pair[1].at)
        i = 0
        while i < len(items):
            first = items[i][1]
            group = [
                pair
                for pair in items[i:]
                if (pair[1].at, pair[1].provider, pair[1].monitor_id)
                == (first.at, first.provider, first.monitor_id)
            ]
            i += len(group)
            advance(first.at)
            batch = Batch(MonitorBatch(first.provider, first.monitor_id, ()), START + first.at)
            batch.changes = [item.change(index) for index, item in group]
            match(batch)
            lifecycle(batch)
            alerts.apply(batch.alert_updates)
            keep([a for d in batch.decisions for a in alerts_for(d)])
        end = max([*(o.at for o in case.timeline), *(e.at for e in case.expect)])
        advance(case.until if case.until is not None else end)
        return sent
    finally:
        alerts.db.close()


# --- comparing and reporting ----------------------------------------------------------------------------


def _matches(exp: Expected, got: Sent) -> bool:
    return (
        exp.at == got.at
        and exp.channel == got.channel
        and exp.rule == got.rule
        and (exp.severity is None or exp.severity == got.severity)
        and (exp.title is None or exp.title(got.title))
        and (exp.body is None or exp.body(got.body))
        and (exp.resolved is None or exp.resolved == got.resolved)
        and (exp.alerts is None or exp.alerts == got.alerts)
        and (exp.labels is None or _has_labels(exp.labels, got))
    )


def _has_labels(labels: dict[str, str], got: Sent) -> bool:
    return all(dict(got.labels).get(k) == v for k, v in labels.items())


def _secs(at: float) -> str:
    return "0s" if at == 0 else format_duration(at)


def _describe(got: Sent) -> str:
    flag = " (resolved)" if got.resolved else ""
    flag += f" ({got.alerts} alerts)" if got.alerts != 1 else ""
    return f"at {_secs(got.at)} to {got.channel} by rule {got.rule} [{got.severity}]{flag}: {got.title!r}"


def _field_diff(exp: Expected, got: Sent) -> list[str]:
    lines: list[str] = []
    if exp.at != got.at:
        lines.append(f"    at: expected {_secs(exp.at)}, sent at {_secs(got.at)}")
    if exp.severity is not None and exp.severity != got.severity:
        lines.append(f"    severity: expected {exp.severity}, sent {got.severity}")
    if exp.resolved is not None and exp.resolved != got.resolved:
        lines.append(f"    resolved: expected {str(exp.resolved).lower()}, sent {str(got.resolved).lower()}")
    if exp.alerts is not None and exp.alerts != got.alerts:
        lines.append(f"    alerts: expected {exp.alerts} listed, sent {got.alerts}")
    if exp.labels is not None and not _has_labels(exp.labels, got):
        lines.append(f"    labels: expected {exp.labels} among them, sent {dict(got.labels)}")
    if exp.title is not None and not exp.title(got.title):
        lines.append(f"    title: expected {exp.title.shown()}")
        lines.append(f"           sent     {got.title!r}")
    if exp.body is not None and not exp.body(got.body):
        if exp.body.exact is None:
            lines.append(f"    body: expected to contain {exp.body.shown()}, sent:")
            lines.extend(f"      | {line}" for line in got.body.splitlines())
        else:
            lines.append("    body:")
            diff = difflib.unified_diff(
                exp.body.exact.splitlines(), got.body.splitlines(), "expected", "sent", lineterm="", n=2
            )
            lines.extend(f"      {line}" for line in diff)
    return lines


def compare(expected: Sequence[Expected], sent: Sequence[Sent], lines: Sequence[int]) -> list[str]:
    """What differs, as report lines (empty when the notifications are exactly the expected ones).

    ``lines`` are the file lines of the expected items, for pointing at them.
    """
    left = list(range(len(expected)))
    unused = list(range(len(sent)))
    for e in list(left):
        hit = next((s for s in unused if _matches(expected[e], sent[s])), None)
        if hit is not None:
            left.remove(e)
            unused.remove(hit)
    out: list[str] = []
    for e in list(left):  # the same rule and channel, nearest in time: show how it differs
        exp = expected[e]
        near = [s for s in unused if (sent[s].rule, sent[s].channel) == (exp.rule, exp.channel)]
        if not near:
            continue
        hit = min(near, key=lambda s: abs(sent[s].at - exp.at))
        left.remove(e)
        unused.remove(hit)
        out.append(f"  differs (expected at line {lines[e]}): {_describe(sent[hit])}")
        out.extend(_field_diff(exp, sent[hit]))
    for e in left:
        exp = expected[e]
        out.append(
            f"  missing (expected at line {lines[e]}): at {_secs(exp.at)} to {exp.channel} by rule {exp.rule}"
        )
    for s in unused:
        out.append(f"  not expected: {_describe(sent[s])}")
    return out


@dataclass(slots=True)
class Outcome:
    """The totals of a test-rules run."""

    cases: int = 0
    failed: int = 0
    notifications: int = 0


def _run_file(ruleset: RuleSet, loaded: CaseFile, out: TextIO, outcome: Outcome) -> None:
    for i, case in enumerate(loaded.cases):
        outcome.cases += 1
        where = f"{loaded.path}:{loaded.line_of(i)}"
        try:
            sent = run_case(ruleset, case)
        except TooManyNotifications as exc:
            outcome.failed += 1
            print(f"FAIL {where}: {case.name}\n  stopped: {exc}", file=out)
            continue
        outcome.notifications += len(sent)
        lines = [loaded.line_of(i, "expect", j) for j in range(len(case.expect))]
        report = compare(case.expect, sent, lines)
        if report:
            outcome.failed += 1
            print(f"FAIL {where}: {case.name}", file=out)
            print("\n".join(report), file=out)


def run_test_rules(rule_files: Sequence[Path], case_files: Sequence[Path], *, out: TextIO) -> int:
    """``runwatch test-rules``: 0 when every case passes (one summary line), else 1 with what differs."""
    try:
        ruleset = load_rules(list(rule_files))
    except FileProblems as exc:
        for p in exc.problems:
            print(p, file=out)
        return 1
    problems: list[Problem] = []
    loaded: list[CaseFile] = []
    for path in case_files:
        try:
            loaded.append(load_cases(path, ruleset))
        except FileProblems as exc:
            problems.extend(exc.problems)
    if problems:
        for p in problems:
            print(p, file=out)
        return 1
    outcome = Outcome()
    for case_file in loaded:
        _run_file(ruleset, case_file, out, outcome)
    files = f"{len(ruleset)} rules in {len(ruleset.files)} files"
    if outcome.failed:
        print(
            f"FAILED: {outcome.failed} of {outcome.cases} cases ({files}, {len(loaded)} case files)", file=out
        )
        return 1
    print(
        f"OK: {outcome.cases} cases passed, {outcome.notifications} notifications as expected"
        f" ({files}, {len(loaded)} case files)",
        file=out,
    )
    return 0


def cmd_test_rules(rule_files: list[Path], cases: list[Path]) -> int:
    """``runwatch test-rules``: exit 0 when every case gets exactly the notifications it expects."""
    from runwatch.commands.test_rules import run_test_rules

    logsetup.setup("error")  # the notifications are the output; a template error shows in its body
    return run_test_rules(rule_files, cases, out=sys.stdout)
