"""Loaded rules and what they decide about a change.

A :class:`RuleSet` is immutable: a reload builds a new one and swaps it in whole, so a change is
never matched against half of an old rule set and half of a new one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runwatch.log import get_logger
from runwatch.model import Change, ChangeKind
from runwatch.rules.lifecycle_spec import LifecycleSpec
from runwatch.rules.matcher import Matcher
from runwatch.rules.schema import RuleSpec
from runwatch.rules.templates import RuleTemplate, compile_template, render_parts
from runwatch.yamlfile import Problem

log = get_logger(__name__)

#: How many (provider, kind, monitor) rule lists a RuleSet keeps (about 100 bytes each, plus the list).
MONITOR_CACHE_SIZE = 50_000

#: Kinds the daemon's clock makes (not a poll): only rules naming them in ``kind`` see them.
TIMED_KINDS = frozenset({ChangeKind.SOURCE_ERROR, ChangeKind.RUN_STUCK, ChangeKind.MONITOR_MISSED_RUN})
#: Kinds only rules naming them in ``kind`` see: the timed ones, and the monitor's own status (a rule
#: written for runs, such as ``to: failed``, must not start alerting on a monitor).
OPT_IN_KINDS = TIMED_KINDS | {ChangeKind.MONITOR_STATUS}


@dataclass(frozen=True, slots=True)
class Decision:
    """One rule fired for one change: send ``title``/``body`` to each of ``channels``.

    ``template_errors`` is empty unless a template failed and default text was used instead
    (the body then also says so); the pipeline may count or log it.
    """

    rule: str
    severity: str
    channels: tuple[str, ...]
    labels: Mapping[str, str]
    title: str
    body: str
    change: Change
    template_errors: tuple[str, ...] = ()
    #: How ``body`` is written (text, markdown, html): channels that can format use it.
    format: str = "text"
    #: The changes a grouped notification reports (``change`` is the first); empty: just ``change``.
    group: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule ready to match: compiled matcher and templates, plus where it was defined."""

    name: str
    matcher: Matcher
    channels: tuple[str, ...]
    severity: str = "warning"
    stop: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    title: RuleTemplate | None = None
    body: RuleTemplate | None = None
    format: str = "text"
    #: The alert lifecycle keys, or None for a rule that notifies once per matching change.
    lifecycle: LifecycleSpec | None = None
    #: ``source.error`` changes match only once the provider has been failing this long.
    for_: float = 300.0
    #: ``run.stuck`` changes match only once the run has been unfinished this long since created.
    stuck_after: float = 1800.0
    #: ``monitor.missed_run`` changes match only once the scheduled run is this late.
    grace: float = 600.0
    #: ``file:line`` of the rule, for messages (``rules/prod.yaml:12``).
    source: str = ""
    #: The parts (title, body) whose failure was logged already: once per rule as loaded, not per
    #: notification (a storm of changes would otherwise be a storm of identical log lines).
    _logged_failures: set[str] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def from_spec(cls, spec: RuleSpec, *, source: str = "") -> Rule:
        return cls(
            name=spec.name,
            matcher=Matcher.from_spec(spec.match),
            channels=tuple(spec.notify),
            severity=spec.severity,
            stop=spec.stop,
            labels=dict(spec.labels),
            title=compile_template(spec.title) if spec.title is not None else None,
            body=compile_template(spec.body) if spec.body is not None else None,
            format=spec.format,
            lifecycle=spec.lifecycle(),
            for_=spec.for_,
            stuck_after=spec.stuck_after,
            grace=spec.grace,
            source=source,
        )

    def matches(self, change: Change) -> bool:
        return self.matcher(change) and self.holds(change)

    def holds(self, change: Change) -> bool:
        """The time-driven kinds match only rules that name them, once they have lasted long enough.

        (A rule written before those kinds existed, with no ``kind``, keeps its meaning.)
        """
        if change.kind not in OPT_IN_KINDS:
            return True
        if self.matcher.kinds is None:
            return False
        if change.kind not in TIMED_KINDS:
            return True
        wait = {
            ChangeKind.SOURCE_ERROR: self.for_,
            ChangeKind.RUN_STUCK: self.stuck_after,
            ChangeKind.MONITOR_MISSED_RUN: self.grace,
        }[change.kind]
        return change.failing_for >= wait

    def decide(
        self,
        change: Change,
        *,
        group: tuple[Change, ...] = (),
        more: int = 0,
        flapping: str = "",
    ) -> Decision:
        """The decision for a change this rule matched; renders the templates, never raises.

        Rendering is bounded in size and time (:mod:`runwatch.rules.sandbox`), so this stays cheap
        enough to call on the event loop whatever the rule's templates say. ``group``: a grouped
        notification of these changes (``change`` is the first); ``flapping``: ``"true"`` for the
        notification that the group is flapping, ``"ended"`` for the one that it stopped (a label).
        """
        labels = {**self.labels, "flapping": flapping} if flapping else self.labels
        title, body, failures = render_parts(
            change,
            rule=self.name,
            severity=self.severity,
            labels=labels,
            title=self.title,
            body=self.body,
            group=group,
            flapping=flapping == "true",
            more=more,
        )
        for failure in failures:
            if failure.part not in self._logged_failures:
                self._logged_failures.add(failure.part)
                log.warning(
                    "template.failed",
                    rule=self.name,
                    part=failure.part,
                    source=self.source,
                    error=f"{type(failure.error).__name__}: {' '.join(str(failure.error).split())[:300]}",
                    hint="the default text is sent instead; not logged again for this rule until a reload",
                )
        errors = tuple(f.note for f in failures)
        return Decision(
            rule=self.name,
            severity=self.severity,
            channels=self.channels,
            labels=labels,
            title=title,
            body=body,
            change=change,
            template_errors=errors,
            format=self.format,
            group=group,
        )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules in evaluation order (files in the order given, rules in file order).

    Rules are indexed by the provider and kind they can match, then by monitor id (their ``monitor``
    globs), so a change is only asked of the rules that could take it (in their order): 1,000 rules
    cost what the few that apply cost.
    """

    rules: tuple[Rule, ...] = ()
    files: tuple[Path, ...] = ()
    #: What ``runwatch check`` prints as ``warning:`` lines: keys that change nothing for their rule.
    warnings: tuple[Problem, ...] = ()
    _index: dict[tuple[str, str], tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    #: (provider, kind, monitor id) -> the candidates whose monitor globs take that monitor: a
    #: monitor's changes skip the glob of every rule; bounded (cleared when full).
    _by_monitor: dict[tuple[str, str, str], tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def candidates(self, provider: str, kind: str) -> tuple[Rule, ...]:
        """The rules that can match a change of this provider and kind, in evaluation order."""
        found = self._index.get((provider, kind))
        if found is None:
            found = tuple(
                r
                for r in self.rules
                if (r.matcher.providers is None or provider in r.matcher.providers)
                and (r.matcher.kinds is None or kind in r.matcher.kinds)
            )
            self._index[(provider, kind)] = found
        return found

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def match(self, change: Change) -> list[Decision]:
        """Every rule that matches fires, in order, until one with ``stop: true`` has fired."""
        out: list[Decision] = []
        key = (change.provider, change.kind.value, change.monitor_id)
        rules = self._by_monitor.get(key)
        if rules is None:
            rules = tuple(r for r in self.candidates(key[0], key[1]) if r.matcher.selects(*key))
            if len(self._by_monitor) >= MONITOR_CACHE_SIZE:
                self._by_monitor.clear()
            self._by_monitor[key] = rules
        for rule in rules:
            if rule.matcher.rest(change) and rule.holds(change):
                out.append(rule.decide(change))
                if rule.stop:
                    break
        return out
