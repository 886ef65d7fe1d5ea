"""Loaded rules and what they decide about a change.

A :class:`RuleSet` is immutable: a reload builds a new one and swaps it in whole, so a change is
never matched against half of an old rule set and half of a new one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runwatch.model import Change
from runwatch.rules.matcher import Matcher
from runwatch.rules.schema import RuleSpec
from runwatch.rules.templates import RuleTemplate, compile_template, render_texts


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
    #: ``file:line`` of the rule, for messages (``rules/prod.yaml:12``).
    source: str = ""

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
            source=source,
        )

    def matches(self, change: Change) -> bool:
        return self.matcher(change)

    def decide(self, change: Change) -> Decision:
        """The decision for a change this rule matched; renders the templates, never raises."""
        title, body, errors = render_texts(
            change,
            rule=self.name,
            severity=self.severity,
            labels=self.labels,
            title=self.title,
            body=self.body,
        )
        return Decision(
            rule=self.name,
            severity=self.severity,
            channels=self.channels,
            labels=self.labels,
            title=title,
            body=body,
            change=change,
            template_errors=errors,
            format=self.format,
        )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules in evaluation order (files in the order given, rules in file order)."""

    rules: tuple[Rule, ...] = ()
    files: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def match(self, change: Change) -> list[Decision]:
        """Every rule that matches fires, in order, until one with ``stop: true`` has fired."""
        out: list[Decision] = []
        for rule in self.rules:
            if rule.matcher(change):
                out.append(rule.decide(change))
                if rule.stop:
                    break
        return out
