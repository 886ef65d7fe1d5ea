"""One error path: whatever a command runs into on purpose is one clear line and exit 1, never a traceback.

Every fault here is real: a state file that is not a database, a directory in its place, a state from a
newer runwatch, a state directory held by a running daemon, a port already taken, a broken file.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from runwatch.store import State
from tests.commands.test_outbox import RUN, cli, cli_env, config, one_line, running_daemon, wait_started

STATE_COMMANDS = [
    ("run",),
    ("outbox", "list"),
    ("outbox", "list", "--json"),
    ("outbox", "replay", "--dead"),
    ("outbox", "purge", "--older-than", "30d"),
]


def not_a_database(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "runwatch.sqlite3").write_bytes(b"this is not sqlite at all, just text " * 200)


def a_directory(state_dir: Path) -> None:
    (state_dir / "runwatch.sqlite3").mkdir(parents=True)


def from_a_newer_runwatch(state_dir: Path) -> None:
    State(state_dir).close()
    with sqlite3.connect(state_dir / "runwatch.sqlite3") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (not_a_database, "is not a runwatch state (SQLite) file"),
    "directory": (a_directory, "is a directory"),
    "newer": (from_a_newer_runwatch, "was written by a newer runwatch"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_broken_state_is_one_line_and_exit_1_for_every_command(tmp_path: Path, fault: str) -> None:
    cfg = config(tmp_path)
    make, says = FAULTS[fault]
    make(tmp_path / "state")
    for command in STATE_COMMANDS:
        out = cli(*command, "--config", str(cfg))
        assert out.returncode == 1, (command, out.stderr)
        assert out.stdout == ""
        line = one_line(out.stderr)
        assert line.startswith("runwatch: ") and says in line, (command, line)
        assert str(tmp_path / "state" / "runwatch.sqlite3") in line


def test_outbox_commands_need_a_state_the_daemon_made(tmp_path: Path) -> None:
    out = cli("outbox", "list", "--config", str(config(tmp_path)))
    assert out.returncode == 1
    assert one_line(out.stderr).startswith("runwatch: no state at ")
    assert not (tmp_path / "state").exists()  # looking never creates a state


@pytest.mark.anyio
async def test_a_second_run_on_a_held_state_dir_names_the_holder(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with running_daemon(cfg) as daemon:
        await wait_started(daemon)
        second = cli("run", "--config", str(cfg))
        assert daemon.proc.poll() is None  # the first one runs on, untouched
    assert second.returncode == 1
    line = one_line(second.stderr)
    assert "is in use by another runwatch" in line and f"(pid {daemon.proc.pid})" in line


def test_run_with_the_metrics_port_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = config(tmp_path)
        cfg.write_text(cfg.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        out = cli("run", "--config", str(cfg))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("runwatch: metrics: cannot listen on")


BROKEN_CONFIG = "state_dir: state\nchannels:\n  ops: {apprise: 'json://127.0.0.1:9/ops'}\nlog_level: loud\n"


@pytest.mark.parametrize(
    "command",
    [("run",), ("outbox", "list"), ("outbox", "replay", "--dead"), ("send-test", "ops"), ("check",)],
    ids=" ".join,
)
def test_a_broken_config_names_file_line_and_field_for_every_command(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text(BROKEN_CONFIG)
    out = cli(*command, "--config", str(cfg))
    assert out.returncode == 1
    # check prints its problems on stdout (its output is the report); every other command on stderr
    shown = out.stdout if command == ("check",) else out.stderr
    assert one_line(shown).startswith(f"{cfg}:4: log_level: ")
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize("variable", ["RUNWATCH_RULE_FILES", "RUNWATCH_PROVIDERS__EXA__MONITORS"])
def test_a_list_from_the_environment_that_is_not_json_names_the_variable(
    tmp_path: Path, variable: str
) -> None:
    """A list (or mapping) key from the environment is JSON; a comma list is one line naming the
    variable and the form, without its value (it might be a secret)."""
    env = {**cli_env(), variable: "a.yaml,tok_0123456789abcdef"}
    for command in (("check",), ("run",)):
        out = subprocess.run(
            [*RUN, *command, "--config", str(config(tmp_path))], env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 1
        shown = out.stdout if command == ("check",) else out.stderr
        assert one_line(shown).startswith(f"environment: {variable}: not valid JSON; ")
        assert "tok_0123456789abcdef" not in out.stdout + out.stderr


def test_send_test_on_a_channel_that_cannot_be_built_says_where_without_its_secret(tmp_path: Path) -> None:
    password = "Mail-Passw0rd-77"
    cfg = config(
        tmp_path,
        f"  mail: {{apprise: 'mailto://ops:{password}@'}}\n"
        "  hook:\n    webhook: {url: 'http://127.0.0.1:9/hook'}\n",
    )
    mail = cli("send-test", "mail", "--config", str(cfg))
    assert mail.returncode == 1
    assert one_line(mail.stderr).startswith(f"{cfg}:4: channels.mail.apprise: apprise cannot use")
    hook = cli("send-test", "hook", "--config", str(cfg))
    assert hook.returncode == 1
    assert one_line(hook.stderr).startswith(f"{cfg}:6: channels.hook.webhook.secret: no secret")
    assert password not in mail.stdout + mail.stderr + hook.stdout + hook.stderr


def test_fake_with_a_broken_scenario_is_one_line(tmp_path: Path) -> None:
    scenario = tmp_path / "story.yaml"
    scenario.write_text("exa: [not, a, mapping\n")
    out = cli("fake", "exa", "--listen", "127.0.0.1:0", "--scenario", str(scenario))
    assert out.returncode == 1
    assert one_line(out.stderr).startswith(f"{scenario}:")
