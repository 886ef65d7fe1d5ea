"""The operator's commands: ``outbox list | replay | purge`` and ``send-test``.

They run beside a live daemon: the outbox is opened with :func:`runwatch.store.open_outbox` (no lock,
never creates a state; WAL lets them read and write while the daemon does), and ``send-test`` does not
open the state at all. Channels are built with the daemon's own code, so what ``send-test`` proves is
what the daemon will do. Every line printed passes through :func:`runwatch.redact.redact`, after the
config's channel secrets have been registered, so a secret stored in an old error text stays hidden.

Each command returns its exit status; anything that stops it is a :class:`~runwatch.errors.RunwatchError`
(the CLI prints it as one line and exits 1).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from runwatch.config import Config, load_config
from runwatch.delivery.channel import Channel, ChannelSetupError, Delivered, Outcome, Permanent, Retry
from runwatch.delivery.registry import build_channel
from runwatch.errors import DeliveryError, StateError
from runwatch.model import Alert, rfc3339
from runwatch.redact import redact, register
from runwatch.store import STATE_FILE, OutboxItem, SqliteOutbox, open_outbox
from runwatch.yamlfile import FileProblems, Problem

#: Rows ``outbox list`` shows as a table unless ``--limit`` says otherwise (``--json`` shows all).
TABLE_LIMIT = 100
#: The terminal width assumed when the output is not a terminal.
DEFAULT_WIDTH = 120
#: The last-error column never shrinks below this, however narrow the terminal.
MIN_ERROR_WIDTH = 30
#: Channel and rule names longer than this are cut in the table (``--json`` has them whole).
MAX_NAME_WIDTH = 24
FINISHED_STATES: tuple[str, ...] = ("sent", "dead", "silenced")


def say(text: str, stream: TextIO) -> None:
    """Print one redacted line (or block): the only way these commands write."""
    print(redact(text), file=stream)


# -- config and state ---------------------------------------------------------------------------------
def load(path: Path) -> Config:
    """The config as ``run`` reads it, with every channel's secrets registered for redaction.

    Building each channel with the daemon's code registers exactly what the daemon would mask; a
    channel that cannot be built is skipped here (``check`` is the place to hear about it).
    """
    config = load_config(path)
    for provider in config.enabled_providers().values():
        if provider.api_key is not None:
            register(provider.api_key.get_secret_value())
    for name, block in config.settings.channels.items():
        with contextlib.suppress(ChannelSetupError):
            build_channel(name, block, base_dir=config.base_dir).close()
    return config


@contextlib.contextmanager
def opened_outbox(config: Config) -> Iterator[SqliteOutbox]:
    """The outbox of the config's state, closed after; SQLite failures become one StateError line."""
    path = config.state_dir / STATE_FILE
    outbox = open_outbox(config.state_dir)
    try:
        yield outbox
    except sqlite3.Error as exc:
        raise StateError(f"state file {path}: {exc}") from None
    finally:
        outbox.close()


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


def _matching(outbox: SqliteOutbox, state: str | None, channel: str | None) -> int:
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
    outbox: SqliteOutbox, ids: Sequence[str], channel: str | None, now: float
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


# -- send-test ----------------------------------------------------------------------------------------
def sample_alert(channel: str, now: float) -> Alert:
    """A notification that says it is a test, shaped like a real ``run.status`` alert."""
    return Alert(
        id=f"msg_test_{secrets.token_hex(8)}",
        type="run.status",
        channel=channel,
        provider="exa",
        monitor_id="monitor_test",
        run_id="mrun_test",
        rule="send-test",
        severity="info",
        title=f"runwatch test notification to {channel}",
        body=(
            f"This is a test sent by `runwatch send-test {channel}`; no run changed.\n"
            "It looks like a real alert: exa monitor monitor_test, run mrun_test, running -> failed.\n"
            "If you can read this, the channel works."
        ),
        detected_at=now,
        occurred_at=now,
        from_status="running",
        to_status="failed",
        failed_reason="none: this is a test",
        labels={"test": "true"},
        run={"id": "mrun_test", "status": "failed", "test": True},
    )


def build_one(config: Config, name: str) -> Channel:
    """The one channel ``name``, built as the daemon builds it; RunwatchError if it is not usable."""
    channels = config.settings.channels
    if name not in channels:
        configured = ", ".join(sorted(channels)) or "none"
        raise DeliveryError(f"unknown channel {name!r}; configured channels: {configured}")
    try:
        return build_channel(name, channels[name], base_dir=config.base_dir)
    except ChannelSetupError as exc:
        loc = ["channels", name, *exc.field.split(".")]
        raise FileProblems(
            [Problem(config.shown, config.line_of(*loc), ".".join(loc), exc.message)]
        ) from None


def describe_outcome(channel: Channel, outcome: Outcome, millis: float, alert_id: str) -> str:
    """One line: channel, outcome, status, latency, and the error detail when there is one."""
    status = getattr(outcome, "status", None)
    facts = [f"status {status}"] if status is not None else []
    if isinstance(outcome, Retry | Permanent):
        facts.append(outcome.reason)
    if isinstance(outcome, Retry) and outcome.after is not None:
        facts.append(f"retry after {outcome.after:g}s")
    kind = {Delivered: "delivered", Retry: "retry", Permanent: "permanent"}[type(outcome)]
    head = f"{channel.name} ({channel.kind}): {kind} in {millis:.0f} ms"
    head += f" ({', '.join(facts)})" if facts else ""
    if isinstance(outcome, Delivered):
        return f"{head}; id {alert_id}"
    return f"{head}: {outcome.detail}"


def send_test(config_path: Path, name: str, *, out: TextIO) -> int:
    """``runwatch send-test CHANNEL``: one sample alert through the real channel, now; 0 if delivered."""
    config = load(config_path)
    channel = build_one(config, name)
    alert = sample_alert(name, time.time())
    try:
        started = time.perf_counter()
        try:
            outcome = channel.send(alert)
        except Exception as exc:  # a channel should report, not raise; if one does, say what it raised
            raise DeliveryError(f"send-test {name}: the channel raised {type(exc).__name__}: {exc}") from None
        millis = (time.perf_counter() - started) * 1000
    finally:
        channel.close()
    say(describe_outcome(channel, outcome, millis, alert.id), out)
    return 0 if isinstance(outcome, Delivered) else 1
