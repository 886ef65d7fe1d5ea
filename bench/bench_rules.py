"""Rule evaluation and the alert lifecycle's memory, each beside a baseline measured in the same run.

    python bench/bench_rules.py            # 1,000 rules, 20,000 changes, 10,000 open alerts
    python bench/bench_rules.py --quick

Prints changes per second through 1,000 rules on one core (the daemon's RuleSet, indexed by
provider, kind and monitor; half the run.status and run.event rules also have ``match.fields``
conditions on the run, the event and the monitor) beside the same rules scanned in order without the
index and beside a single rule (the floor), and the memory per open alert (tracemalloc) beside the
size of its JSON in the state.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daemon"))

from runwatch.model import Change, ChangeKind, RunEvent
from runwatch.rules import RuleSet, load_rules
from runwatch.store.alert_state import OpenAlert

KINDS = ("run.status", "run.event", "run.stuck", "source.error")


def rules_yaml(n: int, rng: random.Random) -> str:
    lines = ["rules:"]
    for i in range(n):
        provider = rng.choice(["exa", "olostep"])
        kind = rng.choice(KINDS)
        match = [f"provider: {provider}", f"kind: {kind}", f'monitor: "monitor_team{i % 50}_*"']
        if kind == "run.status":
            match.append("to: failed")
            match.append('failed_reason: "(?i)quota|timeout"')
            if i % 2:  # half of them also read the run and the monitor (match.fields operators)
                match.append(
                    "fields: {run.snapshot.items_count: {gt: 0}, monitor.metadata.team: {in: [search, ads]}}"
                )
        if kind == "run.event":
            match.append(f"event: step_{i % 7}")
            if i % 2:
                match.append(
                    'fields: {event.message: {regex: "(?i)^msg"}, run.snapshot.items_count: {gte: 0}}'
                )
        lines.append(f"  - name: rule-{i}")
        lines.append(f"    match: {{{', '.join(match)}}}")
        lines.append("    notify: [ch]")
        lines.append('    title: "{{ provider }} {{ monitor_id }} {{ run_id }}: {{ to }}"')
    return "\n".join(lines) + "\n"


def changes(n: int, rng: random.Random) -> list[Change]:
    out = []
    for i in range(n):
        provider = rng.choice(["exa", "olostep"])
        kind = ChangeKind.RUN_EVENT if provider == "olostep" and rng.random() < 0.7 else ChangeKind.RUN_STATUS
        to = rng.choice(["running", "completed", "failed"]) if kind is ChangeKind.RUN_STATUS else None
        event = (
            RunEvent(f"e{i}", i, f"step_{rng.randrange(20)}", "msg") if kind is ChangeKind.RUN_EVENT else None
        )
        out.append(
            Change(
                key=f"{provider}:r{i}:{kind}",
                kind=kind,
                provider=provider,
                monitor_id=f"monitor_team{rng.randrange(500)}_{i % 13}",
                run_id=f"run_{i}",
                run={"id": f"run_{i}", "snapshot": {"items_count": rng.randrange(3)}},
                monitor={"id": "m", "metadata": {"team": rng.choice(["search", "ads", "infra"])}},
                to_status=to,
                from_status="running" if to else None,
                failed_reason=rng.choice(["Quota exceeded", "crawler blocked", None])
                if to == "failed"
                else None,
                event=event,
            )
        )
    return out


def per_second(ruleset: RuleSet, items: list[Change], *, indexed: bool) -> tuple[float, int]:
    matched = 0
    start = time.process_time()
    for ch in items:
        if indexed:
            matched += len(ruleset.match(ch))
        else:
            for rule in ruleset.rules:
                if rule.matcher(ch) and rule.holds(ch):
                    rule.decide(ch)
                    matched += 1
    spent = time.process_time() - start
    return len(items) / spent, matched


def alert_memory(n: int) -> tuple[float, float]:
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    alerts = {}
    for i in range(n):
        last = {
            "id": f"msg_{i:032x}", "type": "run.status", "channel": "ch", "title": "t" * 60,
            "body": "b" * 120,
            "run_id": f"run_{i}", "provider": "exa", "monitor_id": f"monitor_{i}",
        }  # fmt: skip
        group = {"provider": "exa", "monitor_id": f"monitor_{i}"}
        a = OpenAlert(f"rule-{i % 100}|{i}", f"rule-{i % 100}", group, True, 1.0, [], 3601.0, 0, [last])
        alerts[a.key] = a
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    json_size = sum(len(a.to_json()) for a in alerts.values()) / n
    return grown / n, json_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", type=int, default=1000)
    p.add_argument("--changes", type=int, default=20000)
    p.add_argument("--alerts", type=int, default=10000)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.changes, args.alerts = 4000, 2000
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(rules_yaml(args.rules, rng))
        ruleset = load_rules([path], channels={"ch"})
        one = Path(tmp) / "one.yaml"
        one.write_text(rules_yaml(1, random.Random(1)))
        single = load_rules([one], channels={"ch"})
    items = changes(args.changes, rng)
    per_second(ruleset, items[:500], indexed=True)  # warm the index
    indexed, m1 = per_second(ruleset, items, indexed=True)
    linear, m2 = per_second(ruleset, items, indexed=False)
    floor, _ = per_second(single, items, indexed=True)
    assert m1 == m2, (m1, m2)
    mem, js = alert_memory(args.alerts)
    print(f"runwatch rule evaluation: {args.rules} rules, {args.changes} changes ({m1} matches), one core")
    print(f"  indexed RuleSet          {indexed:>10,.0f} changes/s   (goal >= 20,000/s)")
    print(f"  same rules, scanned      {linear:>10,.0f} changes/s   baseline: {indexed / linear:.1f}x faster")
    print(f"  a single rule (floor)    {floor:>10,.0f} changes/s   {indexed / floor:.2f}x of the floor")
    print(f"memory per open alert      {mem:>10,.0f} bytes       (goal <= 2 KB)")
    print(f"  baseline: its JSON in the state, {js:,.0f} bytes")


if __name__ == "__main__":
    main()
