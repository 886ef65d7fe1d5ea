"""``runwatch test-rules``: rule files against cases, offline, with the daemon's own matcher, templates
and alert lifecycle. The shipped example rule files are run through a real subprocess, like a user (or
CI) runs them; the report's details are checked in-process, where they are quicker to read.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runwatch.commands.test_rules import MAX_NOTIFICATIONS, run_test_rules

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "rules").glob("*.yaml"))


def test_every_example_rule_file_has_cases_and_every_case_file_a_rule_file() -> None:
    assert EXAMPLES, "no example rule files in rules/"
    cases = sorted((REPO / "rules" / "cases").glob("*.yaml"))
    assert [p.name for p in cases] == [p.name for p in EXAMPLES]


def test_the_example_rule_files_load_together() -> None:
    """A user who points ``rule_files`` at the folder gets every example at once: the names are unique
    and only the two channels the README's config defines are named."""
    from runwatch.rules import load_rules

    ruleset = load_rules(EXAMPLES, channels={"ops-slack", "ops-mail"})
    assert len({r.name for r in ruleset}) == len(list(ruleset)) >= len(EXAMPLES)


@pytest.mark.parametrize("rule_file", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_rules_pass_their_cases(rule_file: Path, tmp_path: Path) -> None:
    """Run from an empty directory: the command reads its files and writes nothing anywhere."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runwatch",
            "test-rules",
            str(rule_file),
            "--cases",
            str(REPO / "rules" / "cases" / rule_file.name),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("OK: ") and " cases passed, " in lines[0], out.stdout
    assert out.stderr == ""
    assert list(tmp_path.iterdir()) == []


RULES = """
rules:
  - name: exa-failed
    match: {provider: exa, kind: run.status, to: failed}
    severity: critical
    notify: [pager, chat]
    title: "{{ monitor_id }}: run {{ run_id }} failed"
    body: |
      {{ from or "new" }} -> {{ to }}
      reason: {{ failed_reason or "none" }}
  - name: olostep-step
    match: {provider: olostep, kind: run.event, event: "fetch_*"}
    severity: info
    notify: chat
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def run(tmp_path: Path, cases: str, rules: str = RULES) -> tuple[int, str]:
    out = io.StringIO()
    code = run_test_rules(
        [write(tmp_path, "rules.yaml", rules)], [write(tmp_path, "cases.yaml", cases)], out=out
    )
    return code, out.getvalue()


#: One timeline item, in YAML flow style (so it fits in any indentation): m1's run r1 failed.
FAILED = (
    "{at: 0, provider: exa, monitor_id: m1, run_id: r1, kind: run.status,"
    " from: running, to: failed, failed_reason: quota}"
)
STEP = "{at: 0, provider: olostep, monitor_id: m2, run_id: r2, kind: run.event, event: fetch_page}"


def test_a_passing_file_prints_one_line(tmp_path: Path) -> None:
    code, out = run(
        tmp_path,
        f"""
        - name: failure to both channels
          timeline: [{FAILED}]
          expect:
            - at: 0
              channel: pager
              rule: exa-failed
              severity: critical
              title: "m1: run r1 failed"
              body: |
                running -> failed
                reason: quota
            - {{at: 0, channel: chat, rule: exa-failed, body: {{regex: "^running -> failed\\nreason: q"}}}}
        - name: a step and nothing for a completed run
          timeline:
            - {STEP}
            - {{at: 1m, provider: olostep, monitor_id: m2, run_id: r2, kind: run.status, to: completed}}
          expect:
            - at: 0
              channel: chat
              rule: olostep-step
              title: "[info] olostep m2 run r2: event fetch_page"
        """,
    )
    assert (code, out) == (
        0,
        "OK: 2 cases passed, 3 notifications as expected (2 rules in 1 files, 1 case files)\n",
    )


def test_a_mismatch_shows_what_differs_and_exits_1(tmp_path: Path) -> None:
    code, out = run(
        tmp_path,
        f"""
        - name: ok
          timeline: [{FAILED}]
          expect:
            - {{at: 0, channel: pager, rule: exa-failed}}
            - {{at: 0, channel: chat, rule: exa-failed}}
        - name: wrong
          timeline:
            - {FAILED}
            - {{at: 90s, provider: olostep, monitor_id: m2, run_id: r2, kind: run.event, event: fetch_page}}
          expect:
            - at: 0
              channel: pager
              rule: exa-failed
              severity: warning
              title: "m1: run r1 broke"
              body: |
                running -> failed
                reason: timeout
            - {{at: 0, channel: mail, rule: exa-failed}}
            - {{at: 90s, channel: chat, rule: olostep-step, body: {{regex: "^message"}}}}
        """,
    )
    assert code == 1
    assert out.splitlines() == [
        f"FAIL {tmp_path / 'cases.yaml'}:6: wrong",
        "  differs (expected at line 11): at 0s to pager by rule exa-failed [critical]: 'm1: run r1 failed'",
        "    severity: expected warning, sent critical",
        "    title: expected 'm1: run r1 broke'",
        "           sent     'm1: run r1 failed'",
        "    body:",
        "      --- expected",
        "      +++ sent",
        "      @@ -1,2 +1,2 @@",
        "       running -> failed",
        "      -reason: timeout",
        "      +reason: quota",
        "  differs (expected at line 20): at 90s to chat by rule olostep-step [info]:"
        " '[info] olostep m2 run r2: event fetch_page'",
        "    body: expected to contain /^message/, sent:",
        "      | event: fetch_page",
        "  missing (expected at line 19): at 0s to mail by rule exa-failed",
        "  not expected: at 0s to chat by rule exa-failed [critical]: 'm1: run r1 failed'",
        "FAILED: 1 of 2 cases (2 rules in 1 files, 1 case files)",
    ]


def test_the_real_command_exits_1_on_a_failing_case(tmp_path: Path) -> None:
    rules = write(tmp_path, "rules.yaml", RULES)
    cases = write(tmp_path, "cases.yaml", f"- name: nothing expected\n  timeline: [{FAILED}]\n  expect: []\n")
    out = subprocess.run(
        [sys.executable, "-m", "runwatch", "test-rules", str(rules), "--cases", str(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == f"FAIL {cases}:1: nothing expected"
    assert out.stdout.splitlines()[-1] == "FAILED: 1 of 1 cases (2 rules in 1 files, 1 case files)"
    assert "Traceback" not in out.stderr


def test_the_alert_lifecycle_repeats_and_resolves_on_the_case_clock(tmp_path: Path) -> None:
    rules = """
    rules:
      - name: exa-failing
        match: {provider: exa, kind: run.status, to: failed}
        notify: [ops]
        repeat_interval: 1h
        send_resolved: true
        title: "{{ 'resolved' if resolved else 'failing' }} {{ monitor_id }}"
    """
    code, out = run(
        tmp_path,
        """
        - name: fails twice, repeats while open, resolves when a run completes
          timeline:
            - {at: 0, provider: exa, monitor_id: m1, run_id: r1, kind: run.status, to: failed}
            - {at: 30m, provider: exa, monitor_id: m1, run_id: r2, kind: run.status, to: failed}
            - {at: 150m, provider: exa, monitor_id: m1, run_id: r3, kind: run.status, to: completed}
          until: 5h
          expect:
            - {at: 0, channel: ops, rule: exa-failing, title: failing m1, resolved: false}
            - {at: 1h, channel: ops, rule: exa-failing, title: failing m1}
            - {at: 2h, channel: ops, rule: exa-failing, title: failing m1}
            - {at: 150m, channel: ops, rule: exa-failing, title: resolved m1, resolved: true}
        """,
        rules,
    )
    assert code == 0, out


def test_grouped_and_flapping_notifications_on_the_case_clock(tmp_path: Path) -> None:
    rules = """
    rules:
      - name: digest
        match: {provider: exa, kind: run.status, to: failed}
        notify: [mail]
        group_by: [provider]
        group_wait: 1m
        group_interval: 24h
        title: "{{ alerts | length }} failed: {% for a in alerts %}{{ a.run_id }} {% endfor %}"
      - name: flaky
        match: {provider: olostep, kind: run.status, to: failed}
        notify: [chat]
        flapping: {count: 2, within: 1h, quiet: 10m}
        send_resolved: true
    """
    fail = "provider: exa, kind: run.status, to: failed"
    olo = "provider: olostep, monitor_id: p1, kind: run.status"
    code, out = run(
        tmp_path,
        f"""
        - name: a day of failures is a heads-up, then one digest a day later
          timeline:
            - {{at: 0, monitor_id: m1, run_id: r1, {fail}}}
            - {{at: 30s, monitor_id: m2, run_id: r2, {fail}}}
            - {{at: 2h, monitor_id: m1, run_id: r3, {fail}}}
            - {{at: 5h, monitor_id: m3, run_id: r4, {fail}}}
            - {{at: 9h, monitor_id: m1, run_id: r5, {fail}}}
          until: 48h
          expect:
            - {{at: 1m, channel: mail, rule: digest, alerts: 2, title: "2 failed: r1 r2"}}
            - {{at: 1441m, channel: mail, rule: digest, alerts: 3, title: "3 failed: r3 r4 r5"}}
        - name: a flapping monitor is reported once, and its end once
          timeline:
            - {{at: 0, {olo}, run_id: q1, to: failed}}
            - {{at: 1m, {olo}, run_id: q2, to: completed}}
            - {{at: 2m, {olo}, run_id: q3, to: failed}}
            - {{at: 3m, {olo}, run_id: q4, to: completed}}
            - {{at: 4m, {olo}, run_id: q5, to: failed}}
            - {{at: 5m, {olo}, run_id: q6, to: completed}}
          until: 1h
          expect:
            - {{at: 0, channel: chat, rule: flaky, resolved: false}}
            - {{at: 1m, channel: chat, rule: flaky, resolved: true}}
            - {{at: 2m, channel: chat, rule: flaky, resolved: false}}
            - at: 3m
              channel: chat
              rule: flaky
              labels: {{flapping: "true"}}
              title: {{regex: '^\\[flapping\\] '}}
            - {{at: 15m, channel: chat, rule: flaky, resolved: true, labels: {{flapping: ended}}}}
        """,
        rules,
    )
    assert code == 0, out
    code, out = run(
        tmp_path,
        f"""
        - name: the digest's count is compared
          timeline:
            - {{at: 0, monitor_id: m1, run_id: r1, {fail}}}
            - {{at: 30s, monitor_id: m2, run_id: r2, {fail}}}
          expect:
            - {{at: 1m, channel: mail, rule: digest, alerts: 3}}
        """,
        rules,
    )
    assert code == 1
    assert "    alerts: expected 3 listed, sent 2" in out.splitlines(), out


def test_a_case_that_never_stops_sending_is_cut_off(tmp_path: Path) -> None:
    rules = "rules:\n  - {name: r, notify: ops, repeat_interval: 1s}\n"
    code, out = run(
        tmp_path,
        """
        - name: a repeat every second for a day
          timeline:
            - {at: 0, provider: exa, monitor_id: m1, run_id: r1, kind: run.status, to: failed}
          until: 1d
          expect: []
        """,
        rules,
    )
    assert code == 1
    assert f"  stopped: more than {MAX_NOTIFICATIONS} notifications" in out.splitlines()


def test_a_failing_template_shows_as_the_daemon_would_send_it(tmp_path: Path) -> None:
    rules = "rules:\n  - {name: r, notify: ops, body: \"{{ 'x' * run.n }}\"}\n"
    code, out = run(
        tmp_path,
        r"""
        - name: the default text and a note, not a crash
          timeline:
            - at: 0
              provider: exa
              monitor_id: m1
              run_id: r1
              kind: run.status
              to: failed
              run: {n: 1000000000}
          expect:
            - at: 0
              channel: ops
              rule: r
              body:
                regex: "^to: failed\n[(]template error in rule r: body: TemplateLimitError: .* 1000000000 "
        """,
        rules,
    )
    assert code == 0, out


@pytest.mark.parametrize(
    ("cases", "problems"),
    [
        (
            """
            - name: a
              timeline:
                - {at: -1, provider: exa, monitor_id: m, run_id: r, kind: run.status, to: faild}
                - {at: 5x, provider: exa2, monitor_id: m, run_id: r, kind: run.event}
                - {at: 0, provider: exa, monitor_id: m, run_id: r, kind: run.status, to: failed, event: e}
              expect:
                - {at: 0, channel: ops, rule: exa-faild, severity: loud, title: {regex: "("}, colour: red}
            - name: a
              timeline: []
              expect: []
            """,
            [
                "cases.yaml:3: [0].timeline[0].at: -1: a time must be 0 or more seconds",
                "cases.yaml:3: [0].timeline[0].to: 'faild' is not a run or monitor status"
                " (created, running, completed, failed, canceled, enabled, disabled, provisioning, active,"
                " paused, deleted)",
                "cases.yaml:4: [0].timeline[1].at: '5x' is not a duration (use e.g. 500ms, 30s, 5m, 1h)",
                "cases.yaml:4: [0].timeline[1].provider: 'exa2' is not a provider (exa, olostep)",
                "cases.yaml:5: [0].timeline[2]: 'event' belongs to run.event changes",
                "cases.yaml:7: [0].expect[0].severity: 'loud' is not a severity (critical, warning, info)",
                "cases.yaml:7: [0].expect[0].title: invalid regex '(': missing ), unterminated subpattern",
                "cases.yaml:7: [0].expect[0].colour: unknown key",
                "cases.yaml:9: [1].timeline: a case needs at least one change in its timeline",
            ],
        ),
        (
            f"""
            - name: a
              timeline: [{FAILED}]
              expect:
                - {{at: 0, channel: ops, rule: exa-faild}}
            - name: a
              timeline: [{FAILED}]
              expect: []
            """,
            [
                "cases.yaml:4: [0].expect[0].rule: 'exa-faild' is not a rule in the rule files"
                " (did you mean 'exa-failed'?)",
                "cases.yaml:5: [1].name: duplicate case name 'a' (first at line 1)",
            ],
        ),
        ("name: not a list\n", ["cases.yaml:1: expected a list of cases (each: name, timeline, expect)"]),
        ("- [\n", ["cases.yaml:2: invalid YAML: expected the node content, but found '<stream end>'"]),
        (
            "- name: a\n  expect: []\n  timeline:\n"
            "    - {at: 0, provider: olostep, monitor_id: m, kind: run.event, event: e}\n",
            ["cases.yaml:4: [0].timeline[0]: a run.event change needs run_id"],
        ),
    ],
    ids=["fields", "rules-and-names", "not-a-list", "yaml", "run-id"],
)
def test_case_file_problems_name_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: str, problems: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    write(tmp_path, "rules.yaml", RULES)
    write(tmp_path, "cases.yaml", cases)
    code = run_test_rules([Path("rules.yaml")], [Path("cases.yaml")], out=out)
    assert code == 1
    assert out.getvalue().splitlines() == problems


def test_rule_file_problems_are_reported_like_check_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "rules.yaml", "rules:\n  - {name: a, notify: ops, match: {to: faild}}\n")
    write(tmp_path, "cases.yaml", "[]\n")
    out = io.StringIO()
    code = run_test_rules([Path("rules.yaml"), Path("missing.yaml")], [Path("cases.yaml")], out=out)
    assert code == 1
    assert out.getvalue().splitlines() == [
        "rules.yaml:2: rules[0].match.to: 'faild' is not a run or monitor status",
        "missing.yaml: file not found",
    ]


def test_usage_errors_exit_2() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "runwatch", "test-rules", "rules.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "--cases" in out.stderr
