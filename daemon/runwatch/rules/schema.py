"""What a rule file may say, as strict pydantic models (unknown keys are errors).

The models only validate: they keep regexes, globs and templates as the strings the user wrote, so
the JSON Schema generated from them (``rules/schema.json``) describes the file as written. Compiling
them for fast matching is :mod:`runwatch.rules.matcher`'s and :mod:`runwatch.rules.templates`' job.

Values are checked here, inside pydantic, so that every problem comes back in one ValidationError with
the location pydantic knows (``match.to[1]``), which :mod:`runwatch.yamlfile` turns into a file line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from runwatch.durations import Duration
from runwatch.model import MONITOR_STATUSES, RUN_STATUSES, SEVERITIES, ChangeKind
from runwatch.rules.lifecycle_spec import GROUP_LABELS, Flapping, LifecycleSpec, Threshold
from runwatch.rules.templates import check_template
from runwatch.sources.registry import PROVIDERS as PROVIDER_SPECS

PROVIDERS: tuple[str, ...] = tuple(PROVIDER_SPECS)
KINDS: tuple[str, ...] = tuple(k.value for k in ChangeKind)
BODY_FORMATS: tuple[str, ...] = ("text", "markdown", "html")
#: What ``from``/``to`` may name: a run status (run changes) or a monitor status (monitor.status).
STATUSES: tuple[str, ...] = tuple(dict.fromkeys(RUN_STATUSES + MONITOR_STATUSES))
#: The operators of a ``fields`` condition, in the order the README lists them.
FIELD_OPERATORS: tuple[str, ...] = ("eq", "ne", "regex", "glob", "in", "gt", "gte", "lt", "lte", "present")

#: Key of the validation context that holds the configured channel names (a frozenset), if known.
CHANNELS_CONTEXT = "channels"


_GLOB_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1}
_REGEX_SCHEMA: dict[str, Any] = {"type": "string", "format": "regex"}


def _describe(value: Any) -> str:
    """How a YAML value looks to a user (not Python's type names)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


# --- value checks (each returns the value or raises ValueError with the message a user reads) ---------


def _status(value: str, info: ValidationInfo) -> str:
    # Which kind a status can match (``paused`` only a monitor.status change) is checked per rule,
    # with the rule's ``kind`` in view: runwatch.rules.kinds.
    if value not in STATUSES:
        raise ValueError(f"{value!r} is not a run or monitor status")
    return value


def _provider(value: str, info: ValidationInfo) -> str:
    if value not in PROVIDERS:
        raise ValueError(f"{value!r} is not a provider")
    return value


def _kind(value: str, info: ValidationInfo) -> str:
    if value not in KINDS:
        raise ValueError(f"{value!r} is not a change kind")
    return value


def _body_format(value: str, info: ValidationInfo) -> str:
    if value not in BODY_FORMATS:
        raise ValueError(f"{value!r} is not a body format (text, markdown or html)")
    return value


def _glob(value: str, info: ValidationInfo) -> str:
    if not value:
        raise ValueError("empty glob (use '*' to match anything, or remove the key)")
    return value


def _channel(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise ValueError("empty channel name")
    known = info.context.get(CHANNELS_CONTEXT) if isinstance(info.context, dict) else None
    if known is not None and value not in known:
        configured = ", ".join(sorted(known)) if known else "none"
        raise ValueError(f"{value!r} is not a configured channel (configured: {configured})")
    return value


def _severity(value: str) -> str:
    if value not in SEVERITIES:
        raise ValueError(f"{value!r} is not a severity")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"invalid regex {value!r}: {exc.msg}{where}") from None
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("rule name must not be empty")
    if value != value.strip():
        raise ValueError(f"rule name {value!r} has leading or trailing spaces")
    return value


def _field_paths(value: Any) -> Any:
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not all(key.split(".")):
                raise ValueError(f"{key!r} is not a dotted path into the run (e.g. metadata.team)")
    return value


# --- ``fields`` conditions: a regex string, or a mapping of operators -------------------------------------


def _operand(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise ValueError(f"expected a string, number, boolean or null, got {_describe(value)}")


def _number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value:  # NaN compares false with everything: the condition could never hold
            raise ValueError("expected a number, got .nan (which no value is greater or less than)")
        return value
    hint = f" (write {value}, without quotes)" if isinstance(value, str) and _NUMERIC.match(value) else ""
    raise ValueError(f"expected a number, got {_describe(value)}{hint}")


#: A number written as text, as a ``fields`` comparison reads it in a value ("42", "-1.5", "1e3").
_NUMERIC = re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$")


def _regex_operand(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected a regex (a string), got {_describe(value)}")
    return _regex(value)


def _glob_operand(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected a glob (a string), got {_describe(value)}")
    if not value:
        raise ValueError("empty glob (use '*' to match any value, or present: true)")
    return value


def _bool_operand(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def _operand_list(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of values, got {_describe(value)} (for one value, use eq)")
    if not value:
        raise ValueError("empty list: give at least one value")
    return value


_SCALAR_SCHEMA: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}
Operand = Annotated[Any, AfterValidator(_operand), WithJsonSchema(_SCALAR_SCHEMA)]
NumberOperand = Annotated[Any, AfterValidator(_number), WithJsonSchema({"type": "number"})]


class FieldOps(BaseModel):
    """A ``fields`` condition written as operators; every operator given must hold.

    Operands are typed here (``gt: "5"`` is an error, not a string compared to numbers), and which
    operators were given is ``model_fields_set``: ``eq: null`` is an operator, not an absent one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="FieldOperators")

    eq: Operand = Field(
        None,
        description="Equal: a string to the value's text as in the JSON, a number numerically (also a "
        "numeric string), a boolean to a boolean, null to a missing or null value.",
    )
    ne: Operand = Field(None, description="Not equal: true exactly when eq would be false.")
    regex: Annotated[Any, AfterValidator(_regex_operand), WithJsonSchema(_REGEX_SCHEMA)] = Field(
        None, description="Regex searched in the value's text; a missing or null value never matches."
    )
    glob: Annotated[Any, AfterValidator(_glob_operand), WithJsonSchema(_GLOB_SCHEMA)] = Field(
        None, description="Glob on the whole value's text (fnmatch, case-sensitive)."
    )
    in_: Annotated[
        tuple[Operand, ...] | None,
        BeforeValidator(_operand_list),
        WithJsonSchema({"type": "array", "items": _SCALAR_SCHEMA, "minItems": 1}),
    ] = Field(None, alias="in", description="Equal (as eq) to one of these values.")
    gt: NumberOperand = Field(None, description="Greater than (numbers and numeric strings only).")
    gte: NumberOperand = Field(None, description="Greater than or equal.")
    lt: NumberOperand = Field(None, description="Less than.")
    lte: NumberOperand = Field(None, description="Less than or equal.")
    present: Annotated[Any, AfterValidator(_bool_operand), WithJsonSchema({"type": "boolean"})] = Field(
        None, description="true: the path holds a non-null value; false: it is missing or null."
    )

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if isinstance(data, str):
            # The short form (``metadata.team: "^search$"``): a regex, checked here so that its error
            # points at the path, as before operators existed.
            return {"regex": _regex(data)}
        if not isinstance(data, dict):
            raise ValueError(
                f"expected a regex (a string) or a mapping of operators ({', '.join(FIELD_OPERATORS)}), "
                f"got {_describe(data)}" + (" (quote it for a regex, or use eq)" if data is not None else "")
            )
        if not data:
            raise ValueError(f"no operator given (give one of {', '.join(FIELD_OPERATORS)})")
        return data


def _not_null(value: Any) -> Any:
    # ``to:`` with the value forgotten would otherwise widen the rule to "any status".
    if value is None:
        raise ValueError("no value given (give one, or remove the key to match anything)")
    return value


def _one_or_many(
    check: Callable[[str, ValidationInfo], str], what: str, *, optional: bool = True
) -> BeforeValidator:
    """Accept ``key: value`` as ``key: [value]``; a lone value is checked here so its error has no index."""
    empty = "empty list: give at least one value" + (", or remove the key" if optional else "")

    def before(value: Any, info: ValidationInfo) -> Any:
        if optional:
            _not_null(value)
        elif value is None:
            raise ValueError("no value given")
        if isinstance(value, str):
            return (check(value, info),)
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError(empty)
            return value
        raise ValueError(f"expected {what} or a list of them, got {_describe(value)}")

    return BeforeValidator(before)


def _one_or_many_schema(item: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})


Status = Annotated[str, AfterValidator(_status)]
Statuses = Annotated[
    tuple[Status, ...] | None,
    _one_or_many(_status, "a run or monitor status"),
    _one_or_many_schema({"enum": list(STATUSES)}),
]
Providers = Annotated[
    tuple[Annotated[str, AfterValidator(_provider)], ...] | None,
    _one_or_many(_provider, "a provider"),
    _one_or_many_schema({"enum": list(PROVIDERS)}),
]
Kinds = Annotated[
    tuple[Annotated[str, AfterValidator(_kind)], ...] | None,
    _one_or_many(_kind, "a change kind"),
    _one_or_many_schema({"enum": list(KINDS)}),
]
Globs = Annotated[
    tuple[Annotated[str, AfterValidator(_glob)], ...] | None,
    _one_or_many(_glob, "a glob"),
    _one_or_many_schema(_GLOB_SCHEMA),
]
Channels = Annotated[
    tuple[Annotated[str, AfterValidator(_channel)], ...],
    _one_or_many(_channel, "a channel name", optional=False),
    _one_or_many_schema({"type": "string", "minLength": 1}),
]
Regex = Annotated[str, AfterValidator(_regex), WithJsonSchema(_REGEX_SCHEMA)]
OptionalRegex = Annotated[Regex | None, BeforeValidator(_not_null), WithJsonSchema(_REGEX_SCHEMA)]
_FIELD_CONDITION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        _REGEX_SCHEMA,
        {
            **FieldOps.model_json_schema(by_alias=True),
            "description": "Operators, all of which must hold: " + ", ".join(FIELD_OPERATORS) + ".",
            "minProperties": 1,
        },
    ]
}
FieldConditions = Annotated[
    dict[str, FieldOps] | None,
    BeforeValidator(_field_paths),
    BeforeValidator(_not_null),
    WithJsonSchema({"type": "object", "additionalProperties": _FIELD_CONDITION_SCHEMA}),
]
Template = Annotated[str, AfterValidator(check_template)]


class _Spec(BaseModel):
    """Strict base: unknown keys are errors, and a non-mapping says so in words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping (key: value), got {_describe(data)}")
        return data


class MatchSpec(_Spec):
    """Which changes a rule selects; every key given must match, an absent key matches anything."""

    provider: Providers = Field(None, description="Provider name(s): exa, olostep.")
    monitor: Globs = Field(None, description="Glob(s) on the monitor id (fnmatch, case-sensitive).")
    kind: Kinds = Field(
        None,
        description="Change kind(s): run.status, run.event, run.stuck, source.error, monitor.status, "
        "monitor.missed_run.",
    )
    from_: Statuses = Field(
        None,
        alias="from",
        description="Previous run or monitor status(es); a run first seen (no previous status) never "
        "matches.",
    )
    to: Statuses = Field(None, description="New run or monitor status(es).")
    event: Globs = Field(None, description="Glob(s) on the event (step) name of a run.event change.")
    failed_reason: OptionalRegex = Field(
        None, description="Regex searched in the failure reason; no match when there is none."
    )
    message: OptionalRegex = Field(
        None, description="Regex searched in the event message; no match when there is none."
    )
    fields: FieldConditions = Field(
        None,
        description="Dotted path -> condition; every entry must hold. Paths start with run., event., "
        "monitor. or change. (any other path is into the raw run). A condition is a regex searched in "
        "the value as text, or a mapping of operators: " + ", ".join(FIELD_OPERATORS) + ".",
    )


BodyFormat = Annotated[str, AfterValidator(_body_format), WithJsonSchema({"enum": list(BODY_FORMATS)})]


class RuleSpec(_Spec):
    """One rule as written in a rule file."""

    name: Annotated[str, AfterValidator(_name)] = Field(
        description="Unique name across all rule files; appears in alerts, logs and metrics."
    )
    match: MatchSpec = Field(
        default_factory=lambda: MatchSpec.model_validate({}),
        description="Conditions; all must hold. Absent = every change.",
    )
    severity: Annotated[str, AfterValidator(_severity), WithJsonSchema({"enum": list(SEVERITIES)})] = Field(
        "warning", description="critical, warning or info."
    )
    notify: Channels = Field(description="Channel name(s) to send to.")
    stop: StrictBool = Field(False, description="When this rule matches, later rules do not see the change.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra key/value pairs passed along with the alert."
    )
    title: Template | None = Field(None, description="Jinja2 template for the title (one line).")
    body: Template | None = Field(None, description="Jinja2 template for the body.")
    format: BodyFormat = Field(
        "text", description="How the body is written: text (line breaks kept), markdown or html."
    )
    for_: Duration = Field(
        300.0,
        alias="for",
        description="source.error rules: fire once the provider has failed to poll for this long.",
    )
    stuck_after: Duration = Field(
        1800.0, description="run.stuck rules: a run still unfinished this long after it was created."
    )
    grace: Duration = Field(
        600.0,
        description="monitor.missed_run rules: a scheduled run not seen this long after its due time.",
    )
    # The alert lifecycle (opt-in: a rule with none of these notifies once per matching change).
    group_by: list[str] | None = Field(
        None,
        description="Labels that identify one alert of this rule (default: provider, monitor_id); "
        "any of provider, monitor_id, run_id, kind, event, to, or the rule's own labels.",
    )
    threshold: Threshold | None = Field(
        None, description="Fire only when the rule matched count times within a window."
    )
    repeat_interval: Duration | None = Field(None, description="Re-send an alert still open at this pace.")
    send_resolved: StrictBool = Field(
        False, description="When the alert closes (a later run of its monitor completes), send once more."
    )
    group_wait: Duration | None = Field(
        None,
        description="Grouping: the first match of a group waits this long, then one notification lists "
        "every match collected (default 30s when only group_interval is given).",
    )
    group_interval: Duration | None = Field(
        None,
        description="Grouping: later matches of a group are sent together at most once per this "
        "(default 5m when only group_wait is given); a group with nothing new for this long closes.",
    )
    flapping: Flapping | None = Field(
        None,
        description="Flap damping: a group alternating between failing and completing more than count "
        "times within `within` is reported once as flapping, then quiet until `quiet` passes.",
    )

    @model_validator(mode="after")
    def _group_labels(self) -> RuleSpec:
        known = set(GROUP_LABELS) | set(self.labels)
        for label in self.group_by or ():
            if label not in known:
                raise ValueError(f"group_by: {label!r} is not a label (known: {', '.join(sorted(known))})")
        return self

    def lifecycle(self) -> LifecycleSpec | None:
        """The lifecycle keys, when the rule uses any (else None: one notification per change)."""
        spec = LifecycleSpec(
            group_by=self.group_by,
            threshold=self.threshold,
            repeat_interval=self.repeat_interval,
            send_resolved=self.send_resolved,
            group_wait=self.group_wait,
            group_interval=self.group_interval,
            flapping=self.flapping,
        )
        return spec if spec.used() else None


class RuleFileSpec(_Spec):
    """A whole rule file: a mapping with one key, ``rules``."""

    model_config = ConfigDict(title="runwatch rule file")

    rules: list[RuleSpec] = Field(description="Rules, evaluated in order.")


def rule_file_json_schema() -> dict[str, Any]:
    """The JSON Schema for rule files that editors use (committed as ``rules/schema.json``)."""
    schema = _drop_null_defaults(RuleFileSpec.model_json_schema(by_alias=True))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _drop_null_defaults(node: Any) -> Any:
    # ``default: null`` would invite editors to complete ``to: null``, which the loader refuses.
    if isinstance(node, dict):
        return {k: _drop_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_drop_null_defaults(v) for v in node]
    return node
