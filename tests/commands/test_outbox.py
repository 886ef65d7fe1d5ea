"""The operator's commands as an operator runs them: ``python -m runwatch outbox ...`` and ``send-test``.

Each test builds a real state with :class:`runwatch.store.State` (rows moved through claim, delivered,
retry and dead like the daemon moves them), then runs the command in a subprocess. One test does it
beside a running daemon and waits on the receiver (an event), never on the clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from runwatch.store import Location, Notification, State, open_state
from runwatch.store.interfaces import Store
from tests.conftest import ReceiverServer, make_alert, write_config

RUN = [sys.executable, "-m", "runwatch"]
DAY = 86400.0
APPRISE_PASSWORD = "Passw0rdSecret77"
SLACK_TOKEN = "TokenCCCCCCCCCCCCCCC"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def one_line(text: str) -> str:
    """The only line of ``text``: what an operator reads must not come with a traceback."""
    assert "Traceback" not in text
    [line] = text.strip().splitlines()
    return line


def cli_env(columns: int = 120) -> dict[str, str]:
    """The environment without provider keys or credentials (nothing polls), at a known width."""
    drop = ("EXA_API_KEY", "OLOSTEP_API_KEY", "CREDENTIALS_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("RUNWATCH_")}
    env["COLUMNS"] = str(columns)
    return env


def cli(*args: str, columns: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUN, *args], capture_output=True, text=True, timeout=60, check=False, env=cli_env(columns)
    )


async def acli(*args: str) -> subprocess.CompletedProcess[str]:
    """``cli`` from an async test: the test's event loop keeps serving the receiver meanwhile."""
    return await anyio.to_thread.run_sync(lambda: cli(*args))


LOCAL = "  ops: {apprise: 'json://127.0.0.1:9/ops'}\n  other: {apprise: 'json://127.0.0.1:9/other'}\n"


def config(tmp_path: Path, channels: str = LOCAL, state_url: str | None = None) -> Path:
    shared = f"state: {{url: '{state_url}'}}\n" if state_url else ""
    return write_config(
        tmp_path,
        f"metrics_listen: 127.0.0.1:0\nstate_dir: state\n{shared}channels:\n{channels}",
        "rules: []\n",
    )


@dataclass
class Seeded:
    """The ids of the rows a test made, by what was done to them."""

    sent: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)


def queue(state: Store, n: int, channel: str, created: float) -> str:
    alert = make_alert(n, channel=channel, title=f"title {n}")
    state.record("exa", [], [Notification(alert)], created)
    return alert.id


def seed_every_state(state_dir: Path, now: float) -> Seeded:
    """Oldest to newest: sent 2d ago, dead 3h ago, retrying (5m old), pending (5m old)."""
    out = Seeded()
    state = State(state_dir)
    try:
        ob = state.outbox
        out.sent.append(queue(state, 0, "ops", now - 2 * DAY))
        out.dead.append(queue(state, 1, "ops", now - 3 * 3600))
        out.retrying.append(queue(state, 2, "other", now - 300))
        out.pending.append(queue(state, 3, "ops", now - 300))
        sent, dead, kept = ob.claim("ops", now, 10, "test", 60)
        ob.delivered(sent.seq, now - 2 * DAY + 10)
        ob.dead(dead.seq, "http_4xx: HTTP 410: gone", now - 3 * 3600)
        ob.release([kept.seq])
        [retrying] = ob.claim("other", now, 10, "test", 60)
        ob.retry(retrying.seq, "http_5xx: HTTP 503: " + "upstream unavailable " * 20, now + 600)
    finally:
        state.close()
    return out


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, Seeded]:
    cfg = config(tmp_path)
    return cfg, seed_every_state(tmp_path / "state", time.time())


# -- outbox list --------------------------------------------------------------------------------------
def test_list_is_a_table_newest_first_with_age_attempts_and_last_error(seeded: tuple[Path, Seeded]) -> None:
    cfg, ids = seeded
    out = cli("outbox", "list", "--config", str(cfg), columns=110)
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split() == ["ID", "CHANNEL", "RULE", "STATE", "ATTEMPTS", "AGE", "LAST", "ERROR"]
    assert [line.split()[0] for line in lines] == [*ids.pending, *ids.retrying, *ids.dead, *ids.sent]
    cells = [line.split()[1:6] for line in lines]
    assert cells == [
        ["ops", "rule", "pending", "0", "5m"],
        ["other", "rule", "pending", "1", "5m"],
        ["ops", "rule", "dead", "1", "3h"],
        ["ops", "rule", "sent", "1", "2d"],
    ]
    assert lines[2].endswith("http_4xx: HTTP 410: gone")
    # The long error is cut to the terminal's width; the columns stay aligned.
    assert lines[1].endswith("...") and len(lines[1]) <= 110
    assert lines[1].index("http_5xx") == header.index("LAST ERROR")
    assert lines[0].endswith("  -")


def test_list_json_has_every_field_for_scripts(seeded: tuple[Path, Seeded]) -> None:
    cfg, ids = seeded
    out = cli("outbox", "list", "--json", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == [*ids.pending, *ids.retrying, *ids.dead, *ids.sent]
    dead = rows[2]
    assert set(dead) == {
        "id", "channel", "rule", "severity", "state", "attempts", "created_at", "age_seconds",
        "next_attempt_at", "finished_at", "last_error", "title",
    }  # fmt: skip
    assert (dead["state"], dead["channel"], dead["severity"], dead["title"]) == (
        "dead",
        "ops",
        "critical",
        "title 1",
    )
    assert dead["created_at"].endswith("Z") and dead["finished_at"].endswith("Z")
    assert dead["next_attempt_at"] is None  # a finished row has no next attempt
    assert 3 * 3600 <= dead["age_seconds"] < 3 * 3600 + 60
    assert rows[1]["next_attempt_at"] is not None and rows[1]["last_error"].startswith("http_5xx")
    assert rows[0]["finished_at"] is None and rows[0]["last_error"] is None

    only = json.loads(
        cli("outbox", "list", "--json", "--state", "pending", "--channel", "ops", "-c", str(cfg)).stdout
    )
    assert [r["id"] for r in only] == ids.pending
    limited = json.loads(cli("outbox", "list", "--json", "--limit", "1", "--config", str(cfg)).stdout)
    assert [r["id"] for r in limited] == ids.pending


def test_list_says_when_nothing_matches_and_when_rows_are_left_out(seeded: tuple[Path, Seeded]) -> None:
    cfg, _ = seeded
    out = cli("outbox", "list", "--state", "sent", "--channel", "other", "--config", str(cfg))
    assert (out.returncode, out.stdout.strip()) == (0, "no notifications (state sent, channel other)")
    assert (
        cli(
            "outbox", "list", "--json", "--state", "sent", "--channel", "other", "-c", str(cfg)
        ).stdout.strip()
        == "[]"
    )
    cut = cli("outbox", "list", "--limit", "2", "--config", str(cfg))
    assert cut.returncode == 0
    assert len(cut.stdout.splitlines()) == 4  # header, 2 rows, and the note
    assert cut.stdout.splitlines()[-1] == "(the newest 2 of 4; --limit 0 shows all)"


# -- outbox replay ------------------------------------------------------------------------------------
def test_replay_by_id_replays_the_known_ones_and_names_the_unknown(seeded: tuple[Path, Seeded]) -> None:
    cfg, ids = seeded
    out = cli("outbox", "replay", ids.dead[0], "msg_nosuchid", ids.sent[0], "--config", str(cfg))
    assert out.returncode == 1
    assert out.stdout.startswith("replayed 2 notifications")
    assert out.stderr.strip() == "runwatch: unknown notification id(s), not replayed: msg_nosuchid"
    rows = {r["id"]: r for r in json.loads(cli("outbox", "list", "--json", "-c", str(cfg)).stdout)}
    for nid in (ids.dead[0], ids.sent[0]):  # same id, back to pending, due now, attempts reset
        assert (rows[nid]["state"], rows[nid]["attempts"], rows[nid]["finished_at"]) == ("pending", 0, None)


def test_replay_dead_by_channel_and_ids_on_another_channel(seeded: tuple[Path, Seeded]) -> None:
    cfg, ids = seeded
    other = cli("outbox", "replay", "--dead", "--channel", "other", "--config", str(cfg))
    assert (other.returncode, other.stdout.split()[:2]) == (0, ["replayed", "0"])
    wrong = cli("outbox", "replay", ids.dead[0], "--channel", "other", "--config", str(cfg))
    assert wrong.returncode == 1 and f"not on channel other, not replayed: {ids.dead[0]}" in wrong.stderr
    ops = cli("outbox", "replay", "--dead", "--channel", "ops", "--config", str(cfg))
    assert (ops.returncode, ops.stdout.split()[:3], ops.stderr) == (0, ["replayed", "1", "notification"], "")
    assert cli("outbox", "list", "--state", "dead", "-c", str(cfg)).stdout.startswith("no notifications")


def test_replay_warns_about_pending_rows_no_configured_channel_will_send(seeded: tuple[Path, Seeded]) -> None:
    cfg, ids = seeded
    cfg.write_text(cfg.read_text().replace("  other:", "  renamed:"))
    out = cli("outbox", "replay", ids.dead[0], "--config", str(cfg))
    assert out.returncode == 0 and out.stdout.startswith("replayed 1 notification")
    assert one_line(out.stderr).startswith(
        f"warning: pending notifications for channels not in {cfg}: other;"
    )


def test_replay_needs_ids_or_dead(tmp_path: Path) -> None:
    for args in ([], ["--dead", "msg_x"]):
        out = cli("outbox", "replay", *args, "--config", str(config(tmp_path)))
        assert out.returncode == 2 and "give notification ids or --dead" in out.stderr


# -- outbox purge -------------------------------------------------------------------------------------
def test_purge_deletes_finished_rows_older_than_and_never_pending(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    now = time.time()
    state = State(tmp_path / "state")
    old = [queue(state, n, "ops", now - 40 * DAY) for n in range(4)]  # sent, dead, dead-recent, pending
    recent = queue(state, 9, "ops", now - DAY)
    ob = state.outbox
    rows = ob.claim("ops", now, 10, "test", 60)
    ob.delivered(rows[0].seq, now - 40 * DAY)
    ob.dead(rows[1].seq, "http_4xx: HTTP 400", now - 35 * DAY)
    ob.dead(rows[2].seq, "http_4xx: HTTP 400", now - 2 * DAY)
    ob.release([rows[3].seq])
    ob.delivered(rows[4].seq, now - DAY)
    state.close()

    dead_only = cli("outbox", "purge", "--older-than", "30d", "--state", "dead", "--config", str(cfg))
    assert dead_only.returncode == 0 and dead_only.stdout.startswith("purged 1 notification (dead,")
    both = cli("outbox", "purge", "--older-than", "30d", "--config", str(cfg))
    assert both.returncode == 0 and both.stdout.startswith("purged 1 notification (sent, dead and silenced,")
    left = {r["id"]: r["state"] for r in json.loads(cli("outbox", "list", "--json", "-c", str(cfg)).stdout)}
    assert left == {old[2]: "dead", old[3]: "pending", recent: "sent"}  # the 40-day-old pending stays

    bad = cli("outbox", "purge", "--older-than", "soon", "--config", str(cfg))
    assert bad.returncode == 2 and "is not a duration" in bad.stderr


# -- beside a running daemon --------------------------------------------------------------------------
@dataclass
class RunningDaemon:
    """A ``runwatch run`` subprocess; ``lines``: its stderr so far (a thread reads it, so it never blocks)."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "runwatch.started" in line:
                self.started.set()
        self.started.set()  # it ended: stop waiting either way


@contextmanager
def running_daemon(cfg: Path) -> Iterator[RunningDaemon]:
    """Start ``runwatch run``; on exit SIGTERM it (if still running) and wait for it."""
    proc = subprocess.Popen(
        [*RUN, "run", "--config", str(cfg)], stderr=subprocess.PIPE, text=True, env=cli_env()
    )
    daemon = RunningDaemon(proc)
    reader = threading.Thread(target=daemon.read, daemon=True)
    reader.start()
    try:
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


async def wait_started(daemon: RunningDaemon) -> None:
    await anyio.to_thread.run_sync(lambda: daemon.started.wait(30))
    assert daemon.proc.poll() is None, "".join(daemon.lines)


async def stop(daemon: RunningDaemon) -> int:
    daemon.proc.send_signal(signal.SIGTERM)
    return await anyio.to_thread.run_sync(lambda: daemon.proc.wait(timeout=30))


@pytest.mark.anyio
async def test_operator_commands_beside_a_running_daemon(
    tmp_path: Path, receiver: ReceiverServer, state_url: str | None
) -> None:
    """The daemon holds the state; list, replay and purge work beside it; replayed rows go out in < 5 s.
    On either store: the commands find it from the same config."""
    cfg = config(
        tmp_path,
        f"  ops: {{apprise: '{receiver.url('/ops')}'}}\n  other: {{apprise: '{receiver.url('/other')}'}}\n",
        state_url,
    )
    now = time.time()
    state = open_state(Location(tmp_path / "state", state_url))
    ops = [queue(state, n, "ops", now - 60) for n in range(3)]
    other, parked = queue(state, 3, "other", now - 60), queue(state, 4, "other", now - 3 * 3600)
    for channel in ("ops", "other"):
        for row in state.outbox.claim(channel, now, 10, "test", 60):
            finished = now - 2 * 3600 if row.id == parked else now - 30
            state.outbox.dead(row.seq, "http_4xx: HTTP 410: gone", finished)
    state.close()

    with running_daemon(cfg) as daemon:
        await wait_started(daemon)
        listed = await acli("outbox", "list", "--state", "dead", "--json", "--config", str(cfg))
        assert listed.returncode == 0, listed.stderr
        assert {r["id"] for r in json.loads(listed.stdout)} == {*ops, other, parked}

        by_id = await acli("outbox", "replay", other, "msg_unknown_one", "--config", str(cfg))
        assert by_id.returncode == 1 and by_id.stdout.startswith("replayed 1 notification")
        assert "msg_unknown_one" in by_id.stderr
        dead = await acli("outbox", "replay", "--dead", "--channel", "ops", "--config", str(cfg))
        assert dead.returncode == 0 and dead.stdout.startswith("replayed 3 notifications")
        await receiver.receiver.wait_for(3, "/ops", timeout=5)
        await receiver.receiver.wait_for(1, "/other", timeout=5)

        purged = await acli("outbox", "purge", "--older-than", "1h", "--state", "dead", "-c", str(cfg))
        assert purged.returncode == 0 and purged.stdout.startswith("purged 1 notification")
        assert await stop(daemon) == 0, "".join(daemon.lines)

    titles = sorted(body["title"] for _, body in receiver.receiver.messages)
    assert titles == ["title 0", "title 1", "title 2", "title 3"]
    rows = json.loads((await acli("outbox", "list", "--json", "--config", str(cfg))).stdout)
    assert {r["id"]: r["state"] for r in rows} == dict.fromkeys([*ops, other], "sent")


# -- send-test ----------------------------------------------------------------------------------------
def send_test_config(tmp_path: Path, receiver: ReceiverServer) -> Path:
    port = receiver.http.port
    return config(
        tmp_path,
        f"  ops: {{apprise: 'json://runwatch:{APPRISE_PASSWORD}@127.0.0.1:{port}/ops'}}\n"
        f"  hook:\n    webhook: {{url: 'http://127.0.0.1:{port}/hook', secret: '{WEBHOOK_SECRET}'}}\n"
        f"  slack: {{apprise: 'slack://TokenAAAAAAA/TokenBBBBBBB/{SLACK_TOKEN}/#ops'}}\n",
    )


@pytest.mark.anyio
async def test_send_test_delivers_through_the_real_channels(tmp_path: Path, receiver: ReceiverServer) -> None:
    cfg = send_test_config(tmp_path, receiver)
    hook = await acli("send-test", "hook", "--config", str(cfg))
    assert hook.returncode == 0, hook.stdout + hook.stderr
    [body] = receiver.receiver.on("/hook")
    assert body["id"].startswith("msg_test_") and body["rule"] == "send-test" and body["severity"] == "info"
    assert (body["provider"], body["monitor_id"], body["run_id"]) == ("exa", "monitor_test", "mrun_test")
    assert (body["from"], body["to"], body["type"]) == ("running", "failed", "run.status")
    assert "test" in body["title"] and len(body["body"].splitlines()) > 1
    assert hook.stdout.startswith("hook (webhook): delivered in ") and " ms (status 200)" in hook.stdout
    assert body["id"] in hook.stdout

    ops = await acli("send-test", "ops", "--config", str(cfg))
    assert ops.returncode == 0, ops.stdout + ops.stderr
    assert ops.stdout.startswith("ops (apprise): delivered in ")
    [message] = receiver.receiver.on("/ops")
    assert "test" in message["title"] and "If you can read this" in message["message"]
    assert not (tmp_path / "state").exists()  # send-test never opens (or creates) the state
    for secret in (APPRISE_PASSWORD, WEBHOOK_SECRET, SLACK_TOKEN):
        assert secret not in hook.stdout + hook.stderr + ops.stdout + ops.stderr


@pytest.mark.anyio
async def test_send_test_reports_a_failing_receiver_and_exits_1(
    tmp_path: Path, receiver: ReceiverServer
) -> None:
    cfg = send_test_config(tmp_path, receiver)
    receiver.receiver.fail_with = 500
    hook = await acli("send-test", "hook", "--config", str(cfg))
    assert hook.returncode == 1
    assert (
        hook.stdout.startswith("hook (webhook): retry in ")
        and "(status 500, http_5xx): HTTP 500" in hook.stdout
    )
    ops = await acli("send-test", "ops", "--config", str(cfg))
    assert ops.returncode == 1 and ops.stdout.startswith("ops (apprise): retry in ")
    receiver.receiver.fail_with = 410
    gone = await acli("send-test", "hook", "--config", str(cfg))
    assert gone.returncode == 1 and "permanent" in gone.stdout and "status 410" in gone.stdout
    for out in (hook, ops, gone):
        for secret in (APPRISE_PASSWORD, WEBHOOK_SECRET, SLACK_TOKEN):
            assert secret not in out.stdout + out.stderr


def test_send_test_to_an_unknown_channel_lists_the_configured_ones(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, "  ops: {apprise: 'json://127.0.0.1:9/ops'}\n  b-team: {apprise: 'json://127.0.0.1:9/b'}\n"
    )
    out = cli("send-test", "nope", "--config", str(cfg))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == "runwatch: unknown channel 'nope'; configured channels: b-team, ops"


# -- secrets ------------------------------------------------------------------------------------------
def test_list_never_shows_a_channel_secret_even_from_an_old_error_text(tmp_path: Path) -> None:
    """An error text stored by an older runwatch held secrets in clear: the CLI masks them anyway."""
    cfg = config(
        tmp_path,
        f"  ops: {{apprise: 'json://runwatch:{APPRISE_PASSWORD}@127.0.0.1:9/ops'}}\n"
        f"  hook:\n    webhook: {{url: 'http://127.0.0.1:9/hook', secret: '{WEBHOOK_SECRET}'}}\n"
        f"  slack: {{apprise: 'slack://TokenAAAAAAA/TokenBBBBBBB/{SLACK_TOKEN}/#ops'}}\n",
    )
    state = State(tmp_path / "state")
    queue(state, 1, "ops", time.time())
    [row] = state.outbox.claim("ops", time.time(), 10, "test", 60)
    leaky = f"failed: {APPRISE_PASSWORD} then {WEBHOOK_SECRET} and slack {SLACK_TOKEN}"
    state.outbox.dead(row.seq, leaky, time.time())
    state.close()
    table = cli("outbox", "list", "--config", str(cfg), columns=400)
    as_json = cli("outbox", "list", "--json", "--config", str(cfg))
    assert table.returncode == as_json.returncode == 0
    assert "failed: <secret> then <secret> and slack <secret>" in table.stdout
    assert json.loads(as_json.stdout)[0]["last_error"] == "failed: <secret> then <secret> and slack <secret>"
    for secret in (APPRISE_PASSWORD, WEBHOOK_SECRET, SLACK_TOKEN):
        assert secret not in table.stdout + table.stderr + as_json.stdout + as_json.stderr
