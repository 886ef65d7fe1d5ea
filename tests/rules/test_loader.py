"""runwatch.rules.loader: rule files in, a RuleSet or every problem (``file:line: field: message``) out."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from runwatch.model import Change, ChangeKind
from runwatch.rules import FileProblems, RuleSet, load_rules

REPO = Path(__file__).resolve().parents[2]
CHANNELS = ("ops-slack", "ops-mail")


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(files: list[Path], root: Path, channels: tuple[str, ...] | None = CHANNELS) -> list[str]:
    with pytest.raises(FileProblems) as info:
        load_rules(files, channels=channels, display_root=root)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def load(tmp_path: Path, text: str) -> RuleSet:
    return load_rules([write(tmp_path, "r.yaml", text)], channels=CHANNELS, display_root=tmp_path)


# --- valid files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "rules: []\n", "rules:\n", "rules:\n  # - name: later\n"],
    ids=["empty", "comment", "empty-list", "null", "commented-out"],
)
def test_files_without_rules_are_valid(tmp_path: Path, text: str) -> None:
    rs = load(tmp_path, text)
    assert len(rs) == 0
    assert rs.rules == ()


def test_contract_example_loads(tmp_path: Path) -> None:
    rs = load(
        tmp_path,
        """
        rules:
          - name: exa-run-failed
            match:
              provider: exa                 # exa | olostep | list; absent = any
              monitor: ["monitor_prod_*"]   # glob(s) on the monitor id; absent = any
              kind: run.status              # run.status | run.event (more kinds may follow)
              from: [created, running]      # previous status; absent = any
              to: failed                    # new status; absent = any
              failed_reason: "(?i)quota|timeout"   # regex (re.search) on Exa's failedReason
            severity: critical              # critical | warning | info
            notify: [ops-slack, ops-mail]
            title: "{{ provider }} monitor {{ monitor_id }}: run {{ run_id }} {{ to }}"
            body: "{{ failed_reason }}"
          - name: olostep-run-complete
            match: {provider: olostep, kind: run.event, event: run_complete}
            notify: [ops-slack]
        """,
    )
    first, second = rs.rules
    assert (first.name, first.severity, first.channels, first.stop) == (
        "exa-run-failed",
        "critical",
        ("ops-slack", "ops-mail"),
        False,
    )
    assert (first.source, second.source) == ("r.yaml:2", "r.yaml:14")
    assert (second.severity, second.channels, second.title, second.body) == (
        "warning",
        ("ops-slack",),
        None,
        None,
    )
    change = Change(
        key="k",
        kind=ChangeKind.RUN_STATUS,
        provider="exa",
        monitor_id="monitor_prod_news",
        run_id="mrun_1",
        run={},
        from_status="running",
        to_status="failed",
        failed_reason="Timeout while crawling",
    )
    [decision] = rs.match(change)
    assert (decision.title, decision.body) == (
        "exa monitor monitor_prod_news: run mrun_1 failed",
        "Timeout while crawling",
    )


def test_single_values_are_lists_of_one(tmp_path: Path) -> None:
    single = load(tmp_path, "rules: [{name: a, notify: ops-mail, match: {provider: exa, to: failed}}]\n")
    [rule] = single.rules
    assert rule.channels == ("ops-mail",)
    assert rule.matcher.providers == frozenset({"exa"})
    assert rule.matcher.to_statuses == frozenset({"failed"})


def test_files_then_rules_in_order(tmp_path: Path) -> None:
    b = write(tmp_path, "b.yaml", "rules: [{name: b1, notify: ops-slack}, {name: b2, notify: ops-slack}]\n")
    a = write(tmp_path, "a.yaml", "rules: [{name: a1, notify: ops-slack}]\n")
    rs = load_rules([b, a], channels=CHANNELS)
    assert [r.name for r in rs.rules] == ["b1", "b2", "a1"]
    assert rs.files == (b, a)


def test_channels_are_not_checked_when_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "rules: [{name: a, notify: [anything]}]\n")
    assert load_rules([path]).rules[0].channels == ("anything",)


def test_merge_keys_work(tmp_path: Path) -> None:
    rs = load(
        tmp_path,
        """
        rules:
          - name: a
            match: &prod {provider: exa, monitor: "monitor_prod_*"}
            notify: ops-mail
          - name: b
            match:
              <<: *prod
              to: canceled
            notify: ops-slack
        """,
    )
    assert rs.rules[1].matcher.providers == frozenset({"exa"})
    assert rs.rules[1].matcher.to_statuses == frozenset({"canceled"})


def test_repo_example_file_loads() -> None:
    rs = load_rules([REPO / "rules" / "example.yaml"], channels=CHANNELS, display_root=REPO)
    assert len(rs) >= 5
    assert {r.severity for r in rs.rules} == {"critical", "warning", "info"}
    assert rs.rules[0].source == "rules/example.yaml:9"


def _readme_rule_files() -> list[str]:
    text = (REPO / "rules" / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL):
        if block.startswith("rules:"):
            out.append(block)
        elif block.startswith("  - name:"):
            out.append("rules:\n" + block)
    return out


@pytest.mark.parametrize("text", _readme_rule_files())
def test_readme_examples_load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    assert len(load_rules([path], channels=CHANNELS)) >= 1


def test_readme_has_rule_examples() -> None:
    assert len(_readme_rule_files()) >= 5


# --- problems, one class at a time (exact text) ------------------------------------------------------

CASES: list[tuple[str, str, list[str]]] = [
    (
        "yaml-syntax",
        """
        rules:
          - name: a
            notify: [ops-slack
        """,
        ["r.yaml:4: invalid YAML: expected ',' or ']', but got '<stream end>'"],
    ),
    (
        "yaml-duplicate-key",
        """
        rules:
          - name: a
            name: b
        """,
        ['r.yaml:3: invalid YAML: found duplicate key "name" with value "b" (original value: "a")'],
    ),
    ("top-level-list", "- name: a\n", ["r.yaml:1: expected a mapping with a 'rules' list at the top level"]),
    ("top-level-scalar", "hello\n", ["r.yaml:1: expected a mapping with a 'rules' list at the top level"]),
    (
        "top-level-keys",
        "version: 1\nrule: []\n",
        [
            "r.yaml:1: version: unknown key",
            "r.yaml:1: rules: required key is missing",
            "r.yaml:2: rule: unknown key (did you mean 'rules'?)",
        ],
    ),
    ("rules-not-a-list", "rules: {name: a}\n", ["r.yaml:1: rules: expected a list of rules"]),
    (
        "structure",
        """
        rules:
          - just a string
          - name: 5
            match: [to, failed]
            notify: ops-slack
            stop: "yes"
            labels: {team: 1}
            colour: red
            to: failed
            sevrity: info
          - match: {provider: exa, colour: red, failed_reasons: x}
        """,
        [
            "r.yaml:2: rules[0]: expected a mapping (key: value), got a string",
            "r.yaml:3: rules[1].name: Input should be a valid string",
            "r.yaml:4: rules[1].match: expected a mapping (key: value), got a list",
            "r.yaml:6: rules[1].stop: Input should be a valid boolean",
            "r.yaml:7: rules[1].labels.team: Input should be a valid string",
            "r.yaml:8: rules[1].colour: unknown key",
            "r.yaml:9: rules[1].to: unknown key (put it under rules[1].match)",
            "r.yaml:10: rules[1].sevrity: unknown key (did you mean 'severity'?)",
            "r.yaml:11: rules[2].name: required key is missing",
            "r.yaml:11: rules[2].match.colour: unknown key",
            "r.yaml:11: rules[2].match.failed_reasons: unknown key (did you mean 'failed_reason'?)",
            "r.yaml:11: rules[2].notify: required key is missing",
        ],
    ),
    (
        "statuses",
        """
        rules:
          - name: a
            notify: ops-slack
            match:
              from: [created, runing]
              to: faild
          - name: b
            notify: ops-slack
            match: {from: 5, to: [failed, Failed]}
        """,
        [
            "r.yaml:5: rules[0].match.from[1]: 'runing' is not a run or monitor status",
            "r.yaml:6: rules[0].match.to: 'faild' is not a run or monitor status",
            "r.yaml:9: rules[1].match.from: expected a run or monitor status or a list of them, got a number",
            "r.yaml:9: rules[1].match.to[1]: 'Failed' is not a run or monitor status",
        ],
    ),
    (
        "provider-kind-severity",
        """
        rules:
          - name: a
            notify: ops-slack
            severity: urgent
            match:
              provider: [exa, exas]
              kind: run.state
        """,
        [
            "r.yaml:4: rules[0].severity: 'urgent' is not a severity",
            "r.yaml:6: rules[0].match.provider[1]: 'exas' is not a provider",
            "r.yaml:7: rules[0].match.kind: 'run.state' is not a change kind",
        ],
    ),
    (
        "empty-and-null-matchers",
        """
        rules:
          - name: a
            notify: ops-slack
            match:
              monitor: []
              to:
              failed_reason:
              event: ""
        """,
        [
            "r.yaml:5: rules[0].match.monitor: empty list: give at least one value, or remove the key",
            "r.yaml:6: rules[0].match.to: no value given (give one, or remove the key to match anything)",
            "r.yaml:7: rules[0].match.failed_reason: "
            "no value given (give one, or remove the key to match anything)",
            "r.yaml:8: rules[0].match.event: empty glob (use '*' to match anything, or remove the key)",
        ],
    ),
    (
        "regexes",
        """
        rules:
          - name: a
            notify: ops-slack
            match:
              failed_reason: "(?i)quota|("
              message: "*error"
              fields:
                metadata.team: "[a-"
                status: "^ok$"
          - name: b
            notify: ops-slack
            match: {fields: {"metadata..team": x}}
        """,
        [
            "r.yaml:5: rules[0].match.failed_reason: invalid regex '(?i)quota|(': "
            "missing ), unterminated subpattern at position 10",
            "r.yaml:6: rules[0].match.message: invalid regex '*error': nothing to repeat at position 0",
            "r.yaml:8: rules[0].match.fields.metadata.team: invalid regex '[a-': "
            "unterminated character set at position 0",
            "r.yaml:12: rules[1].match.fields: 'metadata..team' is not a dotted path into the run "
            "(e.g. metadata.team)",
        ],
    ),
    (
        "templates",
        """
        rules:
          - name: a
            notify: ops-slack
            title: "{{ monitor_id }"
            body: |
              first line
              {{ x y }}
          - name: b
            notify: ops-slack
            title: "{{ monitr_id }} {{ to }}"
            body: "{{ nonsense }}"
        """,
        [
            "r.yaml:4: rules[0].title: template syntax error: unexpected '}'",
            "r.yaml:5: rules[0].body: template syntax error: expected token 'end of print statement', "
            "got 'y' (template line 2)",
            "r.yaml:10: rules[1].title: unknown template variable 'monitr_id' (did you mean 'monitor_id'?)",
            "r.yaml:11: rules[1].body: unknown template variable 'nonsense' (known: alerts, due_at, event, "
            "event_data, failed_reason, flapping, from, kind, labels, message, monitor, monitor_id, "
            "provider, resolved, rule, run, run_id, severity, to)",
        ],
    ),
    (
        "notify",
        """
        rules:
          - name: a
            notify: [ops-slack, ops-slak, 5]
          - name: b
            notify: pager
          - name: c
            notify: []
          - name: d
            notify:
        """,
        [
            "r.yaml:3: rules[0].notify[1]: 'ops-slak' is not a configured channel "
            "(configured: ops-mail, ops-slack)",
            "r.yaml:3: rules[0].notify[2]: Input should be a valid string",
            "r.yaml:5: rules[1].notify: 'pager' is not a configured channel "
            "(configured: ops-mail, ops-slack)",
            "r.yaml:7: rules[2].notify: empty list: give at least one value",
            "r.yaml:9: rules[3].notify: no value given",
        ],
    ),
    (
        "names",
        """
        rules:
          - name: a
            notify: ops-slack
          - name: ""
            notify: ops-slack
          - name: " b"
            notify: ops-slack
          - name: a
            notify: ops-slack
            severity: loud
        """,
        [
            "r.yaml:4: rules[1].name: rule name must not be empty",
            "r.yaml:6: rules[2].name: rule name ' b' has leading or trailing spaces",
            "r.yaml:8: rules[3].name: duplicate rule name 'a' (first defined at r.yaml:2)",
            "r.yaml:10: rules[3].severity: 'loud' is not a severity",
        ],
    ),
    (
        "merged-key-problem",
        """
        rules:
          - name: a
            match: &m {to: failed}
            notify: ops-slack
          - name: b
            match:
              <<: *m
              provider: exa
            notify: nope
        """,
        ["r.yaml:9: rules[1].notify: 'nope' is not a configured channel (configured: ops-mail, ops-slack)"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in CASES], ids=[c[0] for c in CASES])
def test_problem(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert problems([write(tmp_path, "r.yaml", text)], tmp_path) == expected


def test_problem_in_merged_value_points_at_the_merging_map(tmp_path: Path) -> None:
    text = """
    rules:
      - name: a
        match: &m {to: faild}
        notify: ops-slack
      - name: b
        match:
          <<: *m
          provider: exa
        notify: ops-slack
    """
    assert problems([write(tmp_path, "r.yaml", text)], tmp_path) == [
        "r.yaml:3: rules[0].match.to: 'faild' is not a run or monitor status",
        "r.yaml:6: rules[1].match.to: 'faild' is not a run or monitor status",
    ]


def test_every_problem_in_every_file_is_reported(tmp_path: Path) -> None:
    prod = write(
        tmp_path,
        "rules/prod.yaml",
        """
        rules:
          - name: exa-run-failed
            match: {provider: exa, to: failed}
            notify: [ops-slack]
          - name: olostep
            match:
              to: faild
            notify: ops-slack
        """,
    )
    broken = write(tmp_path, "rules/broken.yaml", "rules: [\n")
    team = write(
        tmp_path,
        "rules/team.yaml",
        """
        rules:
          - name: team-a
            notify: team-pager
          - name: exa-run-failed
            notify: ops-mail
            match: {failed_reason: "("}
        """,
    )
    missing = tmp_path / "rules" / "missing.yaml"
    assert problems([prod, broken, team, missing], tmp_path) == [
        "rules/prod.yaml:7: rules[1].match.to: 'faild' is not a run or monitor status",
        "rules/broken.yaml:2: invalid YAML: expected the node content, but found '<stream end>'",
        "rules/team.yaml:3: rules[0].notify: 'team-pager' is not a configured channel "
        "(configured: ops-mail, ops-slack)",
        "rules/team.yaml:4: rules[1].name: duplicate rule name 'exa-run-failed' "
        "(first defined at rules/prod.yaml:2)",
        "rules/team.yaml:6: rules[1].match.failed_reason: invalid regex '(': "
        "missing ), unterminated subpattern at position 0",
        "rules/missing.yaml: file not found",
    ]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "rules:\n  - {name: x, notify: ops-slack}\n")
    b = write(
        tmp_path,
        "b.yaml",
        "# team rules\nrules:\n  - {name: y, notify: ops-slack}\n  - {name: x, notify: ops-mail}\n",
    )
    assert problems([a, b], tmp_path) == [
        "b.yaml:4: rules[1].name: duplicate rule name 'x' (first defined at a.yaml:2)"
    ]


def test_same_file_twice_is_all_duplicates(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "rules:\n  - {name: x, notify: ops-slack}\n")
    assert problems([a, a], tmp_path) == [
        "a.yaml:2: rules[0].name: duplicate rule name 'x' (first defined at a.yaml:2)"
    ]


def test_paths_outside_display_root_are_shown_as_given(tmp_path: Path) -> None:
    path = write(tmp_path, "elsewhere/r.yaml", "rules: 5\n")
    assert problems([path], tmp_path / "root") == [f"{path}:1: rules: expected a list of rules"]


def test_relative_paths_are_shown_relative_to_a_relative_display_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "rules/r.yaml", "rules: 5\n")
    monkeypatch.chdir(tmp_path)
    assert problems([Path("rules/r.yaml")], Path(".")) == ["rules/r.yaml:1: rules: expected a list of rules"]
    assert problems([tmp_path / "rules/r.yaml"], Path(".")) == [
        "rules/r.yaml:1: rules: expected a list of rules"
    ]


def test_without_display_root_paths_are_shown_as_given(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "rules: 5\n")
    with pytest.raises(FileProblems) as info:
        load_rules([path])
    assert str(info.value) == f"{path}:1: rules: expected a list of rules"
