"""Titles and bodies: rule templates, rendered in a sandbox, and the defaults used without one.

Rule files are written by operators, but the values rendered into them come from provider APIs, so
templates run in Jinja2's immutable sandbox: no access to dunder attributes, no mutating the run.
An unsafe access raises (instead of Jinja's default of rendering nothing) so the alert says why its
text is missing. Rendering never raises: a failing template falls back to the default text and says so
in the body, because losing an alert to a typo in a template is worse than an ugly alert.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runwatch.model import Change, ChangeKind


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, made loud: refused attribute access is an error, not an empty string."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def _finalize(value: Any) -> Any:
    # A JSON null (``run.failedReason`` of a run that did not fail) reads better as nothing than "None".
    return "" if value is None else value


_ENV = _Sandbox(autoescape=False, finalize=_finalize)

#: Names a template may use: everything ``Change.template_vars()`` gives, plus the rule's own.
TEMPLATE_VARIABLES: frozenset[str] = frozenset(
    Change(key="", kind=ChangeKind.RUN_STATUS, provider="", monitor_id="", run_id="", run={})
    .template_vars()
    .keys()
) | {"rule", "severity", "labels"}


@dataclass(frozen=True, slots=True)
class RuleTemplate:
    """A compiled template and the text it came from (for messages and debugging)."""

    source: str
    template: jinja2.Template

    def render(self, variables: Mapping[str, Any]) -> str:
        return self.template.render(variables)


def compile_template(source: str) -> RuleTemplate:
    """Compile ``source``; ValueError says what is wrong (syntax, or a variable that does not exist).

    Unknown variables are refused at load time because Jinja would render them as empty strings,
    and a typo like ``{{ monitor }}`` would otherwise only show up as a blank in a real alert.
    """
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        where = f" (template line {exc.lineno})" if "\n" in source.strip() else ""
        raise ValueError(f"template syntax error: {exc.message}{where}") from None
    unknown = sorted(meta.find_undeclared_variables(ast) - TEMPLATE_VARIABLES - set(_ENV.globals))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, sorted(TEMPLATE_VARIABLES), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(TEMPLATE_VARIABLES))
        raise ValueError(f"unknown template variable {name!r} ({hint})")
    return RuleTemplate(source, _ENV.from_string(ast))


def check_template(source: str) -> str:
    """pydantic validator form of :func:`compile_template`."""
    compile_template(source)
    return source


def template_variables(
    change: Change, *, rule: str, severity: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """Everything a title or body template sees (documented in rules/README.md)."""
    return {**change.template_vars(), "rule": rule, "severity": severity, "labels": dict(labels)}


def _what(change: Change) -> str:
    if change.kind == ChangeKind.RUN_EVENT and change.event is not None:
        return f"event {change.event.name}"
    if change.to_status:
        return f"{change.from_status} -> {change.to_status}" if change.from_status else change.to_status
    return str(change.kind)


def default_title(change: Change, severity: str) -> str:
    """One line naming provider, monitor, run and what changed.

    ``[critical] exa monitor_prod_news run mrun_1: created -> failed`` or ``... event run_complete``.
    """
    return f"[{severity}] {change.provider} {change.monitor_id} run {change.run_id}: {_what(change)}"


def default_body(change: Change) -> str:
    """A few ``key: value`` lines with the fields that matter; continuation lines are indented."""
    v = change.template_vars()
    lines = [
        f"{key}: {str(v[key]).strip()}".replace("\n", "\n  ")
        for key in ("from", "to", "event", "message", "failed_reason")
        if str(v[key]).strip()
    ]
    return "\n".join(lines) if lines else f"kind: {change.kind}"


def _error_note(rule: str, part: str, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:299] + "…"
    return f"(template error in rule {rule}: {part}: {type(exc).__name__}: {text})"


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

    A template that fails, or renders to nothing, gives way to the default text; each failure adds a
    ``(template error in rule X: ...)`` line at the end of the body and an entry in ``errors``.
    """
    errors: list[str] = []
    variables = template_variables(change, rule=rule, severity=severity, labels=labels)
    title_text = ""
    if title is not None:
        try:
            title_text = " ".join(
                line.strip() for line in title.render(variables).splitlines() if line.strip()
            )
        except Exception as exc:
            errors.append(_error_note(rule, "title", exc))
    body_text = ""
    if body is not None:
        try:
            body_text = body.render(variables).rstrip()
        except Exception as exc:
            errors.append(_error_note(rule, "body", exc))
    title_text = title_text or default_title(change, severity)
    body_text = "\n".join([body_text or default_body(change), *errors])
    return title_text, body_text, tuple(errors)
