"""systemd/README.md, run as written: every command that does not need systemd as PID 1 (or the host's
package manager, TPM or terminal) runs in order, in a copy of the checkout, with the system paths it
names (/opt, /etc, /usr/local/bin) moved under a scratch root. The rest is checked for what it names.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import REPO, require

GUIDE = REPO / "systemd" / "README.md"
UNIT = REPO / "systemd" / "runwatch.service"
#: Commands that need the real host: systemd as PID 1, apt, a TPM/host key, a terminal, the service,
#: a PostgreSQL server of the host's own (step 9).
HOST_ONLY = (
    "systemctl", "journalctl", "apt-get", "systemd-ask-password", "systemd-creds", "curl", "createuser",
    "createdb",
)  # fmt: skip
SYSTEM_PATH = re.compile(r"(?<![\w.])/(?=(?:opt|etc|usr/local)/)")
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "runwatch-state"
)


def sections() -> list[tuple[str, list[str], list[str]]]:
    """(title, sh commands, yaml blocks) of each ``## `` section, in order."""
    out: list[tuple[str, list[str], list[str]]] = []
    for part in re.split(r"^## ", GUIDE.read_text(), flags=re.M)[1:]:
        title = part.splitlines()[0]
        blocks = re.findall(r"^```(\w+)\n(.*?)^```", part, flags=re.M | re.S)
        commands = [ln for lang, body in blocks if lang == "sh" for ln in body.splitlines() if ln.strip()]
        yamls = [body for lang, body in blocks if lang == "yaml"]
        out.append((title, commands, yamls))
    return out


def host_only(command: str) -> bool:
    return any(re.search(rf"(^|\s|\|\s*){re.escape(tool)}\b", command) for tool in HOST_ONLY)


def unit_credentials() -> set[str]:
    return set(re.findall(r"^LoadCredentialEncrypted=(\w+)$", UNIT.read_text(), flags=re.M))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_install_guide_works_as_written(tmp_path: Path) -> None:
    root = tmp_path / "root"
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=COPY_IGNORE)
    env = {**os.environ, "PATH": f"{root}/usr/local/bin:{os.environ['PATH']}"}
    for var in ("VIRTUAL_ENV", "CREDENTIALS_DIRECTORY", "EXA_API_KEY", "OLOSTEP_API_KEY"):
        env.pop(var, None)
    for d in ("opt", "usr/local/bin", "etc/systemd/system", "etc/prometheus"):
        (root / d).mkdir(parents=True, exist_ok=True)

    def run(command: str) -> str:
        local = SYSTEM_PATH.sub(f"{root}/", command.removeprefix("sudo ").replace("| sudo ", "| "))
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", local],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert out.returncode == 0, f"{command}\n-> {local}\n{out.stdout}{out.stderr}"
        return out.stdout

    skipped: list[str] = []
    outputs: dict[str, str] = {}
    for title, commands, yamls in sections():
        for command in commands:
            if host_only(command):
                skipped.append(command)
            else:
                outputs[command] = run(command)
        etc = root / "etc"

        if title.startswith("1."):
            version = outputs["runwatch --version"].strip()
            assert re.fullmatch(r"runwatch \d+\.\d+\.\d+\S*", version)
            assert (root / "usr/local/bin/runwatch").resolve() == (root / "opt/runwatch/bin/runwatch")

        if title.startswith("2."):
            config = etc / "runwatch/runwatch.yaml"
            assert mode(config) == 0o644 and mode(etc / "runwatch/rules/starter.yaml") == 0o644
            assert mode(etc / "runwatch") == 0o755 and mode(etc / "runwatch/rules") == 0o755
            assert outputs[next(c for c in commands if " check " in c)].startswith("OK: ")
            # World-readable, so no secret: no key, and no URL but the token-free syslog one.
            live = [ln for ln in config.read_text().splitlines() if not ln.lstrip().startswith("#")]
            assert not [ln for ln in live if "api_key" in ln or "password" in ln.lower()]
            assert re.findall(r"\w+://\S*", "\n".join(live)) == ['syslog://"}']

        if title.startswith("3."):
            creds = [c for c in commands if "systemd-creds encrypt" in c]
            assert creds
            for c in creds:
                name, target = re.search(r"--name=(\w+) - (\S+)$", c).groups()  # type: ignore[union-attr]
                assert target == f"/etc/credstore.encrypted/{name}" and name in unit_credentials()
            assert mode(etc / "credstore.encrypted") == 0o700

        if title.startswith("4."):
            assert (etc / "systemd/system/runwatch.service").read_text() == UNIT.read_text()

        if title.startswith("6."):
            # What systemd hands ExecStartPre/ExecStart: the decrypted credentials in a directory.
            creds_dir = tmp_path / "credentials"
            creds_dir.mkdir()
            (creds_dir / "ops_apprise_url").write_text("json://127.0.0.1:9/ops")
            (creds_dir / "exa_api_key").write_text("exa-key-from-credential\n")
            check = subprocess.run(
                [root / "usr/local/bin/runwatch", "check", "--config", etc / "runwatch/runwatch.yaml"],
                env={**env, "CREDENTIALS_DIRECTORY": str(creds_dir)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert check.returncode == 0 and "providers enabled: exa" in check.stdout, check.stdout
            assert "exa-key-from-credential" not in check.stdout + check.stderr
            assert "ops_apprise_url" in unit_credentials()

        if title.startswith("7."):
            (prometheus_yml,) = yamls
            conf = etc / "prometheus/prometheus.yml"
            conf.write_text(SYSTEM_PATH.sub(f"{root}/", prometheus_yml))
            checked = subprocess.run(
                [require("promtool"), "check", "config", str(conf)], capture_output=True, text=True
            )
            assert checked.returncode == 0 and "SUCCESS: 12 rules found" in checked.stdout, checked.stdout
            assert (checkout / "runwatch-dashboard.json").read_text() == (
                REPO / "grafana/runwatch-dashboard.json"
            ).read_text()

        if title.startswith("8."):
            assert (etc / "systemd/system/runwatch.service").read_text() == UNIT.read_text()
            assert re.search(r"^  ops: \{\}$", (etc / "runwatch/runwatch.yaml").read_text(), re.M)  # kept

        if title == "Uninstall":
            assert not (root / "opt/runwatch").exists() and not (root / "usr/local/bin/runwatch").exists()

    # What could not run here is what needs the host; each of those is named on purpose.
    expected_host = {
        "sudo apt-get install -y python3-venv",
        "sudo systemctl daemon-reload",
        "sudo systemctl enable --now runwatch",
        "systemctl status runwatch",
        "journalctl -u runwatch -f",
        "sudo systemctl reload runwatch",
        "sudo systemctl restart runwatch",
        "sudo systemctl disable --now runwatch",
        "sudo apt-get install -y postgresql",
        "sudo -u postgres createuser --pwprompt runwatch",
        "sudo -u postgres createdb --owner runwatch runwatch",
    }
    assert expected_host <= set(skipped)
    assert all(
        c in expected_host or "systemd-creds" in c or c.startswith(("curl", "journalctl")) for c in skipped
    )


def test_the_guide_names_the_python_that_runs_tests() -> None:
    """The guide's venv is made by the system ``python3``; runwatch must support that version."""
    assert sys.version_info >= (3, 11)
    assert "python3 -m venv /opt/runwatch" in GUIDE.read_text()


@pytest.mark.parametrize("unit_line", sorted(unit_credentials()))
def test_every_credential_of_the_unit_is_one_runwatch_reads(unit_line: str) -> None:
    assert re.fullmatch(r"(exa|olostep)_api_key|state_url|\w+_(apprise_url|webhook_secret)", unit_line)
