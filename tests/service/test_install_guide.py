"""systemd/README.md, run as written: every command that does not need systemd as PID 1 (or the host's
package manager, TPM or terminal) runs in order, in a copy of the checkout, with the system paths it
names (/opt, /etc, /usr/local/bin, /var/lib) moved under a scratch root. The rest is checked for what
it names. Where the guide starts the service, runwatch runs as the unit starts it (its ExecStart=, its
Environment=, and what systemd adds: $STATE_DIRECTORY, $CREDENTIALS_DIRECTORY), so the commands the
guide has an operator type on the host meet a running service, and the unit's ExecReload= runs as
``systemctl reload`` runs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.test_observability import Lines
from tests.tools import REPO, free_port, require

GUIDE = REPO / "systemd" / "README.md"
UNIT = REPO / "systemd" / "runwatch.service"
#: Commands that need the real host: systemd as PID 1, apt, a TPM/host key, a terminal, the service,
#: a PostgreSQL server of the host's own (step 9).
HOST_ONLY = (
    "systemctl", "journalctl", "apt-get", "systemd-ask-password", "systemd-creds", "curl", "createuser",
    "createdb",
)  # fmt: skip
SYSTEM_PATH = re.compile(r"(?<![\w.])/(?=(?:opt|etc|usr/local|var/lib)/)")
SUDO = re.compile(r"(^|&& |\| )sudo ")
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


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


class Service:
    """runwatch as systemd runs the unit: ExecStart= and ExecReload= as written (system paths under
    ``root``), with the unit's Environment= and what systemd adds for StateDirectory= (created) and
    LoadCredentialEncrypted= (the decrypted credentials: plain files in ``credentials`` here)."""

    def __init__(self, root: Path, env: dict[str, str], credentials: Path) -> None:
        unit = unit_settings()
        (state_directory,) = unit["StateDirectory"]
        self.state = root / "var/lib" / state_directory
        self.root = root
        self.env = {**env, "STATE_DIRECTORY": str(self.state), "CREDENTIALS_DIRECTORY": str(credentials)}
        self.env.update(tuple(v.split("=", 1)) for v in unit.get("Environment", []))
        # Not the unit's port, which may be taken on a test machine.
        self.env["RUNWATCH_METRICS_LISTEN"] = f"127.0.0.1:{free_port()}"

    def command(self, key: str) -> list[str]:
        (line,) = unit_settings()[key]
        return SYSTEM_PATH.sub(f"{self.root}/", line).split()

    @contextlib.contextmanager
    def started(self) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
        self.state.mkdir(parents=True, exist_ok=True)
        with subprocess.Popen(
            self.command("ExecStart"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        ) as proc:
            lines = Lines(proc).start()
            try:
                lines.wait("runwatch.started", 60)
                yield proc, lines
            finally:
                proc.terminate()
                assert proc.wait(timeout=30) == 0, "".join(lines.lines)

    def reload(self) -> subprocess.CompletedProcess[str]:
        """What ``systemctl reload runwatch`` runs; its exit status is the reload's result."""
        return subprocess.run(
            self.command("ExecReload"), env=self.env, capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture
def services() -> Iterator[contextlib.ExitStack]:
    """Whatever the test starts as the service is stopped at the end, even when it fails."""
    with contextlib.ExitStack() as stack:
        yield stack


def test_the_install_guide_works_as_written(tmp_path: Path, services: contextlib.ExitStack) -> None:
    root = tmp_path / "root"
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=COPY_IGNORE)
    tmp = tmp_path / "tmp"  # mktemp's $TMPDIR, where the guide's throwaway build copy goes
    tmp.mkdir()
    env = {**os.environ, "PATH": f"{root}/usr/local/bin:{os.environ['PATH']}", "TMPDIR": str(tmp)}
    for var in ("VIRTUAL_ENV", "CREDENTIALS_DIRECTORY", "EXA_API_KEY", "OLOSTEP_API_KEY", "JOURNAL_STREAM"):
        env.pop(var, None)
    for d in ("opt", "usr/local/bin", "etc/systemd/system", "etc/prometheus"):
        (root / d).mkdir(parents=True, exist_ok=True)
    checkout_files = files(checkout)
    decrypted = tmp_path / "service-credentials"  # what systemd decrypts for the service
    decrypted.mkdir()
    service = Service(root, env, decrypted)
    guide = " ".join(GUIDE.read_text().split())  # as it reads: line breaks are spaces
    errors: dict[str, str] = {}

    def run(command: str) -> str:
        local = SYSTEM_PATH.sub(f"{root}/", SUDO.sub(r"\1", command))
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
        errors[command] = out.stderr
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
            # Installed without a build in the checkout (no root-owned build/ or *.egg-info left there)
            # and without leaving the throwaway copy behind.
            assert files(checkout) == checkout_files
            assert not files(tmp)

        if title.startswith("2."):
            config = etc / "runwatch/runwatch.yaml"
            assert mode(config) == 0o644 and mode(etc / "runwatch/rules/starter.yaml") == 0o644
            assert mode(etc / "runwatch") == 0o755 and mode(etc / "runwatch/rules") == 0o755
            assert outputs[next(c for c in commands if " check " in c)].startswith("OK: ")
            # World-readable, so no secret: no key, and no URL but the token-free syslog one.
            live = [ln for ln in config.read_text().splitlines() if not ln.lstrip().startswith("#")]
            assert not [ln for ln in live if "api_key" in ln or "password" in ln.lower()]
            assert re.findall(r"\w+://\S*", "\n".join(live)) == ['syslog://"}']
            # The service's state directory is the config's own, so commands typed on the host find it.
            (state_directory,) = unit_settings()["StateDirectory"]
            assert re.findall(r"^state_dir: (\S+)$", config.read_text(), re.M) == [
                f"/var/lib/{state_directory}"
            ]
            config.write_text(SYSTEM_PATH.sub(f"{root}/", config.read_text()))  # /var/lib under root, too

        if title.startswith("3."):
            creds = [c for c in commands if "systemd-creds encrypt" in c]
            assert creds
            for c in creds:
                name, target = re.search(r"--name=(\w+) - (\S+)$", c).groups()  # type: ignore[union-attr]
                assert target == f"/etc/credstore.encrypted/{name}" and name in unit_credentials()
            assert mode(etc / "credstore.encrypted") == 0o700

        if title.startswith("4."):
            assert (etc / "systemd/system/runwatch.service").read_text() == UNIT.read_text()
            # `systemctl enable --now runwatch`
            daemon, log = services.enter_context(service.started())

        if title.startswith("5."):
            # `sudo runwatch outbox list --config /etc/runwatch/runwatch.yaml` read the service's state.
            listed = next(c for c in commands if "outbox list" in c)
            assert outputs[listed] == "no notifications\n"
            assert (service.state / "runwatch.lock").read_text().strip() == str(daemon.pid)
            # `sudo systemctl reload runwatch` with a rule file that does not validate: it fails, says why
            # in the lines `systemctl status` shows, and the service keeps running what it ran.
            rules = etc / "runwatch/rules/starter.yaml"
            good = rules.read_text()
            rules.write_text(good.replace("to: failed", "to: faild", 1))
            refused = service.reload()
            assert refused.returncode == 1
            assert re.search(
                r"^rules/starter\.yaml:\d+: rules\[\d\]\.match\.to: 'faild' ", refused.stdout, re.M
            )
            assert daemon.poll() is None
            rules.write_text(good)
            taken = service.reload()
            assert taken.returncode == 0, taken.stdout + taken.stderr
            assert f"reload: runwatch pid {daemon.pid} took the new config (3 rules)" in taken.stdout
            log.wait(r"reload\.ok .*rules=3", 30)
            # What the guide says an operator sees is what they get.
            assert (
                "Job for runwatch.service failed because the control process exited with error code." in guide
            )
            assert "refused the new config and keeps running the one it had" in guide
            assert "Result: start-limit-hit" in guide and "sudo systemctl reset-failed runwatch" in guide

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
            # Typed on the host, without the credentials: the rest is checked, the credential is named.
            by_hand = next(c for c in commands if " check " in c)
            assert outputs[by_hand].startswith("OK: ")
            warning = re.search(r"^warning: \S+: channels\.ops: (uses the credential ops_apprise_url, .*)$",
                                errors[by_hand], re.M)  # fmt: skip
            assert warning and warning.group(1).split(":")[0] in guide
            # `sudo systemctl restart runwatch`: the service now has the credential. A reload typed on the
            # host checks what it can and gets the service's answer.
            services.close()
            (decrypted / "ops_apprise_url").write_text("json://127.0.0.1:9/ops\n")
            daemon, log = services.enter_context(service.started())
            reloaded = run("sudo runwatch reload --config /etc/runwatch/runwatch.yaml")
            assert f"runwatch pid {daemon.pid} took the new config" in reloaded
            services.close()

        if title.startswith("7."):
            (prometheus_yml,) = yamls
            conf = etc / "prometheus/prometheus.yml"
            conf.write_text(SYSTEM_PATH.sub(f"{root}/", prometheus_yml))
            checked = subprocess.run(
                [require("promtool"), "check", "config", str(conf)], capture_output=True, text=True
            )
            assert checked.returncode == 0 and "SUCCESS: 15 rules found" in checked.stdout, checked.stdout
            assert (checkout / "runwatch-dashboard.json").read_text() == (
                REPO / "grafana/runwatch-dashboard.json"
            ).read_text()

        if title.startswith("8."):
            assert (etc / "systemd/system/runwatch.service").read_text() == UNIT.read_text()
            assert re.search(r"^  ops: \{\}$", (etc / "runwatch/runwatch.yaml").read_text(), re.M)  # kept

        if title == "Uninstall":
            assert not (root / "opt/runwatch").exists() and not (root / "usr/local/bin/runwatch").exists()

    assert not files(tmp)  # the throwaway copy of the upgrade is gone as well

    # What could not run here is what needs the host; each of those is named on purpose.
    expected_host = {
        "sudo apt-get install -y python3-venv",
        "sudo systemctl daemon-reload",
        "sudo systemctl enable --now runwatch",
        "systemctl status runwatch",
        "sudo journalctl -u runwatch -f",
        "sudo systemctl reload runwatch",
        "sudo systemctl restart runwatch",
        "sudo systemctl reset-failed runwatch",
        "sudo systemctl start runwatch",
        "sudo systemctl disable --now runwatch",
        "sudo apt-get install -y postgresql",
        "sudo -u postgres createuser --pwprompt runwatch",
        "sudo -u postgres createdb --owner runwatch runwatch",
    }
    assert expected_host <= set(skipped)
    assert all(
        c in expected_host or "systemd-creds" in c or c.startswith(("curl", "sudo journalctl"))
        for c in skipped
    )


def test_the_guide_names_the_python_that_runs_tests() -> None:
    """The guide's venv is made by the system ``python3``; runwatch must support that version."""
    assert sys.version_info >= (3, 11)
    assert "python3 -m venv /opt/runwatch" in GUIDE.read_text()


@pytest.mark.parametrize("unit_line", sorted(unit_credentials()))
def test_every_credential_of_the_unit_is_one_runwatch_reads(unit_line: str) -> None:
    assert re.fullmatch(r"(exa|olostep)_api_key|state_url|\w+_(apprise_url|webhook_secret)", unit_line)
