"""A test that needs a real tool installs its Debian package when the machine lacks it.

The real apt-get cannot run here (no package mirror, and the tools are installed), so these sessions
run with a PATH where the tool is missing and ``apt-get`` is a stand-in that logs how it was called
and then places the tool (or fails as apt does). Each session is a separate process, as parallel test
workers are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.tools import PACKAGES, REPO, require

APT_GET = """\
#!{python}
import json, os, sys, time
from pathlib import Path
state = Path(os.environ["APT_STATE"])
with (state / "calls").open("a") as log:
    log.write(json.dumps([os.environ.get("DEBIAN_FRONTEND"), *sys.argv[1:]]) + "\\n")
if sys.argv[-1] == "update":
    (state / "updated").touch()
    sys.exit(0)
if os.environ["APT_WORKS"] != "yes" or not (state / "updated").exists():
    print(f"E: Unable to locate package {{sys.argv[-1]}}")
    sys.exit(100)
time.sleep(0.5)  # installing takes a while: the other session waits on the lock meanwhile
tool = state / "bin" / os.environ["APT_TOOL"]
tool.write_text("#!/bin/sh\\n")
tool.chmod(0o755)
"""

SESSION = textwrap.dedent(
    """
    import sys
    from tests.tools import require
    print(require(sys.argv[1]))
    """
)


def sessions(tmp_path: Path, tool: str, *, count: int, apt_works: bool) -> list[tuple[int, str]]:
    """``count`` concurrent processes each asking for ``tool`` on a PATH without it."""
    stub, state = tmp_path / "stub", tmp_path / "state"
    (state / "bin").mkdir(parents=True)
    stub.mkdir()
    (stub / "apt-get").write_text(APT_GET.format(python=sys.executable))
    (stub / "apt-get").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{stub}{os.pathsep}{state / 'bin'}",  # not /usr/bin: the real tool is not on it
        "TMPDIR": str(tmp_path),  # a lock of this test's own
        "APT_STATE": str(state),
        "APT_TOOL": tool,
        "APT_WORKS": "yes" if apt_works else "no",
    }
    env.pop("DEBIAN_FRONTEND", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SESSION, tool],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    return [(p.returncode, out) for p, out in zip(procs, outs, strict=True)]


def apt_calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "state" / "calls").read_text().splitlines()]


@pytest.mark.parametrize("tool", sorted(PACKAGES))
def test_a_missing_tool_is_installed_once_from_its_package_by_parallel_sessions(
    tmp_path: Path, tool: str
) -> None:
    package = PACKAGES[tool]
    # The mapping is the truth: the package dpkg says ships the real tool.
    owner = subprocess.run(["dpkg", "-S", require(tool)], capture_output=True, text=True, check=True)
    assert owner.stdout.split(":")[0] == package

    results = sessions(tmp_path, tool, count=2, apt_works=True)

    assert [code for code, _ in results] == [0, 0], results
    assert all(out.strip() == str(tmp_path / "state" / "bin" / tool) for _, out in results), results
    install = ["noninteractive", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends"]
    assert apt_calls(tmp_path) == [  # once for both; the package lists updated only when it failed
        [*install, package],
        ["noninteractive", "-o", "DPkg::Lock::Timeout=300", "update"],
        [*install, package],
    ]


def test_a_tool_that_cannot_be_installed_fails_the_test_with_apts_reason(tmp_path: Path) -> None:
    [(code, out)] = sessions(tmp_path, "promtool", count=1, apt_works=False)

    assert code != 0
    assert "Failed: the Debian package 'prometheus' is needed by this test and could not be installed" in out
    assert "E: Unable to locate package prometheus" in out
    assert "`sudo apt-get install -y prometheus`" in out
    assert "Skipped" not in out
    assert [call[-1] for call in apt_calls(tmp_path)] == ["prometheus", "update", "prometheus"]
