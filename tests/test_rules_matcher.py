"""runwatch.rules.matcher: each ``match:`` key, in its single-value and list forms."""

from __future__ import annotations

from typing import Any

import pytest

from runwatch.model import Change, ChangeKind, RunEvent
from runwatch.rules.matcher import Matcher, as_text, compile_globs, lookup
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
