"""``rule_files``: a glob that matches no file is an error, in ``check``, at ``run`` start and on reload.

Before, a typo (``rules/*.yml``) passed ``check`` with "0 rules in 0 files" and the daemon ran with no
rules at all, silently alerting on nothing. ``rule_files: []`` is how a user says "no rules".
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from runwatch.app import Daemon
from runwatch.cli import main
from runwatch.config import load_config
from runwatch.yamlfile import FileProblems, Problem

RULE = "rules:\n  - {name: a, match: {provider: exa}, notify: [ops]}\n"
CHANNELS = "channels:\n  ops: {apprise: 'json://127.0.0.1:9/x'}\n"


def setup(tmp_path: Path, config: str, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text("state_dir: state\n" + CHANNELS + config)
    return cfg


def check(cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["check", "--config", str(cfg)])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_a_glob_that_matches_no_file_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = setup(tmp_path, "rule_files:\n  - rules/*.yaml\n  - rules/*.yml\n", {"rules/a.yaml": RULE})
    code, lines, _ = check(cfg, capsys)
    assert code == 1
    assert lines == [f"{cfg}:6: rule_files[1]: 'rules/*.yml' matches no file (relative to {tmp_path})"]


def test_every_problem_is_reported_the_glob_and_the_rule_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = "rules:\n  - {name: a, notify: [nope]}\n"
    cfg = setup(tmp_path, "rule_files: [rules/*.yaml, team/*.yaml]\n", {"rules/a.yaml": broken})
    code, lines, _ = check(cfg, capsys)
    assert code == 1
    assert lines == [
        f"{cfg}:4: rule_files[1]: 'team/*.yaml' matches no file (relative to {tmp_path})",
        "rules/a.yaml:2: rules[0].notify[0]: 'nope' is not a configured channel (configured: ops)",
    ]


def test_the_default_glob_matching_nothing_says_it_is_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = setup(tmp_path, "")
    code, lines, _ = check(cfg, capsys)
    assert code == 1
    assert lines == [
        f"{cfg}: rule_files[0]: 'rules/*.yaml' matches no file (relative to {tmp_path}); it is the default:"
        " name your rule files, or say rule_files: [] for none"
    ]


def test_a_directory_is_not_a_rule_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, "rule_files: [rules]\n", {"rules/a.yaml": RULE})
    code, lines, _ = check(cfg, capsys)
    assert code == 1
    assert lines == [
        f"{cfg}:4: rule_files[0]: 'rules' is a directory (relative to {tmp_path}); name its files,"
        " e.g. 'rules/*.yaml'"
    ]


def test_a_glob_from_the_environment_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNWATCH_RULE_FILES", '["/nonexistent/*.yaml"]')
    cfg = setup(tmp_path, "rule_files: [rules/*.yaml]\n", {"rules/a.yaml": RULE})
    code, lines, _ = check(cfg, capsys)
    assert code == 1
    assert lines == [
        f"{cfg}: rule_files[0]: '/nonexistent/*.yaml' matches no file; it comes from $RUNWATCH_RULE_FILES"
    ]


def test_a_named_file_that_is_missing_is_still_file_not_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = setup(tmp_path, "rule_files: [rules/a.yaml, rules/missing.yaml]\n", {"rules/a.yaml": RULE})
    code, lines, _ = check(cfg, capsys)
    assert (code, lines) == (1, ["rules/missing.yaml: file not found"])


def test_no_rules_on_purpose_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, "rule_files: []\n")
    code, lines, _ = check(cfg, capsys)
    assert code == 0
    assert len(lines) == 1 and lines[0].startswith(f"OK: {cfg}: 0 rules in 0 files")


def test_rule_paths_collects_or_raises(tmp_path: Path) -> None:
    cfg = load_config(
        setup(tmp_path, "rule_files: ['r/*.yml', 'r/a.yaml', 'r/a.yaml', 'r/*.yaml']\n", {"r/a.yaml": RULE})
    )
    problems: list[Problem] = []
    assert cfg.rule_paths(problems) == [tmp_path / "r" / "a.yaml"]
    assert [str(p) for p in problems] == [
        f"{cfg.shown}:4: rule_files[0]: 'r/*.yml' matches no file (relative to {tmp_path})"
    ]
    with pytest.raises(FileProblems) as info:
        cfg.rule_paths()
    assert info.value.problems == problems


def test_run_refuses_to_start_without_its_rules(tmp_path: Path) -> None:
    cfg = setup(tmp_path, "metrics_listen: 127.0.0.1:0\nrule_files: [rules/*.yml]\n", {"rules/a.yaml": RULE})
    out = subprocess.run(
        [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == f"{cfg}:5: rule_files[0]: 'rules/*.yml' matches no file (relative to {tmp_path})"
    )
    assert not (tmp_path / "state").exists()


def test_a_reload_whose_glob_matches_nothing_keeps_the_rules(tmp_path: Path, log_lines: io.StringIO) -> None:
    cfg = setup(tmp_path, "rule_files: [rules/*.yaml]\n", {"rules/a.yaml": RULE})
    daemon = Daemon(load_config(cfg))
    try:
        (tmp_path / "rules" / "a.yaml").rename(tmp_path / "rules" / "a.yml")
        assert not daemon.reload()
        assert [r.name for r in daemon.ruleset] == ["a"]
        assert "rule_files[0]: 'rules/*.yaml' matches no file" in log_lines.getvalue()
    finally:
        daemon.store.close()
