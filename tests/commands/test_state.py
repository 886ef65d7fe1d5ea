"""``runwatch state copy`` (a SQLite state moved to PostgreSQL), and the state database's faults as
``check`` and ``run`` report them: real daemons, a real PostgreSQL, real webhook receivers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import Scenario, fake_server
from runwatch.service.app import Daemon
from runwatch.store import Location, open_shared, open_state
from runwatch.store.postgres import SCHEMA_VERSION
from tests.commands.test_outbox import acli, cli, one_line, running_daemon, wait_started
from tests.conftest import write_config
from tests.postgres import PASSWORD, PASSWORD_ROLE, Cluster
from tests.tools import free_port
from tests.webhook_server import WebhookServer, webhook_server

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}

STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {"id": m, "runs": [{"id": f"run_{m}", "timeline": [
                    {"at": 0, "status": "created"}, {"at": 10, "status": "failed", "failed_reason": "quota"},
                ]}]}
                for m in ("monitor_a", "monitor_b")
            ]
        }
    }
)  # fmt: skip

RULES = """
rules:
  - name: failed-open
    match: {kind: run.status, to: failed}
    notify: [ops]
    send_resolved: true
  - name: failed-gone
    match: {kind: run.status, to: failed}
    notify: [gone]
"""


def config(tmp_path: Path, exa: Any, ops: WebhookServer, gone: WebhookServer, url: str | None = None) -> Path:
    state = f"state: {{url: '{url}'}}\n" if url else ""
    return write_config(
        tmp_path,
        f"""
state_dir: {tmp_path / "state"}
{state}metrics_listen: 127.0.0.1:0
providers:
  exa: {{base_url: "{exa.base_url}", api_key: exa-test-key-0123456789, poll_interval: 100ms,
         idle_poll_interval: 100ms, retries: 1}}
channels:
  ops: {{webhook: {{url: "{ops.url}", secret: {SECRET}}}, rate: 1/h}}
  gone: {{webhook: {{url: "{gone.url}", secret: {SECRET}}}}}
delivery: {{retry_initial: 50ms, retry_max: 100ms}}
""",
        RULES,
    )


async def polls(daemon: Daemon, n: int) -> None:
    await daemon.wait_polls("exa", daemon.polls_done["exa"] + n)


@pytest.mark.anyio
async def test_a_copied_state_sends_exactly_what_was_pending_repeats_nothing_and_keeps_its_alerts(
    tmp_path: Path, pg_url: str
) -> None:
    clock = ManualClock(time.time())
    async with (
        fake_server("exa", STORY, clock) as exa,
        webhook_server(SECRET) as ops,
        webhook_server(SECRET) as gone,
    ):
        gone.default = 410
        on_sqlite = Daemon(load_config(config(tmp_path, exa, ops, gone)), client_options=FAST)
        async with on_sqlite.running():
            await polls(on_sqlite, 1)  # the baseline
            clock.advance(11)  # both runs fail: two alerts open, one send each to ops (rate 1/h) and gone
            await ops.wait_for(1)
            await gone.wait_for(2, delivered=False)
            await polls(on_sqlite, 2)
            until = clock.now() + 3600
            silence = on_sqlite.store.silences.add({"monitor_id": "z"}, clock.now(), until, "maint", "ana")
        shared = open_shared(Location(tmp_path / "state"))
        before = {
            i.id: (i.channel, i.state) for i in shared.outbox.items(state=None, channel=None, limit=None)
        }
        shared.close()
        assert sorted(before.values()) == [
            ("gone", "dead"),
            ("gone", "dead"),
            ("ops", "pending"),
            ("ops", "sent"),
        ]
        [pending] = [i for i, (_, st) in before.items() if st == "pending"]

        copied = await acli("state", "copy", "--config", str(tmp_path / "runwatch.yaml"), "--to", pg_url)
        assert copied.returncode == 0, copied.stderr
        assert one_line(copied.stdout).startswith(f"copied {tmp_path / 'state' / 'runwatch.sqlite3'} to ")
        assert "2 runs, 2 monitors, 4 notifications (1 pending, 1 sent, 2 dead, 0 silenced)" in copied.stdout
        assert "2 open alerts, 1 silences" in copied.stdout
        with psycopg.connect(pg_url) as conn:  # the runs came with their creation times
            created = conn.execute("SELECT count(created_at) FROM runwatch_runs").fetchone()
            windows = conn.execute("SELECT channel, cardinality(sends) FROM runwatch_send_windows").fetchall()
        assert created == (2,)
        assert windows == [("ops", 1)]  # the hour's one send to ops came along: no slot freed by moving

        on_postgres = Daemon(load_config(config(tmp_path, exa, ops, gone, pg_url)), client_options=FAST)
        async with on_postgres.running():
            await polls(on_postgres, 3)
            assert len(ops.requests) == 1  # rate 1/h: the pending one waits for the hour to be over
            with psycopg.connect(pg_url) as conn:  # which it is, once its one send is an hour older
                conn.execute("UPDATE runwatch_send_windows SET sends = ARRAY[sends[1] - 3600]")
            await ops.wait_for(2)
            assert on_postgres.store.alerts.firing() == 2
            assert on_postgres.store.silences.all() == [silence]
            changes = sum(s.value for m in on_postgres.metrics.registry.collect()
                          if m.name == "runwatch_changes_detected" for s in m.samples
                          if s.name.endswith("_total"))  # fmt: skip
    assert [r.id for r in ops.delivered()][1:] == [pending]  # exactly the pending one, with its own id
    assert len(gone.requests) == 2  # the dead letters stay dead
    assert changes == 0  # nothing the SQLite daemon had seen was news again
    with psycopg.connect(pg_url) as conn:
        states = dict(conn.execute("SELECT id, state FROM runwatch_notifications").fetchall())
    assert states == {i: ("sent" if i == pending else st) for i, (_, st) in before.items()}


def test_copy_refuses_a_database_that_holds_a_state_and_a_running_daemon(tmp_path: Path, pg_url: str) -> None:
    cfg = plain_config(tmp_path)
    missing = cli("state", "copy", "--config", str(cfg), "--to", pg_url)
    assert missing.returncode == 1 and "no state at" in one_line(missing.stderr)
    open_state(Location(tmp_path / "state")).close()
    used = open_state(Location(tmp_path / "other", pg_url))
    used.set_meta("first_start", "1.0")
    used.close()
    refused = cli("state", "copy", "--config", str(cfg), "--to", pg_url)
    assert refused.returncode == 1 and refused.stdout == ""
    line = one_line(refused.stderr)
    assert "already holds a runwatch state" in line and pg_url.rsplit("/", 1)[1] in line


@pytest.mark.parametrize("to", ["notaurl", "mysql://runwatch:hunter2pass@db/runwatch"])
def test_copy_names_its_to_argument_when_that_is_not_a_postgresql_url(tmp_path: Path, to: str) -> None:
    cfg = plain_config(tmp_path)
    open_state(Location(tmp_path / "state")).close()
    refused = cli("state", "copy", "--config", str(cfg), "--to", to)
    assert refused.returncode == 1
    assert one_line(refused.stderr).startswith("runwatch: --to is not a PostgreSQL URL")
    assert "hunter2pass" not in refused.stderr


@pytest.mark.anyio
async def test_copy_refuses_while_a_daemon_runs_on_the_state_dir(tmp_path: Path, pg_url: str) -> None:
    cfg = plain_config(tmp_path)
    with running_daemon(cfg) as daemon:
        await wait_started(daemon)
        refused = await acli("state", "copy", "--config", str(cfg), "--to", pg_url)
    assert refused.returncode == 1
    assert f"in use by another runwatch (pid {daemon.proc.pid})" in one_line(refused.stderr)
    with psycopg.connect(pg_url) as conn:  # nothing was made there
        assert conn.execute("SELECT to_regclass('runwatch_meta')").fetchone() == (None,)


def plain_config(tmp_path: Path) -> Path:
    text = f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\n"
    return write_config(tmp_path, text, "rules: []\n")


def fault_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path, f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\nstate: {{url: '{url}'}}\n",
        "rules: []\n",
    )  # fmt: skip


def newer(postgres: Cluster, url: str, tmp_path: Path) -> None:
    open_state(Location(tmp_path / "made", url)).close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE runwatch_meta SET value = '99' WHERE key = 'schema_version'")


@pytest.mark.parametrize("fault", ["unreachable", "login", "missing", "newer"])
def test_check_and_run_say_what_is_wrong_with_the_database_in_one_line(
    tmp_path: Path, postgres: Cluster, pg_url: str, fault: str
) -> None:
    db = pg_url.rsplit("/", 1)[1]
    port, database, wrong = postgres.port, db, "wr0ng-Pa55word-for-test"
    if fault == "unreachable":
        port, database = free_port(), "runwatch"
        url, says = f"postgresql://runwatch@127.0.0.1:{port}/runwatch", "is unreachable"
    elif fault == "login":
        url, says = postgres.url(db, role=PASSWORD_ROLE, password=wrong), "refused the login"
    elif fault == "missing":
        database = "no_such_database"
        url, says = postgres.url(database), "does not exist"
    else:
        url, says = pg_url, "written by a newer runwatch (schema 99"
        newer(postgres, url, tmp_path)
    cfg = fault_config(tmp_path, url)
    for command in (("check",), ("run",), ("outbox", "list"), ("silence", "list")):
        out = cli(*command, "--config", str(cfg))
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        line = one_line(out.stderr)
        assert line.startswith("runwatch: ") and says in line, (command, line)
        assert f"127.0.0.1:{port}/{database}" in line, (command, line)
        assert wrong not in out.stderr + out.stdout and PASSWORD not in out.stderr + out.stdout


def test_check_says_the_database_answers_and_which_schema_it_holds(
    tmp_path: Path, postgres: Cluster, pg_url: str
) -> None:
    db = pg_url.rsplit("/", 1)[1]
    url = postgres.url(db, role=PASSWORD_ROLE, password=PASSWORD)
    cfg = fault_config(tmp_path, url)
    fresh = cli("check", "--config", str(cfg))
    assert fresh.returncode == 0, fresh.stderr
    where = f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{postgres.port}/{db}"
    summary = one_line(fresh.stdout)
    assert summary.endswith(f", state: {where} reachable, no runwatch schema yet (the daemon creates it)")
    open_state(Location(tmp_path / "state", url)).close()
    made = cli("check", "--config", str(cfg))
    assert one_line(made.stdout).endswith(f", state: {where} reachable, schema {SCHEMA_VERSION}")
    assert PASSWORD not in fresh.stdout + fresh.stderr + made.stdout + made.stderr
