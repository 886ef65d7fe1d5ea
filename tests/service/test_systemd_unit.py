"""The shipped unit, judged by the real ``systemd-analyze`` (Debian's ``systemd`` package)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from runwatch.commands import init as starter
from tests.tools import REPO, RUNWATCH, require

UNIT = REPO / "systemd" / "runwatch.service"
#: Where the unit expects runwatch; systemd/README.md links the venv's entry point there.
INSTALLED_AT = "/usr/local/bin/runwatch"
MAX_EXPOSURE = 1.1


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("systemd-analyze"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_security_exposure_is_at_most_1_1() -> None:
    out = analyze("security", "--offline=true", "--no-pager", str(UNIT))
    found = re.search(r"Overall exposure level for runwatch\.service: (\d+\.\d+)", out.stdout)
    assert found, out.stdout + out.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, out.stdout


def test_verify_prints_nothing_when_the_binary_is_installed(tmp_path: Path) -> None:
    """``verify`` checks that every Exec path is an executable file; on this machine runwatch is not
    linked at /usr/local/bin (the install guide does that, and a test must not touch the system), so
    the copy verified differs from the shipped unit in that one path only: it names the runwatch
    entry point of the environment running the tests, which is what the link would point to."""
    entry_point = str(Path(sys.executable).parent / "runwatch")
    assert os.access(entry_point, os.X_OK), f"{entry_point}: pip install '.[test]' puts runwatch there"
    text = UNIT.read_text()
    execs = [line for line in text.splitlines() if line.startswith("Exec") and INSTALLED_AT in line]
    assert len(execs) == 2  # ExecStart (run) and ExecReload (reload)
    copy = tmp_path / "runwatch.service"
    copy.write_text(text.replace(INSTALLED_AT, entry_point))
    out = analyze("verify", str(copy))
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out.stdout + out.stderr


def test_verify_names_the_missing_binary_of_the_shipped_unit(tmp_path: Path) -> None:
    """The other side of the substitution above: verify does check the path (so the test is real)."""
    missing = tmp_path / "nowhere" / "runwatch"
    copy = tmp_path / "runwatch.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_AT, str(missing)))
    out = analyze("verify", str(copy))
    assert out.returncode != 0 and f"{missing} is not executable" in out.stderr


def unit_settings() -> list[tuple[str, str]]:
    pairs = []
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def test_the_unit_is_a_notify_service_with_watchdog_reload_and_credentials() -> None:
    settings = dict(unit_settings())
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    # runwatch checks itself at start (a refused config exits 1 with its lines, as every command);
    # reload waits for the daemon's answer, so a refused reload fails `systemctl reload`.
    assert "ExecStartPre" not in settings
    assert settings["ExecStart"] == f"{INSTALLED_AT} run --config /etc/runwatch/runwatch.yaml"
    assert settings["ExecReload"] == f"{INSTALLED_AT} reload --config /etc/runwatch/runwatch.yaml"
    assert settings["Restart"] == "on-failure"
    assert settings["DynamicUser"] == "yes"
    assert settings["StateDirectory"] == "runwatch"
    assert settings["ConfigurationDirectory"] == "runwatch"
    assert re.fullmatch(r"\d+s", settings["WatchdogSec"])
    creds = [v for k, v in unit_settings() if k.startswith(("LoadCredential", "SetCredential", "Import"))]
    # Bare names only: looked up in the credstore and skipped when absent (systemd >= 250), so a user
    # of one provider needs no edit. A path would make a missing file fail the unit.
    assert creds == ["exa_api_key", "olostep_api_key", "ops_apprise_url", "ops_webhook_secret", "state_url"]
    assert all(k == "LoadCredentialEncrypted" for k, _ in unit_settings() if k.startswith("LoadCred"))
    # Never a secret in the unit or the environment.
    assert not [v for k, v in unit_settings() if k == "Environment" and re.search("KEY|TOKEN|SECRET", v)]


def seconds(value: str) -> float:
    """A systemd time span as the unit writes them (``5s``, ``10min``)."""
    found = re.fullmatch(r"(\d+)(s|min)", value)
    assert found, value
    return int(found.group(1)) * {"s": 1, "min": 60}[found.group(2)]


def test_start_limits_stop_a_crash_loop_but_not_an_operator_at_work(tmp_path: Path) -> None:
    """Every start counts toward ``StartLimitBurst=`` within ``StartLimitIntervalSec=``, crash or
    ``systemctl restart``. A crash loop (a start that fails as soon as it can, measured here: the
    metrics port taken, exit 1, then ``RestartSec=``) must reach the limit well inside the interval;
    an operator restarting every 30 s for the whole interval must not. systemd 252 (Debian 12) has no
    ``RestartSteps=`` back-off: verify above would name it as an unknown key."""
    settings = dict(unit_settings())
    interval = seconds(settings["StartLimitIntervalSec"])
    burst = int(settings["StartLimitBurst"])
    restart_sec = seconds(settings["RestartSec"])
    cfg = tmp_path / "runwatch.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg.write_text(
            f"state_dir: state\nmetrics_listen: 127.0.0.1:{taken.getsockname()[1]}\nrule_files: []\n"
        )
        began = time.monotonic()
        out = subprocess.run(
            [*RUNWATCH, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60
        )
        crash = time.monotonic() - began
    assert out.returncode == 1 and "Address already in use" in out.stderr  # a failure systemd restarts
    loop_stopped_after = burst * (crash + restart_sec)
    assert loop_stopped_after <= min(interval / 2, 3 * 60), (burst, crash, restart_sec)
    assert burst * 30 >= interval  # one restart every 30 s, for the whole interval
    assert settings["Restart"] == "on-failure"


def test_a_refused_config_fails_its_start_with_every_problem_and_the_loop_is_bounded(tmp_path: Path) -> None:
    """``runwatch run`` on a config it refuses exits 1 (as every command on an error it names) with its
    ``file:line: field: problem`` lines; systemd restarts it, and the start limit ends the loop (the
    test above bounds how soon)."""
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text("state_dir: state\nlog_level: loud\nrule_files: []\n")
    out = subprocess.run([*RUNWATCH, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith(f"{cfg}:2: log_level: ")
    assert "RestartPreventExitStatus" not in dict(unit_settings())


def test_the_state_directory_of_the_unit_is_the_one_the_shipped_config_names() -> None:
    """Commands typed on the host read ``state_dir`` from the config; the service writes its state in
    its ``StateDirectory=`` (under ``/var/lib``). The shipped config names that very directory, and the
    unit sets no other (an ``Environment=RUNWATCH_STATE_DIR`` would override the config's)."""
    settings = unit_settings()
    (state_directory,) = [v for k, v in settings if k == "StateDirectory"]
    assert not [v for k, v in settings if k == "Environment" and "STATE_DIR" in v]
    config = starter.shipped("runwatch.yaml")
    assert re.findall(r"^state_dir: (\S+)", config, flags=re.M) == [f"/var/lib/{state_directory}"]
