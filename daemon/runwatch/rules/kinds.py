"""Which match keys can hold for which change kinds, and what a rule whose keys cannot hold gets told.

pydantic checks each value on its own (``to: paused`` is a status); whether a rule as a whole can
ever match needs the rule's ``kind`` in view: ``to: paused`` never matches a ``run.status`` change,
``event:`` nothing but a ``run.event`` one. Such a rule loads fine and then never fires, silently,
so ``runwatch check`` (and the daemon's load) refuses it, naming the key and the kinds.

Keys that work but have no effect for the rule's kinds (``stuck_after`` on a ``run.status`` rule,
``threshold: {count: 1}``) are warnings: the rule still does what it says.

The table here is the one in rules/README.md ("Which keys apply to which kind").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runwatch.durations import format_duration
from runwatch.model import MONITOR_STATUSES, RUN_STATUSES, ChangeKind
from runwatch.rules.matcher import FieldPath, holds_when_missing
from runwatch.rules.ruleset import OPT_IN_KINDS
from runwatch.rules.schema import RuleSpec

RS, RE, ST, SE, MS, MM = (
    ChangeKind.RUN_STATUS.value,
    ChangeKind.RUN_EVENT.value,
    ChangeKind.RUN_STUCK.value,
    ChangeKind.SOURCE_ERROR.value,
    ChangeKind.MONITOR_STATUS.value,
    ChangeKind.MONITOR_MISSED_RUN.value,
)
#: In the order ChangeKind lists them (messages name kinds in this order).
ALL_KINDS: tuple[str, ...] = tuple(k.value for k in ChangeKind)
#: What a rule that names no ``kind`` sees: the time-driven kinds and monitor.status only reach rules
#: that name them.
UNNAMED_KINDS: frozenset[str] = frozenset(ALL_KINDS) - {k.value for k in OPT_IN_KINDS}

_RUN = frozenset({RS, RE, ST})
_MONITOR = frozenset(ALL_KINDS) - {SE}
_FROM = frozenset({RS, RE, ST, MS})
_TO = frozenset({RS, MS})
_FAILED_REASON = frozenset({RS, RE, SE, MS})


@dataclass(frozen=True, slots=True)
class Applies:
    """The kinds a key can hold for, and how to say what the other kinds lack."""

    kinds: frozenset[str]
    #: "an event": only run.event changes have an event.
    have: str
    #: "no event": a run.status change has no event.
    lack: str


_KEYS: dict[str, Applies] = {
    "from": Applies(_FROM, "a previous status", "no previous status"),
    "to": Applies(_TO, "a new status", "no new status"),
    "event": Applies(frozenset({RE}), "an event", "no event"),
    "message": Applies(frozenset({RE}), "a message", "no message"),
    "failed_reason": Applies(_FAILED_REASON, "a failure reason", "no failure reason"),
}
_NAMESPACES: dict[str, Applies] = {
    "run": Applies(_RUN, "a run", "no run"),
    "event": Applies(frozenset({RE}), "an event", "no event"),
    "monitor": Applies(_MONITOR, "a monitor", "no monitor"),
}
_CHANGE_FIELDS: dict[str, Applies] = {
    "from": _KEYS["from"],
    "to": _KEYS["to"],
    "failed_reason": _KEYS["failed_reason"],
    "failing_for": Applies(frozenset({ST, SE, MM}), "failing_for", "no failing_for"),
    "event": _KEYS["event"],
    "run_id": Applies(_RUN, "a run", "no run"),
    "monitor_id": Applies(_MONITOR, "a monitor", "no monitor"),
}
#: The kinds a status can be the ``from``/``to`` of.
_STATUS_KINDS: dict[str, dict[str, frozenset[str]]] = {
    "from": {
        s: (frozenset({RS, RE, ST}) if s in RUN_STATUSES else frozenset())
        | (frozenset({MS}) if s in MONITOR_STATUSES else frozenset())
        for s in (*RUN_STATUSES, *MONITOR_STATUSES)
    },
    "to": {
        s: (frozenset({RS}) if s in RUN_STATUSES else frozenset())
        | (frozenset({MS}) if s in MONITOR_STATUSES else frozenset())
        for s in (*RUN_STATUSES, *MONITOR_STATUSES)
    },
}
#: Rule keys that only the time-driven (or monitor) kinds use: (field name, key as written, kind).
_KIND_KEYS: tuple[tuple[str, str, str], ...] = (
    ("for_", "for", SE),
    ("stuck_after", "stuck_after", ST),
    ("grace", "grace", MM),
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem with one rule: ``loc`` is the path inside the rule (``("match", "to", 1)``)."""

    loc: tuple[str | int, ...]
    message: str
    warning: bool = False


def _ordered(kinds: Iterable[str]) -> list[str]:
    wanted = set(kinds)
    return [k for k in ALL_KINDS if k in wanted]


def _join(items: list[str], word: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _only(kinds: frozenset[str], what: str) -> str:
    return f"only {_join(_ordered(kinds), 'and')} changes have {what}"


def _lacking(applies: Applies, named: frozenset[str]) -> str:
    """Why: the positive form when it is short, else what the named kinds lack."""
    if len(applies.kinds) <= 3:
        return _only(applies.kinds, applies.have)
    lacking = _ordered(named - applies.kinds)
    if len(lacking) == 1:
        return f"a {lacking[0]} change has {applies.lack}"
    return f"{_join(lacking, 'and')} changes have {applies.lack}"


def _never(named: frozenset[str], explicit: bool, why: str) -> str:
    if explicit:
        return f"never matches a {_join(_ordered(named), 'or')} change ({why})"
    seen = _join(_ordered(named), "and")
    return f"never matches any change this rule sees (with no kind, it sees {seen} changes; {why})"


def _status_values(spec: RuleSpec, raw_match: Any, key: str) -> list[tuple[tuple[str | int, ...], str]]:
    """Each status of ``from``/``to`` with where it is: ``to: x`` at ("to",), a list's items by index."""
    values = (spec.match.from_ if key == "from" else spec.match.to) or ()
    written = raw_match.get(key) if isinstance(raw_match, Mapping) else None
    if isinstance(written, list | tuple):
        return [((key, i), v) for i, v in enumerate(values)]
    return [((key,), v) for v in values]


def _match_keys(spec: RuleSpec, raw_match: Any) -> list[tuple[tuple[str | int, ...], str, Applies]]:
    """Each key that narrows the kinds, in the order written: (loc in match, how to name it, Applies)."""
    m = spec.match
    given: dict[str, bool] = {
        "from": m.from_ is not None,
        "to": m.to is not None,
        "event": m.event is not None,
        "message": m.message is not None,
        "failed_reason": m.failed_reason is not None,
    }
    order = [str(k) for k in raw_match] if isinstance(raw_match, Mapping) else []
    order += [k for k in (*given, "fields") if k not in order]
    out: list[tuple[tuple[str | int, ...], str, Applies]] = []
    for key in order:
        if given.get(key):
            out.append(((key,), f"match.{key}", _KEYS[key]))
        elif key == "fields":
            for path, ops in (m.fields or {}).items():
                fp = FieldPath.parse(path)
                if fp.problem() is not None or holds_when_missing(ops):
                    continue
                if fp.namespace == "change":
                    applies = _CHANGE_FIELDS.get(fp.parts[0])
                    if applies is None:
                        continue
                else:
                    applies = _NAMESPACES[fp.namespace]
                out.append((("fields", path), f"match.fields.{path}", applies))
    return out


def match_findings(spec: RuleSpec, raw_match: Any) -> list[Finding]:
    """Every match key that can never hold for the kinds the rule can see (alone or with the others)."""
    findings: list[Finding] = []
    for path in spec.match.fields or {}:
        if (problem := FieldPath.parse(path).problem()) is not None:
            findings.append(Finding(("match", "fields", path), problem))
    explicit = spec.match.kind is not None
    named = frozenset(spec.match.kind) if spec.match.kind is not None else UNNAMED_KINDS
    possible = named
    narrowed_by: list[str] = []  # the keys (as named in messages) that narrowed ``possible`` so far
    for loc, name, applies in _match_keys(spec, raw_match):
        if not applies.kinds & named:
            why = _lacking(applies, named)
            findings.append(Finding(("match", *loc), _never(named, explicit, why)))
            continue
        kinds, what = applies.kinds, applies.have
        if loc[0] in _STATUS_KINDS:
            table = _STATUS_KINDS[str(loc[0])]
            values = _status_values(spec, raw_match, str(loc[0]))
            bad = False
            for where, status in values:
                fits = table.get(status, frozenset())
                if fits and not fits & named:
                    sort = "monitor" if status in MONITOR_STATUSES else "run"
                    findings.append(
                        Finding(
                            ("match", *where),
                            _never(named, explicit, f"{status!r} is a {sort} status: {_only(fits, 'it')}"),
                        )
                    )
                    bad = True
            if bad:
                continue
            kinds = frozenset().union(*(table.get(s, frozenset()) for _, s in values)) or kinds
            what = f"{loc[0]}: {', '.join(s for _, s in values)}"
        if not kinds & possible:
            others = _join(narrowed_by, "and")
            findings.append(
                Finding(
                    ("match", *loc),
                    f"never matches together with {others} ({others} only "
                    f"match{'es' if len(narrowed_by) == 1 else ''} {_join(_ordered(possible), 'or')} "
                    f"changes; {_only(kinds, what)})",
                )
            )
            continue
        if not possible <= kinds:
            possible = possible & kinds
            narrowed_by.append(name)
    return findings


def rule_warnings(spec: RuleSpec) -> list[Finding]:
    """Keys that change nothing for this rule: it works, but not as its author seems to think."""
    out: list[Finding] = []
    named = frozenset(spec.match.kind) if spec.match.kind is not None else UNNAMED_KINDS
    for field, key, kind in _KIND_KEYS:
        if field in spec.model_fields_set and kind not in named:
            if spec.match.kind is None:
                why = f"this rule names no kind, so it never sees {kind} changes (add kind: {kind})"
            else:
                why = f"this rule's kind is {_join(_ordered(named), 'and')}"
            out.append(Finding((key,), f"has no effect: only {kind} changes use it, and {why}", warning=True))
    threshold = spec.threshold
    if threshold is not None and threshold.count == 1:
        out.append(
            Finding(
                ("threshold", "count"),
                f"1 fires on the first match, so within ({format_duration(threshold.within)}) has no effect",
                warning=True,
            )
        )
    return out


def rule_findings(spec: RuleSpec, raw: Any) -> list[Finding]:
    """Errors then warnings for one validated rule; ``raw`` is the rule as written (for where things are)."""
    raw_match = raw.get("match") if isinstance(raw, Mapping) else None
    return [*match_findings(spec, raw_match), *rule_warnings(spec)]
