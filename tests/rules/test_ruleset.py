"""runwatch.rules.ruleset: evaluation order, ``stop``, and the decisions match() returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runwatch.model import Change, ChangeKind
from runwatch.rules import Decision, Rule, RuleSet
from runwatch.rules.ruleset import MONITOR_CACHE_SIZE
from runwatch.rules.schema import RuleSpec


def change(**kw: Any) -> Change:
    base: dict[str, Any] = {
        "key": "k1",
        "kind": ChangeKind.RUN_STATUS,
        "provider": "exa",
        "monitor_id": "monitor_prod_news",
        "run_id": "mrun_1",
        "run": {"id": "mrun_1", "failedReason": "Quota exceeded"},
        "from_status": "created",
        "to_status": "failed",
        "failed_reason": "Quota exceeded",
    }
    return Change(**(base | kw))


def rule(name: str, **spec: Any) -> Rule:
    return Rule.from_spec(RuleSpec.model_validate({"name": name, "notify": "ops-slack", **spec}))


def names(decisions: list[Decision]) -> list[str]:
    return [d.rule for d in decisions]


def test_every_matching_rule_fires_in_order() -> None:
    rs = RuleSet(
        rules=(
            rule("a", match={"to": "failed"}),
            rule("b", match={"to": "completed"}),
            rule("c", match={"provider": "exa"}),
            rule("d"),
        )
    )
    assert names(rs.match(change())) == ["a", "c", "d"]
    assert names(rs.match(change(to_status="completed"))) == ["b", "c", "d"]
    assert names(rs.match(change(provider="olostep", to_status="running"))) == ["d"]


def test_stop_keeps_later_rules_from_seeing_the_change() -> None:
    rs = RuleSet(
        rules=(
            rule("first", match={"to": "failed"}),
            rule("stopper", match={"monitor": "monitor_prod_*"}, stop=True),
            rule("after"),
        )
    )
    assert names(rs.match(change())) == ["first", "stopper"]


def test_stop_on_a_rule_that_does_not_match_stops_nothing() -> None:
    rs = RuleSet(rules=(rule("stopper", match={"to": "canceled"}, stop=True), rule("after")))
    assert names(rs.match(change())) == ["after"]


def test_no_rules_no_decisions() -> None:
    rs = RuleSet()
    assert len(rs) == 0
    assert rs.match(change()) == []


def test_decision_carries_rule_settings_and_rendered_text() -> None:
    c = change()
    r = rule(
        "exa-run-failed",
        match={"provider": "exa"},
        severity="critical",
        notify=["ops-slack", "ops-mail"],
        labels={"team": "search"},
        title="{{ provider }} monitor {{ monitor_id }}: run {{ run_id }} {{ to }}",
        body="{{ run.failedReason }} ({{ labels.team }}, {{ rule }}, {{ severity }})",
    )
    [decision] = RuleSet(rules=(r,)).match(c)
    assert decision == Decision(
        rule="exa-run-failed",
        severity="critical",
        channels=("ops-slack", "ops-mail"),
        labels={"team": "search"},
        title="exa monitor monitor_prod_news: run mrun_1 failed",
        body="Quota exceeded (search, exa-run-failed, critical)",
        change=c,
        template_errors=(),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.title = "x"  # type: ignore[misc]


def test_default_severity_and_texts() -> None:
    [decision] = RuleSet(rules=(rule("plain"),)).match(change())
    assert decision.severity == "warning"
    assert decision.channels == ("ops-slack",)
    assert decision.labels == {}
    assert decision.title == "[warning] exa monitor_prod_news run mrun_1: created -> failed"
    assert decision.body == "from: created\nto: failed\nfailed_reason: Quota exceeded"


def test_template_error_does_not_drop_the_alert_or_later_rules() -> None:
    rs = RuleSet(
        rules=(
            rule("broken", title="{{ run.__class__ }}", body="{{ ''.__class__.__mro__ }}"),
            rule("fine", title="ok {{ run_id }}"),
        )
    )
    broken, fine = rs.match(change())
    assert broken.rule == "broken"
    assert broken.title == "[warning] exa monitor_prod_news run mrun_1: created -> failed"
    assert broken.body.splitlines() == [
        "from: created",
        "to: failed",
        "failed_reason: Quota exceeded",
        "(template error in rule broken: title: SecurityError: access to attribute '__class__' of 'dict' "
        "object is unsafe)",
        "(template error in rule broken: body: SecurityError: access to attribute '__class__' of 'str' "
        "object is unsafe)",
    ]
    assert len(broken.template_errors) == 2
    assert (fine.title, fine.template_errors) == ("ok mrun_1", ())


def test_rule_set_is_a_sequence_of_rules() -> None:
    a, b = rule("a"), rule("b")
    rs = RuleSet(rules=(a, b))
    assert len(rs) == 2
    assert list(rs) == [a, b]
    assert a.matches(change())


def test_the_monitor_index_decides_as_a_scan_does() -> None:
    rs = RuleSet(
        rules=(
            rule("prod", match={"monitor": "monitor_prod_*", "to": "failed"}),
            rule("prod-stop", match={"monitor": ["monitor_prod_a*", "x"]}, stop=True),
            rule("any-failed", match={"to": "failed"}),
            rule("olostep", match={"provider": "olostep", "monitor": "monitor_*"}),
            rule("team", match={"fields": {"monitor.metadata.team": {"eq": "search"}}}),
        )
    )
    monitors = ["monitor_prod_a", "monitor_prod_b", "monitor_dev", "x", ""]
    for _ in range(2):  # the second round is answered from the index
        for monitor_id in monitors:
            for provider in ("exa", "olostep"):
                for to, team in (("failed", "search"), ("completed", "ads")):
                    ch = change(
                        monitor_id=monitor_id,
                        provider=provider,
                        to_status=to,
                        monitor={"metadata": {"team": team}},
                    )
                    scanned: list[str] = []
                    for r in rs.rules:
                        if r.matches(ch):
                            scanned.append(r.name)
                            if r.stop:
                                break
                    assert names(rs.match(ch)) == scanned, ch
    assert names(rs.match(change(monitor_id="monitor_prod_a"))) == ["prod", "prod-stop"]
    assert names(rs.match(change(monitor_id="monitor_dev"))) == ["any-failed"]


def test_the_monitor_index_is_bounded() -> None:
    rs = RuleSet(rules=(rule("a", match={"monitor": "m1*"}),))
    for i in range(MONITOR_CACHE_SIZE + 10):
        assert names(rs.match(change(monitor_id=f"m{i}"))) == (["a"] if str(i).startswith("1") else [])
    assert len(rs._by_monitor) <= MONITOR_CACHE_SIZE
