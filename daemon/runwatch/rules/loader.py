"""Rule files -> :class:`RuleSet`, or every problem in every file at once.

``runwatch check`` and the daemon's (re)load both call :func:`load_rules`, so what ``check`` accepts
is exactly what the daemon runs. Each rule is validated on its own: one broken rule does not hide
the problems (or the duplicate name) of the next one.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runwatch import yamlfile
from runwatch.rules.kinds import rule_findings
from runwatch.rules.ruleset import Rule, RuleSet
from runwatch.rules.schema import CHANNELS_CONTEXT, FIELD_OPERATORS, MatchSpec, RuleSpec
from runwatch.yamlfile import FileProblems, Problem


def display_path(path: Path, root: Path | None) -> str:
    """``path`` as a user reads it in messages: relative to ``root`` when it is inside it."""
    if root is not None:
        for p, r in ((path, root), (path.resolve(), root.resolve())):
            try:
                return str(p.relative_to(r))
            except ValueError:
                continue
    return str(path)


_FILE_KEYS = ("rules",)
_RULE_KEYS = tuple(f.alias or name for name, f in RuleSpec.model_fields.items())
_MATCH_KEYS = tuple(f.alias or name for name, f in MatchSpec.model_fields.items())
_UNKNOWN_AT = re.compile(r"^(?:(?P<rule>rules\[\d+\])(?P<match>\.match)?\.)?(?P<key>[^.\[\]]+)$")
#: An unknown key inside a ``fields`` condition is an operator (the path itself may hold dots).
_UNKNOWN_OPERATOR = re.compile(r"^rules\[\d+\]\.match\.fields\..+\.(?P<op>[^.]+)$")


def _with_hint(problem: Problem) -> Problem:
    """Add a hint to an unknown key: the key it looks like, or that matchers go under ``match:``."""
    if problem.message == "unknown key" and (op := _UNKNOWN_OPERATOR.match(problem.field)):
        close = difflib.get_close_matches(op["op"], FIELD_OPERATORS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"operators: {', '.join(FIELD_OPERATORS)}"
        return dataclasses.replace(problem, message=f"unknown operator {op['op']!r} ({hint})")
    m = _UNKNOWN_AT.match(problem.field) if problem.message == "unknown key" else None
    if m is None:
        return problem
    key = m["key"]
    known = _MATCH_KEYS if m["match"] else _RULE_KEYS if m["rule"] else _FILE_KEYS
    if m["rule"] and not m["match"] and key in _MATCH_KEYS:
        hint = f"put it under {m['rule']}.match"
    elif close := difflib.get_close_matches(key, known, n=1, cutoff=0.75):
        hint = f"did you mean {close[0]!r}?"
    else:
        return problem
    return dataclasses.replace(problem, message=f"unknown key ({hint})")


def _rule_items(root: Any, shown: str, problems: list[Problem]) -> list[Any]:
    """The ``rules`` list of a parsed file; anything else about the top level is a problem."""
    if root is None:  # an empty file (or only comments) has no rules, and that is fine
        return []
    if not isinstance(root, dict):
        problems.append(Problem(shown, 1, "", "expected a mapping with a 'rules' list at the top level"))
        return []
    for key in root:
        if key != "rules":
            problems.append(Problem(shown, yamlfile.line_of(root, [str(key)]), str(key), "unknown key"))
    if "rules" not in root:
        problems.append(Problem(shown, 1, "rules", "required key is missing"))
        return []
    items = root["rules"]
    if items is None:  # ``rules:`` with every rule commented out
        return []
    if not isinstance(items, list):
        problems.append(
            Problem(shown, yamlfile.line_of(root, ["rules"]), "rules", "expected a list of rules")
        )
        return []
    return items


def load_rules(
    files: Sequence[Path],
    *,
    channels: Collection[str] | None = None,
    display_root: Path | None = None,
) -> RuleSet:
    """Load ``files`` in order into one RuleSet; raise FileProblems listing every problem found.

    ``channels``, when given, are the configured channel names: a rule notifying any other is an error.
    Paths in messages are relative to ``display_root`` when given. A rule that loads but has a key
    with no effect (:func:`runwatch.rules.kinds.rule_warnings`) is kept, its Problem in ``warnings``.
    """
    context = {CHANNELS_CONTEXT: frozenset(channels) if channels is not None else None}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    rules: list[Rule] = []
    first_seen: dict[str, str] = {}  # rule name -> "file:line" where it was first defined
    for path in files:
        shown = display_path(path, display_root)
        try:
            root = yamlfile.load(path, shown)
        except FileProblems as exc:
            problems.extend(exc.problems)
            continue
        file_problems: list[Problem] = []
        file_warnings: list[Problem] = []
        for i, item in enumerate(_rule_items(root, shown, file_problems)):
            loc: tuple[str | int, ...] = ("rules", i)
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name:
                line = yamlfile.line_of(root, [*loc, "name"])
                if name in first_seen:
                    file_problems.append(
                        Problem(
                            shown,
                            line,
                            yamlfile.dotted([*loc, "name"]),
                            f"duplicate rule name {name!r} (first defined at {first_seen[name]})",
                        )
                    )
                else:
                    first_seen[name] = f"{shown}:{line}"
            try:
                spec = RuleSpec.model_validate(yamlfile.plain(item), context=context)
            except ValidationError as exc:
                file_problems.extend(yamlfile.problems_from_validation(exc, root, shown, loc))
                continue
            findings = rule_findings(spec, item)
            for f in findings:
                at = [*loc, *f.loc]
                problem = Problem(shown, yamlfile.line_of(root, at), yamlfile.dotted(at), f.message)
                (file_warnings if f.warning else file_problems).append(problem)
            if any(not f.warning for f in findings):
                continue
            rules.append(Rule.from_spec(spec, source=f"{shown}:{yamlfile.line_of(root, loc)}"))
        problems.extend(sorted((_with_hint(p) for p in file_problems), key=lambda p: p.line))
        warnings.extend(sorted(file_warnings, key=lambda p: p.line))
    if problems:
        raise FileProblems(problems)
    return RuleSet(rules=tuple(rules), files=tuple(files), warnings=tuple(warnings))
