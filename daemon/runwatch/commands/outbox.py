"""``runwatch outbox list | replay | purge``: the notification log, beside a running daemon or not.

The outbox is opened with :func:`runwatch.store.open_shared` (no lock, never creates a state; SQLite's
WAL, or PostgreSQL, lets these commands read and write while the daemon does). Every line printed
passes through :func:`runwatch.redact.redact`, after the config's channel secrets have been
registered, so a secret stored in an old error text stays hidden.

Each command returns its exit status; anything that stops it is a :class:`~runwatch.errors.RunwatchError`
(the CLI prints it as one line and exits 1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runwatch.commands.common import load, opened_outbox, say
from runwatch.model import rfc3339
from runwatch.redact import redact
from runwatch.store import OutboxItem
from runwatch.store.interfaces import Outbox

if TYPE_CHECKING:
    pass

#: Rows ``outbox list`` shows as a table unless ``--limit`` says otherwise (``--json`` shows all).
TABLE_LIMIT = 100
#: The terminal width assumed when the output is not a terminal.
DEFAULT_WIDTH = 120
#: The last-error column never shrinks below this, however narrow the terminal.
MIN_ERROR_WIDTH = 30
#: Channel and rule names longer than this are cut in the table (``--json`` has them whole).
MAX_NAME_WIDTH = 24
FINISHED_STATES: tuple[str, ...] = ("sent", "dead", "silenced")


# -- outbox list --------------------------------------------------------------------------------------
def format_age(seconds: float) -> str:
    """The largest whole unit: ``3s``, ``5m``, ``2h``, ``1d`` (a clock a little behind reads ``0s``)."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def item_record(item: OutboxItem, now: float) -> dict[str, Any]:
    """One notification as ``outbox list --json`` prints it (times RFC 3339 UTC; strings redacted).

    ``next_attempt_at`` is null unless the row is pending: a finished row has no next attempt.
    """
    return {
        "id": item.id,
        "channel": item.channel,
        "rule": item.rule,
        "severity": item.severity,
        "state": item.state,
        "attempts": item.attempts,
        "created_at": rfc3339(item.created_at),
        "age_seconds": round(max(0.0, now - item.created_at), 3),
        "next_attempt_at": rfc3339(item.next_attempt_at) if item.state == "pending" else None,
        "finished_at": rfc3339(item.finished_at),
        "last_error": None if item.last_error is None else redact(item.last_error),
        "title": redact(item.title),
    }


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def render_table(items: Sequence[OutboxItem], now: float, width: int) -> list[str]:
    """A header and one aligned line per item; the last error is cut to what the width leaves."""
    header = ("ID", "CHANNEL", "RULE", "STATE", "ATTEMPTS", "AGE")
    right = {4, 5}  # attempts and age: numbers line up on the right
    rows = [
        (
            i.id,
            _cut(i.channel, MAX_NAME_WIDTH),
            _cut(i.rule, MAX_NAME_WIDTH),
            i.state,
            str(i.attempts),
            format_age(now - i.created_at),
        )
        for i in items
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    used = sum(widths) + 2 * len(widths)
    room = max(MIN_ERROR_WIDTH, width - used)

    def line(cells: Sequence[str], error: str) -> str:
        padded = [
            c.rjust(w) if k in right else c.ljust(w)
            for k, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join([*padded, error]).rstrip()

    out = [line(header, "LAST ERROR")]
    for item, cells in zip(items, rows, strict=True):
        out.append(line(cells, _cut(redact(item.last_error), room) if item.last_error else "-"))
    return out


def describe_filter(state: str | None, channel: str | None) -> str:
    """`` (state dead, channel ops)``, or nothing without a filter."""
    parts = [f"state {state}" if state else "", f"channel {channel}" if channel else ""]
    shown = ", ".join(p for p in parts if p)
    return f" ({shown})" if shown else ""


def _matching(outbox: Outbox, state: str | None, channel: str | None) -> int:
    return sum(
        n
        for (c, s), n in outbox.counts().items()
        if (state is None or s == state) and (channel is None or c == channel)
    )


def outbox_list(
    config_path: Path,
    *,
    state: str | None,
    channel: str | None,
    as_json: bool,
    limit: int | None,
    out: TextIO,
) -> int:
    """``runwatch outbox list``: newest first, as a table or (``--json``) a JSON array.

    ``limit`` None means the default (:data:`TABLE_LIMIT` rows for the table, all for JSON); 0 means all.
    """
    config = load(config_path)
    effective = (None if as_json else TABLE_LIMIT) if limit is None else (limit or None)
    now = time.time()
    with opened_outbox(config) as outbox:
        items = outbox.items(state=state, channel=channel, limit=effective)
        total = _matching(outbox, state, channel) if effective and len(items) == effective else len(items)
    if as_json:
        say(json.dumps([item_record(i, now) for i in items], indent=2), out)
        return 0
    if not items:
        say(f"no notifications{describe_filter(state, channel)}", out)
        return 0
    width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    for text in render_table(items, now, width):
        say(text, out)
    if total > len(items):
        say(f"(the newest {len(items)} of {total}; --limit 0 shows all)", out)
    return 0


# -- outbox replay ------------------------------------------------------------------------------------
def replay_ids(
    outbox: Outbox, ids: Sequence[str], channel: str | None, now: float
) -> tuple[int, list[str], list[str]]:
    """Replay each id on its own; returns (replayed, unknown ids, ids not on ``channel``).

    One statement per id, so every id that could not be replayed can be named; an operator gives a
    handful of ids, not thousands.
    """
    wanted = list(dict.fromkeys(ids))
    known = outbox.known_ids(wanted) if wanted else set()
    replayed, missed = 0, []
    for nid in (i for i in wanted if i in known):
        done = outbox.replay([nid], dead=False, channel=channel, now=now)
        replayed += done
        if not done:
            missed.append(nid)
    return replayed, [i for i in wanted if i not in known], missed


def outbox_replay(
    config_path: Path,
    ids: Sequence[str],
    *,
    dead: bool,
    channel: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """``runwatch outbox replay``: back to pending, due now, same id; 1 if an id was not replayed.

    The known ids are replayed even when others are unknown; a warning names channels that have
    pending rows but are not in the config (no worker of the daemon would ever send those).
    """
    config = load(config_path)
    now = time.time()
    with opened_outbox(config) as outbox:
        replayed, unknown, missed = replay_ids(outbox, ids, channel, now)
        if dead:
            replayed += outbox.replay([], dead=True, channel=channel, now=now)
        orphans = sorted(outbox.channels() - set(config.settings.channels))
    noun = "notification" if replayed == 1 else "notifications"
    what = ("every dead one" if dead else "the given ids") + (f" on channel {channel}" if channel else "")
    say(f"replayed {replayed} {noun} ({what}); a running daemon sends them within seconds", out)
    if unknown:
        say(f"runwatch: unknown notification id(s), not replayed: {', '.join(unknown)}", err)
    if missed:
        say(f"runwatch: not on channel {channel}, not replayed: {', '.join(missed)}", err)
    if orphans:
        say(
            f"warning: pending notifications for channels not in {config.shown}: {', '.join(orphans)};"
            " the daemon sends them only once the config has those channels again",
            err,
        )
    return 1 if unknown or missed else 0


# -- outbox purge -------------------------------------------------------------------------------------
def outbox_purge(config_path: Path, *, older_than: float, state: str | None, out: TextIO) -> int:
    """``runwatch outbox purge``: delete sent/dead rows that finished before now - older_than."""
    config = load(config_path)
    states = (state,) if state else FINISHED_STATES
    before = time.time() - older_than
    with opened_outbox(config) as outbox:
        purged = outbox.purge(before, states)
    noun = "notification" if purged == 1 else "notifications"
    which = " and ".join(states) if len(states) < 3 else f"{', '.join(states[:-1])} and {states[-1]}"
    say(f"purged {purged} {noun} ({which}, finished before {rfc3339(before)})", out)
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """``runwatch outbox list | replay | purge``, beside a running daemon or not."""
    from runwatch.commands import outbox as ops

    if args.action == "list":
        return ops.outbox_list(
            args.config, state=args.state, channel=args.channel, as_json=args.json, limit=args.limit,
            out=sys.stdout,
        )  # fmt: skip
    if args.action == "replay":
        return ops.outbox_replay(
            args.config, args.ids, dead=args.dead, channel=args.channel, out=sys.stdout, err=sys.stderr
        )
    if args.action == "purge":
        return ops.outbox_purge(args.config, older_than=args.older_than, state=args.state, out=sys.stdout)
    raise AssertionError(args.action)
