"""``runwatch hooks setup exa`` and ``runwatch hooks list exa`` as an operator runs them (a subprocess),
against the fake Exa: the webhook is made with the monitor events, its secret kept once (a new 0600 file,
or printed), and never shown again."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import anyio
import pytest

from runwatch.clock import ManualClock
from runwatch.fakes import FakeExa, Fault, RunningFake, Scenario, fake_server
from tests.commands.test_outbox import cli_env

pytestmark = pytest.mark.anyio
KEY = "exa-hooks-cli-key-5a6b7c8d9e"
EVENTS = [
    "monitor.created",
    "monitor.deleted",
    "monitor.run.completed",
    "monitor.run.created",
    "monitor.updated",
]


def config(tmp_path: Path, exa: RunningFake[FakeExa], key: str | None = KEY) -> Path:
    cfg = tmp_path / "runwatch.yaml"
    key_line = f", api_key: {key}" if key else ""
    cfg.write_text(f"rule_files: []\nproviders:\n  exa: {{base_url: '{exa.base_url}'{key_line}}}\n")
    return cfg


async def hooks(*args: str) -> tuple[int, str, str]:
    done = await anyio.run_process(
        [sys.executable, "-m", "runwatch", "hooks", *args], env=cli_env(), check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_setup_writes_the_secret_once_to_a_new_private_file_and_list_never_shows_it(
    tmp_path: Path,
) -> None:
    async with fake_server("exa", Scenario(), ManualClock(time.time())) as exa:
        cfg = config(tmp_path, exa)
        secret_file = tmp_path / "exa_webhook_secret"
        url = "https://public.example/hooks/exa"
        code, out, err = await hooks(
            "setup", "exa", "--url", url, "--config", str(cfg), "--secret-file", str(secret_file)
        )
        assert (code, err) == (0, "")
        [made] = exa.fake.pusher.subscriptions
        assert (made.url, sorted(made.types)) == (url, EVENTS)
        assert secret_file.read_text().strip() == made.secret
        assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
        assert made.secret is not None and made.secret not in out and str(secret_file) in out

        again = await hooks(
            "setup", "exa", "--url", url, "--config", str(cfg), "--secret-file", str(secret_file)
        )
        assert again[0] == 1 and "exists" in again[2] and "Traceback" not in again[2]
        assert len(exa.fake.pusher.subscriptions) == 1  # refused before Exa was asked: no second webhook
        assert secret_file.read_text().strip() == made.secret  # and the file is as it was

        code, listed, err = await hooks("list", "exa", "--config", str(cfg))
    assert code == 0 and err == ""
    [line] = listed.strip().splitlines()
    assert made.id in line and url in line and "monitor.run.completed" in line
    assert made.secret not in listed


async def test_setup_without_a_file_prints_the_secret_once(tmp_path: Path) -> None:
    async with fake_server("exa", Scenario(), ManualClock(time.time())) as exa:
        code, out, err = await hooks("setup", "exa", "--url", "http://10.0.0.5:9465/hooks/exa",
                                     "--config", str(config(tmp_path, exa)))  # fmt: skip
        [made] = exa.fake.pusher.subscriptions
    assert code == 0
    assert f"secret: {made.secret}" in out.splitlines()
    assert "not https" in err  # a warning, not a refusal (a test or a private network)


async def test_setup_fails_in_one_line_and_leaves_no_file(tmp_path: Path) -> None:
    async with fake_server("exa", Scenario(), ManualClock(time.time())) as exa:
        secret_file = tmp_path / "s"
        no_key = await hooks(
            "setup", "exa", "--url", "https://x/hooks/exa", "--config", str(config(tmp_path, exa, None))
        )
        bad_url = await hooks("setup", "exa", "--url", "ftp://x", "--config", str(config(tmp_path, exa)))
        # Exa refuses (a key it does not take is a 401 from the fake): one line, no file left behind.
        exa.fake.faults.add(Fault(path="/v0/webhooks", kind="auth"))
        args = ["--url", "https://x/hooks/exa", "--config", str(config(tmp_path, exa))]
        refused = await hooks("setup", "exa", *args, "--secret-file", str(secret_file))
        assert exa.fake.pusher.subscriptions == []
    for code, _, err in (no_key, bad_url, refused):
        assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "API key" in no_key[2] and "http(s)" in bad_url[2] and "HTTP 401" in refused[2]
    assert KEY not in refused[2]
    assert not secret_file.exists()


async def test_list_says_so_when_there_is_none(tmp_path: Path) -> None:
    async with fake_server("exa", Scenario(), ManualClock(time.time())) as exa:
        code, out, _ = await hooks("list", "exa", "--config", str(config(tmp_path, exa)))
    assert code == 0 and "no exa webhooks" in out
