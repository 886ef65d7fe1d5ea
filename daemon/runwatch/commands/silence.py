"""``runwatch silence add | list | expire``: silences beside a running daemon, kept in its state.

A silence added here holds back matching notifications when they are due (the daemon re-reads the
silences every few seconds); ``expire`` ends one now. Silences from the config are listed too (they
change only with the config).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runwatch.commands.common import load, opened_state, say
from runwatch.errors import StateMissingError
from runwatch.model import rfc3339
from runwatch.store.interfaces import Silence

if TYPE_CHECKING:
    from runwatch.config import Config


def parse_matchers(pairs: Sequence[str]) -> dict[str, str]:
    """``label=glob`` pairs -> a mapping; ValueError names the pair that is not one."""
    out: dict[str, str] = {}
    for pair in pairs:
        label, sep, glob = pair.partition("=")
        if not sep or not label.strip() or not glob:
            raise ValueError(f"--match {pair!r}: expected label=glob, e.g. monitor_id=monitor_prod_*")
        out[label.strip()] = glob
    return out


def silence_add(
    config_path: Path,
    matchers: dict[str, str],
    duration: float,
    comment: str,
    author: str | None,
    out: TextIO,
) -> int:
    with opened_state(load(config_path)) as state:
        now = time.time()
        silence = state.silences.add(matchers, now, now + duration, comment, author or getpass.getuser())
    say(silence.id, out)
    return 0


def silence_list(config_path: Path, *, as_json: bool, out: TextIO) -> int:
    config = load(config_path)
    now = time.time()
    rows: list[dict[str, object]] = []
    for i, spec in enumerate(config.settings.silences):
        rows.append(
            {
                "id": f"config#{i + 1}",
                "matchers": spec.matchers,
                "active": spec.active(now),
                "window": f"cron {spec.cron!r} for {spec.duration:g}s ({spec.timezone})"
                if spec.cron
                else f"{spec.starts_at or '-'} .. {spec.ends_at}",
                "comment": spec.comment,
                "created_by": spec.created_by,
            }
        )
    for s in _stored(config):
        ends = min(s.ends_at, s.expired_at) if s.expired_at is not None else s.ends_at
        rows.append(
            {
                "id": s.id,
                "matchers": dict(s.matchers),
                "active": s.active(now),
                "window": f"{rfc3339(s.starts_at)} .. {rfc3339(ends)}"
                + (" (expired)" if s.expired_at is not None else ""),
                "comment": s.comment,
                "created_by": s.created_by,
            }
        )
    if as_json:
        say(json.dumps(rows, indent=2), out)
        return 0
    if not rows:
        say("no silences", out)
        return 0
    for r in rows:
        matchers = ",".join(f"{k}={v}" for k, v in dict(r["matchers"]).items())  # type: ignore[call-overload]
        state = "active" if r["active"] else "inactive"
        say(f"{r['id']:<18} {state:<8} {matchers}  {r['window']}  {r['comment']} ({r['created_by']})", out)
    return 0


def _stored(config: Config) -> list[Silence]:
    """The silences kept in the state; none while there is no state yet."""
    try:
        with opened_state(config) as state:
            return state.silences.all()
    except StateMissingError:
        return []


def silence_expire(config_path: Path, silence_id: str, out: TextIO, err: TextIO) -> int:
    with opened_state(load(config_path)) as state:
        ok = state.silences.expire(silence_id, time.time())
    if not ok:
        say(f"runwatch: no active silence {silence_id!r} (see runwatch silence list)", err)
        return 1
    say(f"expired {silence_id}", out)
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    """``runwatch silence add | list | expire``."""
    from runwatch.commands import silence as sc

    if args.action == "add":
        try:
            matchers = sc.parse_matchers(args.match)
        except ValueError as exc:
            print(f"runwatch: {exc}", file=sys.stderr)
            return 2
        return sc.silence_add(args.config, matchers, args.duration, args.comment, args.created_by, sys.stdout)
    if args.action == "list":
        return sc.silence_list(args.config, as_json=args.json, out=sys.stdout)
    if args.action == "expire":
        return sc.silence_expire(args.config, args.id, sys.stdout, sys.stderr)
    raise AssertionError(args.action)
