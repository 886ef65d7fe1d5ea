"""Titles and bodies: rule templates, rendered in a bounded sandbox, and the defaults used without one.

Rule files are written by operators, but the values rendered into them come from provider APIs, so
templates run in Jinja2's immutable sandbox: no access to dunder attributes, no mutating the run.
An unsafe access raises (instead of Jinja's default of rendering nothing) so the alert says why its
text is missing. The sandbox also bounds size and time (:mod:`runwatch.rules.sandbox`), because
rendering happens on the daemon's event loop. Rendering never raises: a failing template falls back to
the default text and says so in the body, because losing an alert to a typo in a template is worse
than an ugly alert.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta

from runwatch.model import Change, ChangeKind
from runwatch.rules.group_text import group_body, group_title
from runwatch.rules.sandbox import (
    DEFAULT_LIMITS,
    Limits,
    SandboxEnvironment,
    TemplateLimitError,
    guard,
    refuse_at_load,
    render_bounded,
    standalone_problem,
)

_ENV = SandboxEnvironment()

#: A title longer than this (after its lines are joined) is cut and ends with "…".
TITLE_LIMIT = 1024
#: A body longer than this is cut and ends with a line saying so (:data:`BODY_CUT`).
BODY_LIMIT = 65536
BODY_CUT = f"[… cut: a notification body is limited to {BODY_LIMIT} characters]"

#: Names a template may use: everything ``Change.template_vars()`` gives, plus the rule's own, plus
#: ``alerts`` (the changes a notification reports: several for a grouped one) and ``flapping``.
TEMPLATE_VARIABLES: frozenset[str] = frozenset(
    Change(key="", kind=ChangeKind.RUN_STATUS, provider="", monitor_id="", run_id="", run={})
    .template_vars()
    .keys()
) | {"rule", "severity", "labels", "alerts", "flapping"}


@dataclass(frozen=True, slots=True)
class RuleTemplate:
    """A compiled template, the text it came from, and the limits it renders under."""

    source: str
    template: jinja2.Template
    limits: Limits = field(default=DEFAULT_LIMITS, compare=False)

    def render(self, variables: Mapping[str, Any], *, max_chars: int = BODY_LIMIT) -> str:
        """At most ``max_chars`` + 1 characters (one more than allowed means "cut"); raises on failure."""
        return render_bounded(self.template, variables, self.limits, max_chars)


def _where(source: str, lineno: int | None) -> str:
    return f" (template line {lineno})" if lineno is not None and "\n" in source.strip() else ""


def compile_template(source: str, *, limits: Limits = DEFAULT_LIMITS) -> RuleTemplate:
    """Compile ``source``; ValueError says what is wrong (syntax, a variable that does not exist, a limit).

    Unknown variables are refused at load time because Jinja would render them as empty strings,
    and a typo like ``{{ monitorid }}`` would otherwise only show up as a blank in a real alert.
    Constant expressions over a limit (``{{ 'x' * 200000000 }}``) are refused here too, and nothing
    is computed while compiling, so loading is fast whatever the template says.
    """
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error: {exc.message}{_where(source, exc.lineno)}") from None
    unknown = sorted(meta.find_undeclared_variables(ast) - TEMPLATE_VARIABLES - set(_ENV.globals))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, sorted(TEMPLATE_VARIABLES), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(TEMPLATE_VARIABLES))
        raise ValueError(f"unknown template variable {name!r} ({hint})")
    if (problem := standalone_problem(ast)) is not None:
        raise ValueError(problem)
    try:
        refuse_at_load(ast, _ENV, limits)
    except TemplateLimitError as exc:
        raise ValueError(f"over a template limit: {exc}{_where(source, exc.lineno)}") from None
    return RuleTemplate(source, _ENV.from_string(guard(ast)), limits)


def check_template(source: str) -> str:
    """pydantic validator form of :func:`compile_template`."""
    compile_template(source)
    return source


def template_variables(
    change: Change,
    *,
    rule: str,
    severity: str,
    labels: Mapping[str, str],
    group: Sequence[Change] = (),
    flapping: bool = False,
) -> dict[str, Any]:
    """Everything a title or body template sees (documented in rules/README.md).

    ``alerts`` lists the single-change variables of every change the notification reports: one item
    for a notification about one change, so one template serves grouped and single notifications; the
    other variables are those of ``change`` (the first of a group).
    """
    return {
        **change.template_vars(),
        "rule": rule,
        "severity": severity,
        "labels": dict(labels),
        "alerts": [c.template_vars() for c in (group or (change,))],
        "flapping": flapping,
    }


def _what(change: Change) -> str:
    if change.kind == ChangeKind.SOURCE_ERROR:
        return f"cannot be polled for {change.failing_for:.0f}s: {change.failed_reason or 'error'}"
    if change.kind == ChangeKind.RUN_EVENT and change.event is not None:
        return f"event {change.event.name}"
    if change.to_status:
        return f"{change.from_status} -> {change.to_status}" if change.from_status else change.to_status
    return str(change.kind)


def default_title(change: Change, severity: str) -> str:
    """One line naming provider, monitor, run and what changed.

    ``[critical] exa monitor_prod_news run mrun_1: created -> failed`` or ``... event run_complete``.
    """
    if change.kind == ChangeKind.SOURCE_ERROR:
        return f"[{severity}] {change.provider} {_what(change)}"
    if change.kind == ChangeKind.MONITOR_MISSED_RUN:
        due = change.template_vars()["due_at"]
        late = f"{change.failing_for:.0f}s late"
        return f"[{severity}] {change.provider} monitor {change.monitor_id}: run due {due} missed ({late})"
    if change.kind == ChangeKind.MONITOR_STATUS:
        return f"[{severity}] {change.provider} monitor {change.monitor_id}: {_what(change)}"
    return f"[{severity}] {change.provider} {change.monitor_id} run {change.run_id}: {_what(change)}"


def default_body(change: Change) -> str:
    """A few ``key: value`` lines with the fields that matter; continuation lines are indented."""
    v = change.template_vars()
    lines = [
        f"{key}: {str(v[key]).strip()}".replace("\n", "\n  ")
        for key in ("from", "to", "event", "message", "failed_reason", "due_at")
        if str(v[key]).strip()
    ]
    return "\n".join(lines) if lines else f"kind: {change.kind}"


def _error_note(rule: str, part: str, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:299] + "…"
    return f"(template error in rule {rule}: {part}: {type(exc).__name__}: {text})"


def cut_title(title: str) -> str:
    """A title within :data:`TITLE_LIMIT` characters; a cut one ends with "…"."""
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"


def cut_body(body: str) -> str:
    """A body within :data:`BODY_LIMIT` characters, plus a last line saying so when it was cut."""
    return body if len(body) <= BODY_LIMIT else body[:BODY_LIMIT].rstrip() + "\n" + BODY_CUT


@dataclass(frozen=True, slots=True)
class RenderFailure:
    """One template that failed: which part, the exception, and the note added to the body."""

    part: str
    error: Exception
    note: str


def render_parts(
    change: Change,
    *,
    rule: str,
    severity: str,
    labels: Mapping[str, str],
    title: RuleTemplate | None,
    body: RuleTemplate | None,
    group: Sequence[Change] = (),
    flapping: bool = False,
    more: int = 0,
) -> tuple[str, str, tuple[RenderFailure, ...]]:
    """(title, body, failures) for one matched rule; never raises (see :func:`render_texts`).

    With ``group`` (a grouped notification, ``change`` its first), the defaults are the group's.
    """
    failures: list[RenderFailure] = []
    variables = template_variables(
        change, rule=rule, severity=severity, labels=labels, group=group, flapping=flapping
    )
    title_text = ""
    if title is not None:
        try:
            title_text = " ".join(
                line.strip() for line in title.render(variables).splitlines() if line.strip()
            )
        except Exception as exc:
            failures.append(RenderFailure("title", exc, _error_note(rule, "title", exc)))
    body_text = ""
    if body is not None:
        try:
            raw = body.render(variables)
            body_text = raw.rstrip() if len(raw) <= BODY_LIMIT else cut_body(raw)
        except Exception as exc:
            failures.append(RenderFailure("body", exc, _error_note(rule, "body", exc)))
    if len(group) > 1 or more:
        title_text = cut_title(title_text or group_title(group, severity, rule, more))
        body_text = "\n".join([cut_body(body_text or group_body(group, more)), *(f.note for f in failures)])
        return title_text, body_text, tuple(failures)
    title_text = cut_title(title_text or default_title(change, severity))
    body_text = "\n".join([cut_body(body_text or default_body(change)), *(f.note for f in failures)])
    return title_text, body_text, tuple(failures)


def render_texts(
    change: Change,
    *,
    rule: str,
    severity: str,
    labels: Mapping[str, str],
    title: RuleTemplate | None,
    body: RuleTemplate | None,
) -> tuple[str, str, tuple[str, ...]]:
    """(title, body, errors) for one matched rule; never raises.

    A template that fails (an error, or a limit of :mod:`runwatch.rules.sandbox`), or renders to
    nothing, gives way to the default text; each failure adds a ``(template error in rule X: ...)``
    line at the end of the body and an entry in ``errors``. A title over :data:`TITLE_LIMIT` or a body
    over :data:`BODY_LIMIT` characters is cut, and says so.
    """
    title_text, body_text, failures = render_parts(
        change, rule=rule, severity=severity, labels=labels, title=title, body=body
    )
    return title_text, body_text, tuple(f.note for f in failures)
