"""runwatch.rules.matcher: each ``match:`` key, in its single-value and list forms."""

from __future__ import annotations

from typing import Any

import pytest

from runwatch.model import Change, ChangeKind, RunEvent
from runwatch.rules.matcher import (
    FieldPath,
    Matcher,
    as_number,
    as_text,
    compile_globs,
    holds_when_missing,
    lookup,
)
from runwatch.rules.schema import MatchSpec


def status_change(**kw: Any) -> Change:
    base: dict[str, Any] = {
        "key": "k1",
        "kind": ChangeKind.RUN_STATUS,
        "provider": "exa",
        "monitor_id": "monitor_prod_news",
        "run_id": "mrun_1",
        "run": {"id": "mrun_1", "status": "failed", "failedReason": "Quota exceeded"},
        "from_status": "created",
        "to_status": "failed",
        "failed_reason": "Quota exceeded",
    }
    return Change(**(base | kw))


def event_change(name: str = "run_complete", message: str = "all done", **kw: Any) -> Change:
    base: dict[str, Any] = {
        "key": "k2",
        "kind": ChangeKind.RUN_EVENT,
        "provider": "olostep",
        "monitor_id": "mon_7",
        "run_id": "run_9",
        "run": {"id": "run_9"},
        "event": RunEvent(id="ev1", ts_ms=1, name=name, message=message, raw={"url": "https://x"}),
    }
    return Change(**(base | kw))


def matches(match: dict[str, Any], change: Change) -> bool:
    return Matcher.from_spec(MatchSpec.model_validate(match))(change)


def test_empty_match_matches_everything() -> None:
    assert matches({}, status_change())
    assert matches({}, event_change())


@pytest.mark.parametrize(
    ("match", "change", "expected"),
    [
        ({"provider": "exa"}, status_change(), True),
        ({"provider": "olostep"}, status_change(), False),
        ({"provider": ["olostep", "exa"]}, status_change(), True),
        ({"provider": ["olostep"]}, status_change(), False),
        ({"kind": "run.status"}, status_change(), True),
        ({"kind": "run.event"}, status_change(), False),
        ({"kind": ["run.event", "run.status"]}, event_change(), True),
        ({"kind": ["run.status"]}, event_change(), False),
    ],
)
def test_provider_and_kind(match: dict[str, Any], change: Change, expected: bool) -> None:
    assert matches(match, change) is expected


@pytest.mark.parametrize(
    ("monitor", "monitor_id", "expected"),
    [
        ("monitor_prod_*", "monitor_prod_news", True),
        ("monitor_prod_*", "monitor_dev_news", False),
        # globs match the whole id, not a prefix or a substring
        ("monitor_prod", "monitor_prod_news", False),
        ("prod_*", "monitor_prod_news", False),
        # case-sensitive, on every platform
        ("MONITOR_PROD_*", "monitor_prod_news", False),
        ("monitor_?rod_news", "monitor_prod_news", True),
        ("monitor_[pd]*", "monitor_dev_news", True),
        (["a*", "monitor_dev_*"], "monitor_dev_news", True),
        (["a*", "b*"], "monitor_dev_news", False),
        # a regex metacharacter in a glob is literal
        ("mon.tor*", "monitor_prod_news", False),
    ],
)
def test_monitor_globs(monitor: str | list[str], monitor_id: str, expected: bool) -> None:
    assert matches({"monitor": monitor}, status_change(monitor_id=monitor_id)) is expected


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"to": "failed"}, True),
        ({"to": "completed"}, False),
        ({"to": ["completed", "failed"]}, True),
        ({"from": "created"}, True),
        ({"from": "running"}, False),
        ({"from": ["running", "created"], "to": "failed"}, True),
        ({"from": ["running"], "to": "failed"}, False),
    ],
)
def test_from_and_to(match: dict[str, Any], expected: bool) -> None:
    assert matches(match, status_change(from_status="created", to_status="failed")) is expected


def test_first_seen_run_does_not_match_a_rule_naming_from() -> None:
    first_seen = status_change(from_status=None, to_status="failed")
    assert not matches({"from": ["created", "running", "completed", "failed", "canceled"]}, first_seen)
    assert matches({"to": "failed"}, first_seen)


def test_change_without_new_status_does_not_match_to() -> None:
    assert not matches({"to": ["created", "running", "completed", "failed", "canceled"]}, event_change())


@pytest.mark.parametrize(
    ("event", "name", "expected"),
    [
        ("run_complete", "run_complete", True),
        ("run_*", "run_complete", True),
        ("run_*", "step_start", False),
        (["step_*", "run_complete"], "run_complete", True),
        (["step_*"], "run_complete", False),
        ("RUN_COMPLETE", "run_complete", False),
    ],
)
def test_event_globs(event: str | list[str], name: str, expected: bool) -> None:
    assert matches({"event": event}, event_change(name=name)) is expected


def test_event_and_message_never_match_a_change_without_event() -> None:
    assert not matches({"event": "*"}, status_change())
    assert not matches({"message": ""}, status_change())


@pytest.mark.parametrize(
    ("regex", "message", "expected"),
    [
        ("error", "fetch error on page 3", True),
        ("^error", "fetch error on page 3", False),
        ("(?i)ERROR", "fetch error", True),
        ("ERROR", "fetch error", False),
        # an empty message never matches, even a regex that matches the empty string
        (".*", "", False),
    ],
)
def test_message_regex(regex: str, message: str, expected: bool) -> None:
    assert matches({"message": regex}, event_change(message=message)) is expected


@pytest.mark.parametrize(
    ("regex", "failed_reason", "expected"),
    [
        ("(?i)quota|timeout", "Quota exceeded", True),
        ("(?i)quota|timeout", "Request timeout after 30s", True),
        ("quota", "Quota exceeded", False),
        ("(?i)quota|timeout", "Bad request", False),
        # searched, not matched from the start
        ("exceeded", "Quota exceeded", True),
        (".*", None, False),
        (".*", "", False),
    ],
)
def test_failed_reason_regex(regex: str, failed_reason: str | None, expected: bool) -> None:
    change = status_change(failed_reason=failed_reason)
    assert matches({"failed_reason": regex}, change) is expected


RUN: dict[str, Any] = {
    "id": "mrun_1",
    "metadata": {"team": "search", "attempt": 3, "urgent": True, "owner": None},
    "steps": [{"name": "fetch"}, {"name": "extract"}],
    "tags": ["a", "b"],
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"metadata.team": "^search$"}, True),
        ({"metadata.team": "^sea$"}, False),
        ({"metadata.attempt": "^3$"}, True),
        ({"metadata.urgent": "^true$"}, True),
        ({"steps.0.name": "fetch"}, True),
        ({"steps.-1.name": "^extract$"}, True),
        ({"steps.5.name": ".*"}, False),
        ({"steps.x.name": ".*"}, False),
        ({"metadata.missing": ".*"}, False),
        ({"metadata.team.deeper": ".*"}, False),
        ({"metadata.owner": ".*"}, False),
        ({"tags": r'^\["a", "b"\]$'}, True),
        # every entry must hold
        ({"metadata.team": "search", "metadata.attempt": "^4$"}, False),
        ({"metadata.team": "search", "metadata.attempt": "3"}, True),
    ],
)
def test_fields(fields: dict[str, str], expected: bool) -> None:
    assert matches({"fields": fields}, status_change(run=RUN)) is expected


def test_all_keys_must_hold() -> None:
    match: dict[str, Any] = {
        "provider": "exa",
        "monitor": ["monitor_prod_*"],
        "kind": "run.status",
        "from": ["created", "running"],
        "to": "failed",
        "failed_reason": "(?i)quota|timeout",
    }
    assert matches(match, status_change())
    for change in (
        status_change(provider="olostep"),
        status_change(monitor_id="monitor_dev_x"),
        status_change(from_status="failed"),
        status_change(to_status="canceled"),
        status_change(failed_reason="disk full"),
        status_change(kind=ChangeKind.RUN_EVENT),
    ):
        assert not matches(match, change), change


def test_compile_globs_is_one_anchored_regex() -> None:
    rx = compile_globs(["a*", "b?c"])
    assert rx.match("abc")
    assert rx.match("bxc")
    assert not rx.match("bxcd")
    assert not rx.match("xa")


def test_lookup_and_as_text() -> None:
    assert lookup(RUN, ("metadata", "team")) == "search"
    assert as_text(lookup(RUN, ("nope",))) is None
    assert as_text(lookup("a string", ("0",))) is None
    assert as_text(False) == "false"
    assert as_text(1.5) == "1.5"
    assert as_text({"b": 1, "a": [None]}) == '{"a": [null], "b": 1}'


# --- fields: operators, namespaces, per-kind behaviour (issue 11) -----------------------------------------

OPS_RUN: dict[str, Any] = {
    "id": "mrun_1",
    "snapshot": {"items_count": 12, "ratio": 0.5, "label": "Big news", "count_text": "7", "empty": None},
    "metadata": {"team": "search", "urgent": True, "tier": "3"},
    "tags": ["a", "b"],
}


@pytest.mark.parametrize(
    ("path", "ops", "expected"),
    [
        # eq: strings compare to the value's text, numbers numerically, booleans to booleans, null to
        # missing or null
        ("metadata.team", {"eq": "search"}, True),
        ("metadata.team", {"eq": "sea"}, False),
        ("snapshot.items_count", {"eq": "12"}, True),
        ("snapshot.items_count", {"eq": 12}, True),
        ("snapshot.items_count", {"eq": 12.0}, True),
        ("snapshot.items_count", {"eq": 13}, False),
        ("snapshot.count_text", {"eq": 7}, True),
        ("metadata.urgent", {"eq": True}, True),
        ("metadata.urgent", {"eq": False}, False),
        ("metadata.urgent", {"eq": "true"}, True),
        ("metadata.urgent", {"eq": 1}, False),
        ("snapshot.items_count", {"eq": True}, False),
        ("snapshot.empty", {"eq": None}, True),
        ("snapshot.nope", {"eq": None}, True),
        ("snapshot.items_count", {"eq": None}, False),
        ("tags", {"eq": '["a", "b"]'}, True),
        # ne is exactly not eq
        ("metadata.team", {"ne": "search"}, False),
        ("metadata.team", {"ne": "other"}, True),
        ("snapshot.nope", {"ne": "x"}, True),
        ("snapshot.nope", {"ne": None}, False),
        ("snapshot.items_count", {"ne": None}, True),
        # regex: searched in the text, like the short form
        ("snapshot.label", {"regex": "(?i)big"}, True),
        ("snapshot.label", {"regex": "^news"}, False),
        ("snapshot.empty", {"regex": ".*"}, False),
        # glob: the whole text, case-sensitive
        ("snapshot.label", {"glob": "Big *"}, True),
        ("snapshot.label", {"glob": "big *"}, False),
        ("snapshot.label", {"glob": "Big"}, False),
        ("snapshot.items_count", {"glob": "1?"}, True),
        ("snapshot.nope", {"glob": "*"}, False),
        # in: equal (as eq) to one of them
        ("metadata.team", {"in": ["ads", "search"]}, True),
        ("metadata.team", {"in": ["ads", 3]}, False),
        ("metadata.tier", {"in": [1, 3]}, True),
        ("snapshot.items_count", {"in": ["12"]}, True),
        ("metadata.urgent", {"in": [True]}, True),
        ("metadata.urgent", {"in": [1]}, False),
        ("snapshot.nope", {"in": ["x", None]}, True),
        ("snapshot.nope", {"in": ["x"]}, False),
        # gt/gte/lt/lte: numbers and numeric strings only
        ("snapshot.items_count", {"gt": 0}, True),
        ("snapshot.items_count", {"gt": 12}, False),
        ("snapshot.items_count", {"gte": 12}, True),
        ("snapshot.items_count", {"lt": 12.5}, True),
        ("snapshot.items_count", {"lte": 11}, False),
        ("snapshot.ratio", {"lt": 1}, True),
        ("snapshot.count_text", {"gt": 6.5}, True),
        ("metadata.team", {"gt": 0}, False),
        ("metadata.team", {"lt": 0}, False),
        ("metadata.urgent", {"gte": 0}, False),
        ("snapshot.nope", {"lte": 100}, False),
        ("snapshot.empty", {"gte": 0}, False),
        ("tags", {"gte": 0}, False),
        # all operators given must hold (a range)
        ("snapshot.items_count", {"gt": 10, "lte": 12}, True),
        ("snapshot.items_count", {"gt": 10, "lt": 12}, False),
        ("snapshot.label", {"present": True, "glob": "*news"}, True),
        # present: true = a non-null value; false = missing or null
        ("snapshot.items_count", {"present": True}, True),
        ("snapshot.items_count", {"present": False}, False),
        ("snapshot.empty", {"present": True}, False),
        ("snapshot.empty", {"present": False}, True),
        ("snapshot.nope", {"present": False}, True),
        ("snapshot.nope.deeper", {"present": True}, False),
    ],
)
def test_every_operator(path: str, ops: dict[str, Any], expected: bool) -> None:
    change = status_change(run=OPS_RUN)
    assert matches({"fields": {path: ops}}, change) is expected
    # run.x and x are the same path into the raw run
    assert matches({"fields": {f"run.{path}": ops}}, change) is expected


def test_numbers_in_text_are_compared_exactly() -> None:
    big = status_change(run={"n": 2**60 + 1, "s": "9007199254740993"})
    assert matches({"fields": {"n": {"gt": 2**60}}}, big)
    assert matches({"fields": {"s": {"eq": 9007199254740993}}}, big)
    assert not matches({"fields": {"s": {"eq": 9007199254740992}}}, big)
    assert matches({"fields": {"s": {"gt": 9.0e15}}}, big)


def test_a_short_regex_is_the_regex_operator() -> None:
    change = status_change(run=RUN)
    for value, expected in (("^search$", True), ("^sea$", False)):
        assert matches({"fields": {"metadata.team": value}}, change) is expected
        assert matches({"fields": {"metadata.team": {"regex": value}}}, change) is expected
        assert matches({"fields": {"run.metadata.team": value}}, change) is expected


def test_a_raw_run_key_named_like_a_namespace_is_reached_through_run() -> None:
    change = status_change(run={"run": {"id": "inner"}, "event": "x", "monitor": "m", "change": 1})
    assert matches({"fields": {"run.run.id": "^inner$"}}, change)
    assert matches({"fields": {"run.event": "^x$"}}, change)
    assert matches({"fields": {"run.monitor": {"eq": "m"}}}, change)
    assert matches({"fields": {"run.change": {"eq": 1}}}, change)
    # without run., the first part names the namespace: this status change has no event
    assert not matches({"fields": {"event": {"present": True}}}, change)


MONITOR: dict[str, Any] = {
    "id": "monitor_prod_news",
    "name": "Prod news",
    "status": "active",
    "metadata": {"team": "search", "priority": 2},
    "schedule": {"cron": "0 * * * *"},
}


def test_the_monitor_namespace() -> None:
    change = status_change(monitor=MONITOR)
    assert matches({"fields": {"monitor.metadata.team": "^search$"}}, change)
    assert not matches({"fields": {"monitor.metadata.team": {"eq": "ads"}}}, change)
    assert matches(
        {"fields": {"monitor.name": {"glob": "Prod *"}, "monitor.metadata.priority": {"lt": 3}}}, change
    )
    assert matches({"fields": {"monitor.schedule.cron": {"eq": "0 * * * *"}}}, change)
    assert matches({"fields": {"monitor.status": {"in": ["active", "enabled"]}}}, change)
    # a change whose monitor is not known has an empty monitor: every path is missing
    unknown = status_change()
    assert not matches({"fields": {"monitor.metadata.team": ".*"}}, unknown)
    assert matches({"fields": {"monitor.metadata.team": {"present": False}}}, unknown)
    assert not matches({"fields": {"monitor": {"present": True}}}, unknown)
    assert matches({"fields": {"monitor": {"present": True}}}, change)


def test_the_event_namespace_is_the_raw_agent_log_event() -> None:
    raw = {"id": "ev1", "ts": 1, "message": "fetch failed", "event": {"type": "node_error", "error": "403"}}
    ev = RunEvent(id="ev1", ts_ms=1, name="node_error", message="fetch failed", raw=raw, error="403")
    change = event_change(event=ev)
    assert matches({"fields": {"event.message": "failed$"}}, change)
    assert matches({"fields": {"event.event.type": {"eq": "node_error"}}}, change)
    assert matches({"fields": {"event.event.error": {"eq": 403}}}, change)
    # event.error: the raw event has no top-level error, so the error runwatch read from it stands in
    assert matches({"fields": {"event.error": {"present": True}}}, change)
    assert matches({"fields": {"event.error": {"eq": "403"}}}, change)
    quiet = event_change()
    assert not matches({"fields": {"event.error": {"present": True}}}, quiet)
    assert matches({"fields": {"event.error": {"present": False}}}, quiet)
    assert matches({"fields": {"event.url": {"glob": "https://*"}}}, quiet)
    # a raw key of its own wins over the stand-in
    own = RunEvent(id="e", ts_ms=1, name="n", message="", raw={"error": "raw"}, error="derived")
    assert matches({"fields": {"event.error": {"eq": "raw"}}}, event_change(event=own))
    # a status change has no event
    assert not matches({"fields": {"event.message": ".*"}}, status_change())
    assert matches({"fields": {"event.message": {"present": False}}}, status_change())


def change_of(kind: ChangeKind, **kw: Any) -> Change:
    base: dict[str, Any] = {
        "key": "k",
        "kind": kind,
        "provider": "olostep",
        "monitor_id": "monitor_1",
        "run_id": "",
        "run": {},
        "monitor": {"id": "monitor_1", "status": "paused"},
    }
    return Change(**(base | kw))


@pytest.mark.parametrize(
    ("fields", "change", "expected"),
    [
        ({"change.from": {"eq": "created"}}, status_change(), True),
        ({"change.to": {"in": ["failed", "canceled"]}}, status_change(), True),
        ({"change.to": {"present": True}}, event_change(), False),
        ({"change.failed_reason": "(?i)quota"}, status_change(), True),
        ({"change.provider": {"eq": "exa"}}, status_change(), True),
        ({"change.monitor_id": {"glob": "monitor_prod_*"}}, status_change(), True),
        ({"change.run_id": {"eq": "mrun_1"}}, status_change(), True),
        ({"change.kind": {"eq": "run.status"}}, status_change(), True),
        ({"change.event": {"eq": "run_complete"}}, event_change(), True),
        ({"change.event": {"present": False}}, status_change(), True),
        ({"change.failing_for": {"gte": 600}}, change_of(ChangeKind.RUN_STUCK, failing_for=900.0), True),
        ({"change.failing_for": {"gte": 600}}, change_of(ChangeKind.RUN_STUCK, failing_for=60.0), False),
        # failing_for means nothing on other kinds: it is missing there, not 0
        ({"change.failing_for": {"lt": 600}}, status_change(), False),
        ({"change.failing_for": {"present": False}}, status_change(), True),
        # an empty id (a source.error has no monitor or run) is missing
        ({"change.run_id": {"present": False}}, change_of(ChangeKind.SOURCE_ERROR, monitor_id=""), True),
        ({"change.monitor_id": {"present": True}}, change_of(ChangeKind.SOURCE_ERROR, monitor_id=""), False),
    ],
)
def test_the_change_namespace(fields: dict[str, Any], change: Change, expected: bool) -> None:
    assert matches({"fields": fields}, change) is expected


def test_monitor_statuses_do_not_misfire_across_kinds() -> None:
    paused = change_of(ChangeKind.MONITOR_STATUS, from_status="active", to_status="paused")
    # a rule with no kind whose to names only monitor statuses matches only monitor.status changes
    assert matches({"to": "paused"}, paused)
    assert matches({"from": "active", "to": ["paused", "deleted"]}, paused)
    for status in ("created", "running", "completed", "failed", "canceled"):
        assert not matches({"to": "paused"}, status_change(to_status=status))
        assert not matches({"from": "active"}, status_change(from_status=status))
    # and run statuses never match a monitor.status change (failed is both, and means both)
    assert not matches({"to": ["running", "completed", "canceled"]}, paused)
    assert matches({"to": "failed"}, change_of(ChangeKind.MONITOR_STATUS, to_status="failed"))
    assert matches({"to": "failed"}, status_change(to_status="failed"))
    assert not matches(
        {"kind": "run.status", "to": "failed"}, change_of(ChangeKind.MONITOR_STATUS, to_status="failed")
    )


def test_run_paths_never_match_a_change_without_a_run() -> None:
    source_error = change_of(ChangeKind.SOURCE_ERROR, monitor_id="", monitor={}, failed_reason="401")
    assert not matches({"fields": {"metadata.team": ".*"}}, source_error)
    assert not matches({"fields": {"id": {"present": True}}}, source_error)
    assert matches({"fields": {"id": {"present": False}}}, source_error)


def test_holds_when_missing() -> None:
    def ops(value: Any) -> Any:
        spec = MatchSpec.model_validate({"fields": {"x": value}})
        assert spec.fields is not None
        return spec.fields["x"]

    assert holds_when_missing(ops({"present": False}))
    assert holds_when_missing(ops({"eq": None}))
    assert holds_when_missing(ops({"ne": "x"}))
    assert holds_when_missing(ops({"in": [None, 1]}))
    for value in ("x", {"present": True}, {"eq": "x"}, {"gt": 0}, {"glob": "*"}, {"ne": None}):
        assert not holds_when_missing(ops(value)), value


def test_field_paths_resolve_their_namespace_once() -> None:
    assert FieldPath.parse("metadata.team") == FieldPath("run", ("metadata", "team"))
    assert FieldPath.parse("run.metadata.team") == FieldPath("run", ("metadata", "team"))
    assert FieldPath.parse("run.run.x") == FieldPath("run", ("run", "x"))
    assert FieldPath.parse("event.message") == FieldPath("event", ("message",))
    assert FieldPath.parse("monitor.metadata.team") == FieldPath("monitor", ("metadata", "team"))
    assert FieldPath.parse("change.to") == FieldPath("change", ("to",))
    assert FieldPath.parse("change.to").problem() is None
    assert FieldPath.parse("change.status").problem() == (
        "'change.status' is not a field of the change (known: change.from, change.to, change.failed_reason,"
        " change.failing_for, change.provider, change.monitor_id, change.run_id, change.kind, change.event)"
    )


def test_as_number() -> None:
    assert as_number(3) == 3
    assert as_number("3") == 3 and isinstance(as_number("3"), int)
    assert as_number(" -1.5 ") == -1.5
    assert as_number("1e3") == 1000.0
    for value in (True, "abc", "1_000", "", None, [1], "nan", "inf", "0x10"):
        assert as_number(value) is None, value
