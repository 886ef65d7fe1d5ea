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

from runwatch.commands.common import load, say
from runwatch.errors import StateError
from runwatch.model import rfc3339
from runwatch.store import STATE_FILE
from runwatch.store.sqlite.silences import SilenceStore

if TYPE_CHECKING:
    pass


def parse_matchers(pairs: Sequence[str]) -> dict[str, str]:
    """``label=glob`` pairs -> a mapping; ValueError names the pair that is not one."""
    out: dict[str, str] = {}
    for pair in pairs:
        label, sep, glob = pair.partition("=")
        if not sep or not label.strip() or not glob:
            raise ValueError(f"--match {pair!r}: expected label=glob, e.g. monitor_id=monitor_prod_*")
        out[label.strip()] = glob
    return out


def _store(config_path: Path) -> SilenceStore:
    config = load(config_path)
    path = config.state_dir / STATE_FILE
    if not path.exists():
        raise StateError(f"no state at {path}: has the daemon run with this config (state_dir)?")
    return SilenceStore(path)


def silence_add(
    config_path: Path,
    matchers: dict[str, str],
    duration: float,
    comment: str,
    author: str | None,
    out: TextIO,
) -> int:
    store = _store(config_path)
    try:
        now = time.time()
        silence = store.add(matchers, now, now + duration, comment, author or getpass.getuser())
    finally:
        store.close()
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
    path = config.state_dir / STATE_FILE
    if path.exists():
        store = SilenceStore(path)
        try:
            stored = store.all()
        finally:
            store.close()
        for s in stored:
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


def silence_expire(config_path: Path, silence_id: str, out: TextIO, err: TextIO) -> int:
    store = _store(config_path)
    try:
        ok = store.expire(silence_id, time.time())
    finally:
        store.close()
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
