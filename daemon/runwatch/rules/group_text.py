"""The default title and body of a grouped notification (``group_wait``/``group_interval``), when the
rule gives no template: one summary line, then one line per change, bounded."""

from __future__ import annotations

from collections.abc import Sequence

from runwatch.model import Change, ChangeKind

#: A grouped default body lists at most this many lines (the webhook's ``alerts`` list has them all).
BODY_LINES = 50


def _summary(changes: Sequence[Change]) -> str:
    n = len(changes)
    kinds = {c.kind for c in changes}
    if kinds == {ChangeKind.RUN_STATUS}:
        tos = {c.to_status for c in changes}
        if len(tos) == 1:
            return f"{n} runs {next(iter(tos))}"
        return f"{n} run status changes"
    if kinds == {ChangeKind.RUN_EVENT}:
        names = {c.event.name if c.event else "" for c in changes}
        return f"{n} events {next(iter(names))}" if len(names) == 1 else f"{n} run events"
    if kinds == {ChangeKind.RUN_STUCK}:
        return f"{n} runs stuck"
    return f"{n} changes"


def group_title(changes: Sequence[Change], severity: str, rule: str, more: int = 0) -> str:
    """``[warning] exa: 5 runs failed (rule X)``; with one monitor in the group it is named too."""
    providers = ", ".join(sorted({c.provider for c in changes}))
    monitors = {c.monitor_id for c in changes}
    where = f"{providers} {next(iter(monitors))}" if len(monitors) == 1 and "" not in monitors else providers
    listed = list(changes)
    what = _summary(listed)
    if more:
        what = what.replace(str(len(listed)), str(len(listed) + more), 1)
    return f"[{severity}] {where}: {what} (rule {rule})"


def _line(c: Change) -> str:
    status = f"{c.from_status} -> {c.to_status}" if c.from_status else (c.to_status or "")
    what = f"event {c.event.name}" if c.kind is ChangeKind.RUN_EVENT and c.event else status or str(c.kind)
    reason = c.failed_reason or (c.event.message if c.event else "")
    text = f"- {c.monitor_id} run {c.run_id}: {what}" + (f": {reason}" if reason else "")
    return " ".join(text.split())[:300]


def group_body(changes: Sequence[Change], more: int = 0) -> str:
    """One line per change, the newest last; long groups end with how many were not listed."""
    lines = [_line(c) for c in changes[:BODY_LINES]]
    rest = len(changes) - len(lines) + more
    if rest > 0:
        lines.append(f"… and {rest} more")
    return "\n".join(lines)
