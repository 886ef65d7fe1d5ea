"""``runwatch status`` (runwatch/commands/status.py) as an operator runs it: a subprocess reading the
state beside a running daemon, then beside a stopped one; on each store (SQLite in ``state_dir``, and
PostgreSQL at ``state.url``)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import fake_server
from runwatch.service.app import Daemon
from tests.commands.test_outbox import acli, cli, one_line
from tests.conftest import ReceiverServer, write_config
from tests.service.test_leadership import SCENARIO
from tests.test_end_to_end import EXA_KEY, FAST

pytestmark = pytest.mark.anyio

RULES = """
rules:
  - {name: failed, match: {provider: exa, kind: run.status, to: failed}, notify: [hook], repeat_interval: 4h}
  - {name: every-status, match: {provider: exa, kind: run.status}, notify: [down]}
"""


def as_json(out: str) -> dict[str, Any]:
    found = json.loads(out)
    assert isinstance(found, dict)
    return found


async def test_status_shows_the_instance_its_leadership_and_what_waits(
    tmp_path: Path, receiver: ReceiverServer, state_url: str | None
) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", SCENARIO, clock) as exa:
        cfg = write_config(
            tmp_path,
            f"""
state_dir: state
{f'state: {{url: "{state_url}"}}' if state_url else ""}
metrics_listen: 127.0.0.1:0
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: 50ms, idle_poll_interval: 50ms}}
channels:
  hook: {{apprise: "{receiver.url("/hook")}"}}
  down: {{apprise: "json://127.0.0.1:9/down"}}
delivery: {{retry_initial: 1h}}
""",
            RULES,
        )
        no_state = await acli("status", "--config", str(cfg))
        assert no_state.returncode == 1
        assert one_line(no_state.stderr).startswith(
            "runwatch: no state at" if state_url is None else "runwatch: no runwatch state in postgresql://"
        )
        daemon = Daemon(load_config(cfg), client_options=FAST)
        async with daemon.running():
            await daemon.wait_polls("exa", 2)
            clock.advance(25)  # mrun_1 runs, then fails: the alert opens; "down" cannot take its one
            await receiver.receiver.wait_for(1, "/hook")
            added = await acli("silence", "add", "--match", "rule=none", "--for", "1h", "--config", str(cfg))
            assert added.returncode == 0, added.stderr
            silence_id = added.stdout.strip()
            await daemon.leadership.step()  # its next heartbeat (every lease/3) carries the last poll
            ran = await acli("status", "--config", str(cfg), "--json")
            text = await acli("status", "--config", str(cfg))
    assert ran.returncode == 0, ran.stderr
    found = as_json(ran.stdout)
    me = socket.gethostname()
    [instance] = found["instances"]
    assert instance["name"] == me and instance["alive"] and len(instance["config_digest"]) == 16
    assert found["leaders"] == {"exa": me}
    last = found["last_successful_poll"]["exa"]
    assert last is not None and time.time() - 60 < last <= time.time()
    assert found["outbox"]["hook"]["sent"] == 1 and found["outbox"]["down"]["pending"] == 1
    assert found["oldest_pending"]["channel"] == "down" and found["oldest_pending"]["id"].startswith("msg_")
    [alert] = found["open_alerts"]
    assert (alert["rule"], alert["state"], alert["group"]["monitor_id"]) == ("failed", "firing", "monitor_1")
    assert [s["id"] for s in found["silences"]] == [silence_id]
    assert text.returncode == 0
    assert f"exa          {me} since" in text.stdout and "open alerts: 1" in text.stdout
    assert "oldest pending: msg_" in text.stdout and "active silences: 1" in text.stdout
    for out in (ran, text):
        assert EXA_KEY not in out.stdout + out.stderr

    # Stopped: nobody leads (its leases were released), the instance is still listed as last seen.
    stopped = as_json(cli("status", "--config", str(cfg), "--json").stdout)
    assert stopped["leaders"] == {"exa": None}
    assert [i["name"] for i in stopped["instances"]] == [me]
    assert "exa          nobody (last: " in cli("status", "--config", str(cfg)).stdout
