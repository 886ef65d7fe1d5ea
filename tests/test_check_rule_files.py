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
    assert out.returncode == 78  # EX_CONFIG: the unit does not restart into it
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


# --- match.fields operators and per-kind checks (issue 11): real files, `runwatch check` as the CLI runs it


def check_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str
) -> tuple[int, list[str], list[str]]:
    cfg = setup(tmp_path, "rule_files: [rules/*.yaml]\n", {"rules/a.yaml": rules})
    code, lines, err = check(cfg, capsys)
    return code, lines, [line for line in err.splitlines() if line.startswith("warning: rules/")]


def test_every_operator_and_namespace_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """\
rules:
  - name: busy-snapshot
    match:
      provider: olostep
      kind: run.status
      fields:
        run.snapshot.items_count: {gt: 0, lte: 1000}
        snapshot.ratio: {gte: 0.5, lt: 1}
        metadata.team: "^search$"
        run.metadata.tier: {in: [1, 2, "gold"]}
        run.metadata.owner: {present: true, ne: null}
        run.metadata.urgent: {eq: true}
        monitor.metadata.team: {eq: search}
        monitor.name: {glob: "Prod *", regex: "(?i)news"}
        change.to: {in: [failed, canceled]}
        change.failed_reason: {present: false}
    notify: [ops]
  - name: step-error
    match: {kind: run.event, fields: {event.error: {present: true}, event.message: {regex: "(?i)error"}}}
    notify: [ops]
  - name: no-event-here
    match: {kind: run.status, fields: {event.error: {present: false}}}
    notify: [ops]
  - name: paused
    match: {kind: monitor.status, to: paused}
    notify: [ops]
  - name: long-outage
    match: {kind: source.error, failed_reason: "401", fields: {change.failing_for: {gte: 600}}}
    for: 10m
    notify: [ops]
"""
    code, lines, warnings = check_rules(tmp_path, capsys, rules)
    assert (code, warnings) == (0, [])
    assert len(lines) == 1 and lines[0].startswith(f"OK: {tmp_path / 'runwatch.yaml'}: 5 rules in 1 files")


def test_operator_errors_name_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """\
rules:
  - name: a
    match:
      fields:
        run.snapshot.items_count: {gt: "0"}
        metadata.team: {gtt: 1}
        metadata.tier: {lte: [1]}
        metadata.name: {regex: "(oops"}
        metadata.id: {glob: ""}
        metadata.tags: {in: []}
        metadata.flag: {present: "yes"}
        metadata.other: {}
        metadata.count: 3
        metadata.x: {eq: {a: 1}}
        metadata.y: "[a-"
        metadata.z: {contains: x}
    notify: [ops]
"""
    code, lines, _ = check_rules(tmp_path, capsys, rules)
    assert code == 1
    assert lines == [
        "rules/a.yaml:5: rules[0].match.fields.run.snapshot.items_count.gt: expected a number, got a string"
        " (write 0, without quotes)",
        "rules/a.yaml:6: rules[0].match.fields.metadata.team.gtt: unknown operator 'gtt'"
        " (did you mean 'gt'?)",
        "rules/a.yaml:7: rules[0].match.fields.metadata.tier.lte: expected a number, got a list",
        "rules/a.yaml:8: rules[0].match.fields.metadata.name.regex: invalid regex '(oops': missing ),"
        " unterminated subpattern at position 0",
        "rules/a.yaml:9: rules[0].match.fields.metadata.id.glob: empty glob (use '*' to match any value,"
        " or present: true)",
        "rules/a.yaml:10: rules[0].match.fields.metadata.tags.in: empty list: give at least one value",
        "rules/a.yaml:11: rules[0].match.fields.metadata.flag.present: expected true or false, got a string",
        "rules/a.yaml:12: rules[0].match.fields.metadata.other: no operator given (give one of eq, ne, regex,"
        " glob, in, gt, gte, lt, lte, present)",
        "rules/a.yaml:13: rules[0].match.fields.metadata.count: expected a regex (a string) or a mapping of"
        " operators (eq, ne, regex, glob, in, gt, gte, lt, lte, present), got a number (quote it for a regex,"
        " or use eq)",
        "rules/a.yaml:14: rules[0].match.fields.metadata.x.eq: expected a string, number, boolean or null,"
        " got a mapping",
        "rules/a.yaml:15: rules[0].match.fields.metadata.y: invalid regex '[a-': unterminated character set"
        " at position 0",
        "rules/a.yaml:16: rules[0].match.fields.metadata.z.contains: unknown operator 'contains'"
        " (operators: eq, ne, regex, glob, in, gt, gte, lt, lte, present)",
    ]


def test_keys_that_never_match_the_rules_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """\
rules:
  - name: event-on-status
    match:
      kind: run.status
      event: run_complete
      message: error
      to: [failed, paused]
      fields:
        event.error: {present: true}
        event.message: {present: false}
    notify: [ops]
  - name: run-on-monitor
    match:
      kind: [monitor.status, monitor.missed_run]
      fields: {run.snapshot.items_count: {gt: 0}, metadata.team: search, monitor.name: x}
    notify: [ops]
  - name: monitor-on-source
    match: {kind: source.error, from: running, fields: {monitor.metadata.team: search}}
    notify: [ops]
  - name: status-on-event
    match: {kind: run.event, to: running, from: paused}
    notify: [ops]
  - name: no-such-change-field
    match: {fields: {change.status: failed, change.to.name: x, change: x}}
    notify: [ops]
"""
    code, lines, _ = check_rules(tmp_path, capsys, rules)
    assert code == 1
    assert lines == [
        "rules/a.yaml:5: rules[0].match.event: never matches a run.status change"
        " (only run.event changes have an event)",
        "rules/a.yaml:6: rules[0].match.message: never matches a run.status change"
        " (only run.event changes have a message)",
        "rules/a.yaml:7: rules[0].match.to[1]: never matches a run.status change"
        " ('paused' is a monitor status: only monitor.status changes have it)",
        "rules/a.yaml:9: rules[0].match.fields.event.error: never matches a run.status change"
        " (only run.event changes have an event)",
        "rules/a.yaml:15: rules[1].match.fields.run.snapshot.items_count: never matches a monitor.status or"
        " monitor.missed_run change (only run.status, run.event and run.stuck changes have a run)",
        "rules/a.yaml:15: rules[1].match.fields.metadata.team: never matches a monitor.status or"
        " monitor.missed_run change (only run.status, run.event and run.stuck changes have a run)",
        "rules/a.yaml:18: rules[2].match.from: never matches a source.error change"
        " (a source.error change has no previous status)",
        "rules/a.yaml:18: rules[2].match.fields.monitor.metadata.team: never matches a source.error change"
        " (a source.error change has no monitor)",
        "rules/a.yaml:21: rules[3].match.to: never matches a run.event change"
        " (only run.status and monitor.status changes have a new status)",
        "rules/a.yaml:21: rules[3].match.from: never matches a run.event change"
        " ('paused' is a monitor status: only monitor.status changes have it)",
        "rules/a.yaml:24: rules[4].match.fields.change.status: 'change.status' is not a field of the change"
        " (known: change.from, change.to, change.failed_reason, change.failing_for, change.provider,"
        " change.monitor_id, change.run_id, change.kind, change.event)",
        "rules/a.yaml:24: rules[4].match.fields.change.to.name: change.to is a plain value: it has no 'name'"
        " inside",
        "rules/a.yaml:24: rules[4].match.fields.change: name a field of the change (change.from, change.to,"
        " change.failed_reason, change.failing_for, change.provider, change.monitor_id, change.run_id,"
        " change.kind, change.event)",
    ]


def test_keys_that_cannot_hold_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """\
rules:
  - name: paused-step
    match: {kind: [monitor.status, run.event], to: paused, event: run_complete}
    notify: [ops]
  - name: monitor-went-from-running
    match:
      kind: [run.status, monitor.status]
      from: running
      to: paused
    notify: [ops]
  - name: outage-age-without-kind
    match: {fields: {change.failing_for: {gte: 60}}}
    notify: [ops]
"""
    code, lines, _ = check_rules(tmp_path, capsys, rules)
    assert code == 1
    assert lines == [
        "rules/a.yaml:3: rules[0].match.event: never matches together with match.to (match.to only matches"
        " monitor.status changes; only run.event changes have an event)",
        "rules/a.yaml:9: rules[1].match.to: never matches together with match.from (match.from only matches"
        " run.status changes; only monitor.status changes have to: paused)",
        "rules/a.yaml:12: rules[2].match.fields.change.failing_for: never matches any change this rule sees"
        " (with no kind, it sees run.status and run.event changes;"
        " only run.stuck, source.error and monitor.missed_run changes have failing_for)",
    ]


def test_keys_with_no_effect_are_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """\
rules:
  - name: stuck-on-status
    match: {kind: run.status, to: failed}
    stuck_after: 1h
    notify: [ops]
  - name: for-without-kind
    match: {provider: exa}
    for: 10m
    threshold: {count: 1, within: 24h}
    notify: [ops]
  - name: fine
    match: {kind: [run.stuck, source.error]}
    stuck_after: 2h
    for: 10m
    threshold: {count: 2, within: 24h}
    notify: [ops]
"""
    code, lines, warnings = check_rules(tmp_path, capsys, rules)
    assert code == 0
    assert len(lines) == 1 and lines[0].startswith("OK: ")
    assert warnings == [
        "warning: rules/a.yaml:4: rules[0].stuck_after: has no effect: only run.stuck changes use it,"
        " and this rule's kind is run.status",
        "warning: rules/a.yaml:8: rules[1].for: has no effect: only source.error changes use it,"
        " and this rule names no kind, so it never sees source.error changes (add kind: source.error)",
        "warning: rules/a.yaml:9: rules[1].threshold.count: 1 fires on the first match,"
        " so within (24h) has no effect",
    ]


def test_old_rule_files_keep_their_meaning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = (Path(__file__).resolve().parents[1] / "rules" / "example.yaml").read_text()
    cfg = setup(
        tmp_path,
        "rule_files: [rules/*.yaml]\n",
        {"rules/example.yaml": example},
    )
    cfg.write_text(
        cfg.read_text().replace(
            "channels:\n",
            "channels:\n  ops-slack: {apprise: 'json://127.0.0.1:9/s'}\n  ops-mail: {apprise: 'json://127.0.0.1:9/m'}\n",
        )
    )
    code, lines, err = check(cfg, capsys)
    assert code == 0, lines
    assert not [line for line in err.splitlines() if "rules/" in line]
