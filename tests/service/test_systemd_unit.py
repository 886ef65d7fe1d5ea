"""The shipped unit, judged by the real ``systemd-analyze`` (Debian's ``systemd`` package)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.tools import REPO, require

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
    assert len(execs) == 2  # ExecStartPre (check) and ExecStart (run)
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
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
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
