"""Match: each change against the rules; a decision per rule that matched (what to send, where).

A rule without lifecycle keys turns a decision straight into one notification per channel
(:func:`alerts_for`); a rule with them goes on to :mod:`runwatch.pipeline.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import Alert, bounded, cut_text, notification_id
from runwatch.pipeline.chain import Batch
from runwatch.rules import Decision, RuleSet
from runwatch.rules.templates import cut_title

log = get_logger(__name__)


class Match:
    """Ask the rules in force about each change; a change nothing matched is counted, not sent."""

    def __init__(self, rules: Callable[[], RuleSet], metrics: Metrics) -> None:
        self.rules = rules
        self.metrics = metrics

    def __call__(self, batch: Batch) -> None:
        ruleset = self.rules()
        for ch in batch.changes:
            decisions = ruleset.match(ch)
            if not decisions:
                self.metrics.unmatched.labels(ch.provider, ch.kind.value).inc()
            for d in decisions:
                self.metrics.rule_matches.labels(d.rule).inc()
                log.info("rule.matched", rule=d.rule, run_id=ch.run_id, channels=",".join(d.channels))
            batch.decisions.extend(decisions)


def alerts_for(decision: Decision, key: str | None = None) -> list[Alert]:
    """One alert per channel of a decision: the change (or the group of them) and the decision, as data.

    ``key`` names a notification that is not one change's (a grouped or flapping one); it makes the id.
    """
    ch = decision.change
    ev = ch.event
    return [
        Alert(
            id=notification_id(key or ch.key, decision.rule, channel),
            type=ch.kind.value,
            channel=channel,
            provider=ch.provider,
            monitor_id=ch.monitor_id,
            run_id=ch.run_id,
            rule=decision.rule,
            severity=decision.severity,
            title=decision.title,
            body=decision.body,
            detected_at=ch.detected_at,
            occurred_at=ch.occurred_at if ch.occurred_at is not None else ch.detected_at,
            from_status=ch.from_status,
            to_status=ch.to_status,
            event=cut_text(ev.name) if ev else None,
            message=cut_text(ev.message) if ev else None,
            failed_reason=cut_text(ch.failed_reason) if ch.failed_reason is not None else None,
            labels=dict(decision.labels),
            run=bounded(ch.run),
            format=decision.format,
            status="resolved" if ch.resolved else "firing",
            alerts=tuple(c.payload_item() for c in decision.group),
        )
        for channel in decision.channels
    ]


def prefixed_decision(decision: Decision, prefix: str) -> Decision:
    return replace(decision, title=cut_title(f"{prefix} {decision.title}"))
