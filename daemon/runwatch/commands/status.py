"""``runwatch status --config C [--json]``: who is running, who polls what, and what waits, in one look.

Instances (name, last seen, config digest), the leader of each provider and since when, each provider's
last successful poll, the outbox by channel and state with the oldest pending notification, the open
alerts and the active silences. It reads the state beside a running daemon (never locks or creates
one), so it works on any host that has the config; with SQLite it shows the one instance.

``--json`` prints one object; ``instances`` (objects with ``name``) and ``leaders`` (provider ->
instance name, or null when none holds its lease) are the contract scripts rely on.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from runwatch.commands.common import load, opened_state, say
from runwatch.commands.outbox import format_age
from runwatch.config import Config
from runwatch.model import rfc3339
from runwatch.service.assemble import state_location
from runwatch.store import open_leases
from runwatch.store.alert_state import OpenAlert
from runwatch.store.interfaces import OUTBOX_STATES, Outbox, Silence
from runwatch.store.leases import RETENTION_LEASE, InstanceRecord, Lease, LeaseStore, poll_lease

#: An instance that has not beaten for this long is shown as gone (it beats every lease/3).
GONE_AFTER = 60.0


@dataclass
class Parts:
    """What status reads, from whichever store the config names."""

    outbox: Outbox
    leases: LeaseStore
    alerts: list[OpenAlert]
    silences: list[Silence]


@contextlib.contextmanager
def opened(config: Config) -> Iterator[Parts]:
    """The state's parts for reading, SQLite's or PostgreSQL's (``state.url``), beside running daemons:
    nothing is locked or created."""
    with opened_state(config) as shared:
        leases = open_leases(state_location(config), create=False)
        try:
            yield Parts(shared.outbox, leases, shared.open_alerts(), shared.silences.all())
        finally:
            leases.close()


def collect(config: Config, parts: Parts, now: float) -> dict[str, Any]:
    """Everything status shows, as the JSON object ``--json`` prints."""
    instances = parts.leases.instances()
    leases = {x.name: x for x in parts.leases.leases()}
    providers = list(config.enabled_providers())
    providers += sorted(
        n.split(":", 1)[1] for n in leases if n.startswith("poll:") and n[5:] not in providers
    )
    counts = parts.outbox.counts()
    channels = sorted(set(config.settings.channels) | {c for c, _ in counts})
    oldest = _oldest_pending(parts.outbox)
    return {
        "instances": [_instance(i) for i in instances],
        "leaders": {p: _holder(leases.get(poll_lease(p))) for p in providers},
        "leases": [_lease(x) for x in leases.values()],
        "last_successful_poll": {
            p: max((i.polls[p] for i in instances if p in i.polls), default=None) for p in providers
        },
        "outbox": {c: {s: counts.get((c, s), 0) for s in OUTBOX_STATES} for c in channels},
        "oldest_pending": None
        if oldest is None
        else {
            "id": oldest[0],
            "channel": oldest[1],
            "created_at": rfc3339(oldest[2]),
            "age_seconds": round(max(0.0, now - oldest[2]), 3),
        },
        "open_alerts": [
            {
                "rule": a.rule,
                "group": dict(a.group),
                "state": "firing" if a.firing else "pending",
                "opened_at": None if a.opened_at is None else rfc3339(a.opened_at),
            }
            for a in sorted(parts.alerts, key=lambda a: (a.rule, a.key))
        ],
        "silences": _silences(config, parts.silences, now),
    }


def _instance(i: InstanceRecord) -> dict[str, Any]:
    return {
        "name": i.name,
        "last_seen": rfc3339(i.last_seen),
        "last_seen_seconds_ago": round(i.age, 3),
        "alive": i.age < GONE_AFTER,
        "config_digest": i.digest,
    }


def _holder(lease: Lease | None) -> str | None:
    return lease.holder if lease is not None and lease.held else None


def _lease(x: Lease) -> dict[str, Any]:
    return {
        "name": x.name,
        "holder": x.holder if x.held else None,
        "last_holder": x.holder,
        "token": x.token,
        "since": rfc3339(x.acquired_at),
        "held": x.held,
    }


def _oldest_pending(outbox: Outbox) -> tuple[str, str, float] | None:
    """(id, channel, created_at) of the notification that has waited longest."""
    by_channel = outbox.oldest_pending()
    if not by_channel:
        return None
    channel = min(by_channel, key=lambda c: by_channel[c])
    waiting = outbox.items(state="pending", channel=channel, limit=None)  # newest first
    oldest = min(waiting, key=lambda x: x.created_at, default=None)
    return (oldest.id if oldest else "?", channel, by_channel[channel])


def _silences(config: Config, stored: list[Silence], now: float) -> list[dict[str, Any]]:
    """The silences active now: the config's and those added with ``silence add``."""
    out: list[dict[str, Any]] = []
    for i, spec in enumerate(config.settings.silences):
        if spec.active(now):
            out.append({"id": f"config#{i + 1}", "matchers": dict(spec.matchers), "comment": spec.comment})
    for s in stored:
        if s.active(now):
            ends = min(s.ends_at, s.expired_at) if s.expired_at is not None else s.ends_at
            out.append(
                {"id": s.id, "matchers": dict(s.matchers), "comment": s.comment, "ends_at": rfc3339(ends)}
            )
    return out


def render(status: dict[str, Any], now: float) -> list[str]:
    """The human view: one block per question, one line per thing."""
    lines = ["instances:"]
    for i in status["instances"]:
        gone = "" if i["alive"] else "  (gone?)"
        lines.append(
            f"  {i['name']:<24} last seen {format_age(i['last_seen_seconds_ago'])} ago"
            f"  config {i['config_digest']}{gone}"
        )
    if not status["instances"]:
        lines.append("  none yet (no daemon of this version has run on this state)")
    digests = {i["config_digest"] for i in status["instances"] if i["alive"]}
    if len(digests) > 1:
        lines.append("  warning: the instances' configs differ (runwatch_config_mismatch)")
    lines.append("leaders:")
    leases = {x["name"]: x for x in status["leases"]}
    for provider in status["leaders"]:
        lines.append(f"  {provider:<12} {_led_by(leases.get(poll_lease(provider)))}")
    if RETENTION_LEASE in leases:
        lines.append(f"  {'(retention)':<12} {_led_by(leases[RETENTION_LEASE])}")
    lines.append("last successful poll:")
    for provider, at in status["last_successful_poll"].items():
        lines.append(
            f"  {provider:<12} {'never' if at is None else f'{rfc3339(at)} ({format_age(now - at)} ago)'}"
        )
    lines.append("outbox:")
    for channel, states in status["outbox"].items():
        lines.append(f"  {channel:<24} " + "  ".join(f"{s} {n}" for s, n in states.items()))
    oldest = status["oldest_pending"]
    if oldest is None:
        lines.append("  oldest pending: none")
    else:
        age = format_age(oldest["age_seconds"])
        lines.append(f"  oldest pending: {oldest['id']} to {oldest['channel']}, {age} old")
    lines.append(f"open alerts: {len(status['open_alerts'])}")
    for a in status["open_alerts"]:
        group = ",".join(f"{k}={v}" for k, v in sorted(a["group"].items()))
        lines.append(f"  {a['rule']:<24} {a['state']:<8} {group}  since {a['opened_at'] or '-'}")
    lines.append(f"active silences: {len(status['silences'])}")
    for s in status["silences"]:
        matchers = ",".join(f"{k}={v}" for k, v in s["matchers"].items())
        lines.append(f"  {s['id']:<18} {matchers}  until {s.get('ends_at', '(config)')}  {s['comment']}")
    return lines


def _led_by(lease: dict[str, Any] | None) -> str:
    if lease is None:
        return "nobody (never taken)"
    if not lease["held"]:
        return f"nobody (last: {lease['last_holder']}, token {lease['token']})"
    return f"{lease['holder']} since {lease['since']}, token {lease['token']}"


def status(config_path: Path, *, as_json: bool, out: TextIO) -> int:
    config = load(config_path)
    now = time.time()
    with opened(config) as parts:
        found = collect(config, parts, now)
    if as_json:
        say(json.dumps(found, indent=2), out)
    else:
        say("\n".join(render(found, now)), out)
    return 0


def cmd_status(config_path: Path, as_json: bool) -> int:
    """``runwatch status``."""
    import sys

    return status(config_path, as_json=as_json, out=sys.stdout)
