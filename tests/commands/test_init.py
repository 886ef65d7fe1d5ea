"""``runwatch init``: the shipped files, written out of the installed package, never over a file."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from runwatch.commands import init as starter
from tests.tools import REPO, RUNWATCH

#: Repo file -> its copy in the package (what `init` writes). Edit the repo file, then copy it over.
PACKAGED = {
    "systemd/runwatch.service": "systemd/runwatch.service",
    "grafana/runwatch-dashboard.json": "grafana/runwatch-dashboard.json",
    "prometheus/runwatch-alerts.yaml": "prometheus/runwatch-alerts.yaml",
    "prometheus/runwatch-alerts.test.yaml": "prometheus/runwatch-alerts.test.yaml",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("repo_path", "packaged"), sorted(PACKAGED.items()))
def test_packaged_copies_equal_the_repo_files(repo_path: str, packaged: str) -> None:
    assert starter.shipped(packaged) == (REPO / repo_path).read_text(), (
        f"daemon/runwatch/share/{packaged} differs from {repo_path}:"
        f" cp {repo_path} daemon/runwatch/share/{packaged}"
    )


def test_init_writes_a_config_check_accepts(tmp_path: Path) -> None:
    out = cli("init", "--dir", str(tmp_path / "etc"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"wrote {tmp_path}/etc/runwatch.yaml",
        f"wrote {tmp_path}/etc/rules/starter.yaml",
        f"next: runwatch check --config {tmp_path}/etc/runwatch.yaml",
    ]
    for f in ("runwatch.yaml", "rules/starter.yaml"):
        assert stat.S_IMODE((tmp_path / "etc" / f).stat().st_mode) == 0o644
    checked = cli("check", "--config", str(tmp_path / "etc/runwatch.yaml"))
    assert checked.returncode == 0 and checked.stdout.startswith("OK: ")
    assert "3 rules in 1 files, 1 channels" in checked.stdout


def test_init_refuses_to_overwrite_and_writes_nothing_then(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "starter.yaml").write_text("mine\n")
    out = cli("init", "--dir", str(tmp_path))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == (
        f"runwatch init: already there: {tmp_path}/rules/starter.yaml; nothing written (--force overwrites)"
    )
    assert not (tmp_path / "runwatch.yaml").exists()
    assert (tmp_path / "rules" / "starter.yaml").read_text() == "mine\n"
    forced = cli("init", "--dir", str(tmp_path), "--force")
    assert forced.returncode == 0
    assert (tmp_path / "rules" / "starter.yaml").read_text() == starter.shipped("rules/starter.yaml")


def test_init_writes_the_unit_dashboard_and_alert_rules_flat(tmp_path: Path) -> None:
    out = cli(
        "init",
        "--systemd",
        str(tmp_path / "sd"),
        "--grafana",
        str(tmp_path / "g"),
        "--prometheus",
        str(tmp_path / "p"),
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "sd/runwatch.service").read_text() == (REPO / "systemd/runwatch.service").read_text()
    assert (tmp_path / "g/runwatch-dashboard.json").is_file()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "runwatch-alerts.test.yaml",
        "runwatch-alerts.yaml",
    ]
    assert not (tmp_path / "runwatch.yaml").exists()  # only what was asked


def test_init_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = cli("init", "--dir", str(blocker / "sub"))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("runwatch init: ") and "Traceback" not in out.stderr
