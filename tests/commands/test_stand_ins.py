"""``runwatch check`` typed on the host, where the credentials systemd decrypts for the service are out
of reach: it checks everything else and names each credential it could not read, instead of refusing a
config the service runs. Under the service (``$CREDENTIALS_DIRECTORY`` set) a missing credential is
still the error it is at start."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import write_config
from tests.tools import RUNWATCH

RULES = "rules:\n  - {name: failed, match: {kind: run.status, to: failed}, notify: [ops, hook]}\n"
CHANNELS = """channels:
  ops: {}
  hook:
    webhook: {url: "http://127.0.0.1:9/hook"}
"""


def check(cfg: Path, credentials: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM")}
    if credentials is not None:
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
    return subprocess.run(
        [*RUNWATCH, "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60, env=env
    )


def test_by_hand_a_channel_whose_secret_is_a_credential_is_checked_without_it(tmp_path: Path) -> None:
    """Under the service (the same config, its credentials in $CREDENTIALS_DIRECTORY) nothing stands
    in: a credential nobody created is the error the service's own start would report."""
    cfg = write_config(tmp_path, "state_dir: state\n" + CHANNELS, RULES)
    out = check(cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(f"OK: {cfg}: 1 rules in 1 files, 2 channels")
    warnings = [x for x in out.stderr.splitlines() if "channels." in x]
    assert warnings == [
        f"warning: {cfg}:3: channels.ops: uses the credential ops_apprise_url, which only the service can"
        " read: the rest of the channel is checked here; the service checks the credential when it starts"
        " and on each reload",
        f"warning: {cfg}:4: channels.hook: uses the credential hook_webhook_secret, which only the service"
        " can read: the rest of the channel is checked here; the service checks the credential when it"
        " starts and on each reload",
    ]
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "ops_apprise_url").write_text("json://127.0.0.1:9/ops\n")
    service = check(cfg, creds)
    assert service.returncode == 1
    assert service.stdout.splitlines() == [
        f"{cfg}:5: channels.hook.webhook.secret: no secret: set secret or secret_file, or provide the"
        " credential hook_webhook_secret"
    ]
    (creds / "hook_webhook_secret").write_text("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
    ok = check(cfg, creds)
    assert ok.returncode == 0 and "channels." not in ok.stderr, ok.stderr


def test_by_hand_the_problems_left_are_those_no_credential_would_fix(tmp_path: Path) -> None:
    """A secret file that is missing, a block with two kinds: the stand-in fixes neither, so each is
    the error it was; the channels whose only gap is a credential are not among them."""
    broken = (
        CHANNELS
        + "  mail: {apprise_file: mail-url.txt}\n  both: {apprise: 'json://h/', webhook: {url: 'http://h/'}}\n"
    )
    cfg = write_config(tmp_path, "state_dir: state\n" + broken, RULES)
    out = check(cfg)
    assert out.returncode == 1
    assert [x.split(": ")[1] for x in out.stdout.splitlines()] == [
        "channels.mail.apprise_file",
        "channels.both.webhook",
    ]
