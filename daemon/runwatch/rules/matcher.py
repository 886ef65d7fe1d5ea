"""A rule's ``match:`` block, compiled once at load time into one cheap predicate.

The daemon asks every rule about every change, so globs become one anchored regex per key, value
lists become frozensets, and the checks run cheapest first. A ``fields`` path is resolved once, here:
its namespace (``run.``, ``event.``, ``monitor.``, ``change.``) becomes a getter, its operators one
predicate, so matching a change does no string work on the path.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runwatch.model import Change, ChangeKind
from runwatch.rules.schema import FieldOps, MatchSpec


def compile_globs(globs: Sequence[str]) -> re.Pattern[str]:
    """fnmatch globs (case-sensitive, ``*`` also crosses ``/``) -> one regex to ``.match()``."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


class _Missing:
    """The value at a path that is not there (distinct from a JSON ``null``)."""

    def __repr__(self) -> str:
        return "MISSING"


_MISSING = _Missing()


def lookup(root: Any, path: Sequence[str]) -> Any:
    """Follow a dotted path into a raw object; list items by index (``steps.0.name``, ``steps.-1``)."""
    node = root
    for part in path:
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str | bytes):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        else:
            return _MISSING
    return node


def as_text(value: Any) -> str | None:
    """The string a ``fields`` regex or glob is searched in (and a string ``eq`` compares to), as the
    value reads in the API's JSON.

    ``str()`` for strings and numbers; ``true``/``false`` for booleans (what the user sees in the
    JSON, not Python's ``True``); JSON for objects and lists; None (no match) for a missing or null value.
    """
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


# --- ``fields``: where a path points, and what a condition asks of the value there ------------------------

#: First parts of a ``fields`` path that name an object other than the raw run.
NAMESPACES: tuple[str, ...] = ("run", "event", "monitor", "change")

#: Kinds whose ``failing_for`` means something (elsewhere it is 0.0, which reads as missing).
_FAILING_FOR_KINDS = frozenset({ChangeKind.RUN_STUCK, ChangeKind.SOURCE_ERROR, ChangeKind.MONITOR_MISSED_RUN})

#: ``change.<name>``: the change's own fields, as a template sees them (``from``, not ``from_status``).
CHANGE_FIELDS: dict[str, Callable[[Change], Any]] = {
    "from": lambda c: c.from_status,
    "to": lambda c: c.to_status,
    "failed_reason": lambda c: c.failed_reason,
    "failing_for": lambda c: c.failing_for if c.kind in _FAILING_FOR_KINDS else None,
    "provider": lambda c: c.provider,
    "monitor_id": lambda c: c.monitor_id,
    "run_id": lambda c: c.run_id,
    "kind": lambda c: c.kind.value,
    "event": lambda c: c.event.name if c.event is not None else None,
}


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A ``fields`` key split once: the object it starts from and the keys to follow in it."""

    namespace: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, path: str) -> FieldPath:
        """``run.a.b``, ``event.x``, ``monitor.x``, ``change.to``; any other path is into the raw run."""
        parts = tuple(path.split("."))
        if parts[0] in NAMESPACES:
            return cls(parts[0], parts[1:])
        return cls("run", parts)

    def problem(self) -> str | None:
        """Why the path can never point at anything (a ``change.`` field that does not exist), if so."""
        if self.namespace != "change":
            return None
        known = ", ".join(f"change.{name}" for name in CHANGE_FIELDS)
        if not self.parts:
            return f"name a field of the change ({known})"
        if self.parts[0] not in CHANGE_FIELDS:
            return f"{'change.' + self.parts[0]!r} is not a field of the change (known: {known})"
        if len(self.parts) > 1:
            return f"change.{self.parts[0]} is a plain value: it has no {self.parts[1]!r} inside"
        return None

    def getter(self) -> Callable[[Change], Any]:
        """The function that reads this path's value from a change (MISSING when it is not there)."""
        parts = self.parts
        if self.namespace == "change":
            read = CHANGE_FIELDS[parts[0]]
            # An empty id (a source.error has no monitor or run) reads as missing, like a null.
            return lambda c: _MISSING if (v := read(c)) is None or v == "" else v
        if self.namespace == "event":
            return lambda c: _event_value(c, parts)
        if self.namespace == "monitor":
            if not parts:
                return lambda c: c.monitor or _MISSING
            return lambda c: lookup(c.monitor, parts)
        if not parts:
            return lambda c: c.run or _MISSING
        if len(parts) == 1:
            key = parts[0]
            return lambda c: c.run.get(key, _MISSING) if isinstance(c.run, Mapping) else _MISSING
        return lambda c: lookup(c.run, parts)


def _event_value(change: Change, parts: tuple[str, ...]) -> Any:
    event = change.event
    if event is None:
        return _MISSING
    if not parts:
        return event.raw or _MISSING
    found = lookup(event.raw, parts)
    if found is _MISSING and parts == ("error",):
        # ``event.error``: an AgentLogEvent keeps its error inside the step object (or says it only by
        # a failed status or the step's name); the error runwatch read from it stands in.
        return event.error if event.error else _MISSING
    return found


#: A number written as text ("42", "-1.5", "1e3"): what gt/gte/lt/lte (and a numeric eq) read in a string.
_NUMERIC = re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$")
_INTEGER = re.compile(r"^\s*[-+]?\d+\s*$")


def as_number(value: Any) -> int | float | None:
    """The number a value is (JSON numbers, and strings that are a number), else None; never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and len(value) < 400 and _NUMERIC.match(value):
        return int(value) if _INTEGER.match(value) else float(value)
    return None


Condition = Callable[[Any], bool]


def _present(value: Any) -> bool:
    return value is not _MISSING and value is not None


def _equals(operand: Any) -> Condition:
    if operand is None:
        return lambda v: v is _MISSING or v is None
    if isinstance(operand, bool):
        return lambda v: isinstance(v, bool) and v is operand
    if isinstance(operand, int | float):
        return lambda v: (n := as_number(v)) is not None and n == operand
    text = str(operand)
    return lambda v: as_text(v) == text


def _one_of(operands: Sequence[Any]) -> Condition:
    texts = frozenset(o for o in operands if isinstance(o, str))
    numbers = frozenset(o for o in operands if isinstance(o, int | float) and not isinstance(o, bool))
    bools = frozenset(o for o in operands if isinstance(o, bool))
    null = any(o is None for o in operands)

    def check(v: Any) -> bool:
        if v is _MISSING or v is None:
            return null
        if isinstance(v, bool) and v in bools:
            return True
        if numbers and (n := as_number(v)) is not None and n in numbers:
            return True
        return bool(texts) and as_text(v) in texts

    return check


def _compare(op: str, operand: int | float) -> Condition:
    if op == "gt":
        return lambda v: (n := as_number(v)) is not None and n > operand
    if op == "gte":
        return lambda v: (n := as_number(v)) is not None and n >= operand
    if op == "lt":
        return lambda v: (n := as_number(v)) is not None and n < operand
    return lambda v: (n := as_number(v)) is not None and n <= operand


def _negate(check: Condition) -> Condition:
    return lambda v: not check(v)


def _searched(rx: re.Pattern[str]) -> Condition:
    return lambda v: (t := as_text(v)) is not None and rx.search(t) is not None


def _whole(rx: re.Pattern[str]) -> Condition:
    return lambda v: (t := as_text(v)) is not None and rx.match(t) is not None


def _presence(want: bool) -> Condition:
    return lambda v: _present(v) is want


def compile_condition(ops: FieldOps) -> Condition:
    """One predicate on a value for every operator given (all must hold); see rules/README.md."""
    checks: list[Condition] = []
    for op in sorted(ops.model_fields_set):
        if op == "eq":
            checks.append(_equals(ops.eq))
        elif op == "ne":
            checks.append(_negate(_equals(ops.ne)))
        elif op == "regex":
            checks.append(_searched(re.compile(ops.regex)))
        elif op == "glob":
            checks.append(_whole(compile_globs([ops.glob])))
        elif op == "in_":
            checks.append(_one_of(ops.in_ or ()))
        elif op in ("gt", "gte", "lt", "lte"):
            checks.append(_compare(op, getattr(ops, op)))
        elif op == "present":
            checks.append(_presence(bool(ops.present)))
    if len(checks) == 1:
        return checks[0]
    every = tuple(checks)
    return lambda v: all(check(v) for check in every)


def holds_when_missing(ops: FieldOps) -> bool:
    """True when the condition holds for a path that is not there (``present: false``, ``eq: null``):
    such a condition can match any kind of change, whatever object the path is in."""
    return compile_condition(ops)(_MISSING)


@dataclass(frozen=True, slots=True)
class Matcher:
    """Compiled ``match:``; ``None`` means the key was absent and matches anything."""

    kinds: frozenset[str] | None = None
    providers: frozenset[str] | None = None
    monitor: re.Pattern[str] | None = None
    from_statuses: frozenset[str] | None = None
    to_statuses: frozenset[str] | None = None
    event: re.Pattern[str] | None = None
    failed_reason: re.Pattern[str] | None = None
    message: re.Pattern[str] | None = None
    #: ``fields``: (read the value from a change, the condition on it), in the order written.
    fields: tuple[tuple[Callable[[Change], Any], Condition], ...] = ()

    @classmethod
    def from_spec(cls, spec: MatchSpec) -> Matcher:
        return cls(
            kinds=frozenset(spec.kind) if spec.kind is not None else None,
            providers=frozenset(spec.provider) if spec.provider is not None else None,
            monitor=compile_globs(spec.monitor) if spec.monitor is not None else None,
            from_statuses=frozenset(spec.from_) if spec.from_ is not None else None,
            to_statuses=frozenset(spec.to) if spec.to is not None else None,
            event=compile_globs(spec.event) if spec.event is not None else None,
            failed_reason=re.compile(spec.failed_reason) if spec.failed_reason is not None else None,
            message=re.compile(spec.message) if spec.message is not None else None,
            fields=tuple(
                (FieldPath.parse(path).getter(), compile_condition(ops))
                for path, ops in (spec.fields or {}).items()
            ),
        )

    def __call__(self, change: Change) -> bool:
        if self.kinds is not None and change.kind not in self.kinds:
            return False
        if self.providers is not None and change.provider not in self.providers:
            return False
        if self.monitor is not None and not self.monitor.match(change.monitor_id):
            return False
        return self.rest(change)

    def selects(self, provider: str, kind: str, monitor_id: str) -> bool:
        """The keys an index can decide once per provider, kind and monitor (not per change)."""
        return (
            (self.kinds is None or kind in self.kinds)
            and (self.providers is None or provider in self.providers)
            and (self.monitor is None or self.monitor.match(monitor_id) is not None)
        )

    def rest(self, change: Change) -> bool:
        """Every key but those :meth:`selects` decides: for a change already selected by an index."""
        if self.to_statuses is not None and change.to_status not in self.to_statuses:
            return False
        # A run first seen has no previous status: a rule that names ``from`` does not fire for it.
        if self.from_statuses is not None and change.from_status not in self.from_statuses:
            return False
        event = change.event
        if self.event is not None and (event is None or not self.event.match(event.name)):
            return False
        if self.message is not None and (
            event is None or not event.message or not self.message.search(event.message)
        ):
            return False
        if self.failed_reason is not None and (
            not change.failed_reason or not self.failed_reason.search(change.failed_reason)
        ):
            return False
        for read, condition in self.fields:  # noqa: SIM110 (all() over a generator is slower here)
            if not condition(read(change)):
                return False
        return True
