"""runwatch.rules.schema: the models, the committed JSON Schema, and the README's key tables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from runwatch.model import SEVERITIES
from runwatch.rules import rule_file_json_schema
from runwatch.rules.schema import FIELD_OPERATORS, STATUSES, MatchSpec, RuleSpec

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
REGENERATE = (
    "PYTHONPATH=daemon python -c 'import json, runwatch.rules as r; "
    "print(json.dumps(r.rule_file_json_schema(), indent=2))' > rules/schema.json"
)


def test_committed_schema_is_the_generated_one() -> None:
    committed = json.loads((RULES_DIR / "schema.json").read_text(encoding="utf-8"))
    assert committed == rule_file_json_schema(), f"rules/schema.json is stale; regenerate: {REGENERATE}"


def test_schema_shape() -> None:
    schema = rule_file_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["rules"]
    rule, match = schema["$defs"]["RuleSpec"], schema["$defs"]["MatchSpec"]
    assert rule["additionalProperties"] is False
    assert match["additionalProperties"] is False
    assert set(rule["required"]) == {"name", "notify"}
    assert "from" in match["properties"]
    assert match["properties"]["to"]["anyOf"][0] == {"enum": list(STATUSES)}
    assert rule["properties"]["severity"]["enum"] == list(SEVERITIES)
    assert '"default": null' not in json.dumps(schema)


def test_match_spec_normalises_single_values_to_tuples() -> None:
    spec = MatchSpec.model_validate({"provider": "exa", "monitor": ["a*", "b*"], "from": "created"})
    assert spec.provider == ("exa",)
    assert spec.monitor == ("a*", "b*")
    assert spec.from_ == ("created",)
    assert spec.to is None


def test_from_is_only_accepted_under_its_yaml_name() -> None:
    with pytest.raises(ValidationError) as info:
        MatchSpec.model_validate({"from_": "created"})
    assert [e["type"] for e in info.value.errors()] == ["extra_forbidden"]


def test_rule_spec_defaults() -> None:
    spec = RuleSpec.model_validate({"name": "a", "notify": "ops-slack"})
    assert (spec.severity, spec.stop, spec.labels, spec.title, spec.body) == (
        "warning",
        False,
        {},
        None,
        None,
    )
    assert spec.notify == ("ops-slack",)
    assert spec.match == MatchSpec.model_validate({})


def test_channels_are_checked_only_with_context() -> None:
    RuleSpec.model_validate({"name": "a", "notify": "x"})
    with pytest.raises(ValidationError, match="'x' is not a configured channel"):
        RuleSpec.model_validate({"name": "a", "notify": "x"}, context={"channels": frozenset({"y"})})
    with pytest.raises(ValidationError, match=re.escape("(configured: none)")):
        RuleSpec.model_validate({"name": "a", "notify": "x"}, context={"channels": frozenset()})


def _table_keys(section: str) -> set[str]:
    return set(re.findall(r"^\| `(\w+)`", section, flags=re.MULTILINE))


def _section(title: str) -> str:
    text = (RULES_DIR / "README.md").read_text(encoding="utf-8")
    # The key table comes before the section's subsections (whose tables are operators and kinds).
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


@pytest.mark.parametrize(("title", "model"), [("Rule keys", RuleSpec), ("Match keys", MatchSpec)])
def test_readme_documents_every_key(title: str, model: Any) -> None:
    keys = {f.alias or name for name, f in model.model_fields.items()}
    assert _table_keys(_section(title)) == keys


def test_readme_documents_every_fields_operator() -> None:
    text = (RULES_DIR / "README.md").read_text(encoding="utf-8")
    table = text.split("| operator  |", 1)[1].split("\n\n", 1)[0]
    first_columns = re.findall(r"^\| ([^|]+)\|", table, flags=re.MULTILINE)
    assert {op for col in first_columns for op in re.findall(r"`(\w+)`", col)} == set(FIELD_OPERATORS)
