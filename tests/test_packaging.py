"""A release as ``python -m build`` makes it: one wheel, one sdist, the shipped files in both."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import runwatch
from tests.tools import REPO

SHARED = (
    "runwatch.yaml",
    "rules/starter.yaml",
    "systemd/runwatch.service",
    "grafana/runwatch-dashboard.json",
    "prometheus/runwatch-alerts.yaml",
    "prometheus/runwatch-alerts.test.yaml",
)


def test_build_makes_one_wheel_and_one_sdist_with_the_shipped_files(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheels, sdists = list(tmp_path.glob("*.whl")), list(tmp_path.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"runwatch-{runwatch.__version__}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"runwatch-{runwatch.__version__}.tar.gz"]
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for rel in SHARED:
        assert f"runwatch/share/{rel}" in names
    assert f"runwatch-{runwatch.__version__}.dist-info/licenses/LICENSE" in names
    with tarfile.open(sdists[0]) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for rel in (
        "LICENSE",
        "CHANGELOG.md",
        "systemd/README.md",
        "systemd/runwatch.service",
        "grafana/runwatch-dashboard.json",
        "prometheus/runwatch-alerts.yaml",
    ):
        assert rel in members


def test_changelog_names_the_version_runwatch_prints() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "runwatch", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    first = re.search(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), flags=re.M)
    assert first and first.group(1) == printed == runwatch.__version__


def test_license_matches_the_declared_one() -> None:
    assert 'license = "Apache-2.0"' in (REPO / "pyproject.toml").read_text()
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_ci_runs_exactly_the_readme_test_command_then_the_linters() -> None:
    readme_command = (REPO / "README.md").read_text().splitlines()[4]
    assert readme_command == "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/pytest"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_command in ci
    after = ci[ci.index(readme_command) + 1 :]
    assert after == [".venv/bin/ruff check daemon tests", ".venv/bin/mypy --strict daemon"]
    # Nothing installs anything before it: what CI depends on is what the README's command does.
    steps = [ln for ln in ci if ln.strip() and not ln.startswith("#")]
    assert steps[: steps.index(readme_command)] == ["set -euo pipefail", 'cd "$(dirname "$0")/.."']
