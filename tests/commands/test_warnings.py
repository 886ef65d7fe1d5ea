"""``check`` says when nothing would ever alert: ``warning:`` lines on stderr, exit status unchanged.

No provider key, a key copied from the README (``...``), no rule: each loads fine and then alerts on
nothing. Errors stay errors (a rule naming an unknown channel cannot work); these are warnings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runwatch.commands.parser import main
from runwatch.commands.warnings import looks_like_placeholder

RULE = "rules:\n  - {name: a, match: {provider: exa}, notify: [ops]}\n"
CHANNELS = "channels:\n  ops: {apprise: 'json://127.0.0.1:9/x'}\n"
REAL_KEY = "exa_live_9c1f0b7d2e4a4b8f"


@pytest.fixture(autouse=True)
def _no_keys_around(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EXA_API_KEY", "OLOSTEP_API_KEY", "CREDENTIALS_DIRECTORY", "RUNWATCH_RULE_FILES"):
        monkeypatch.delenv(var, raising=False)


def setup(tmp_path: Path, config: str, rules: str | None = RULE) -> Path:
    if rules is not None:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "a.yaml").write_text(rules)
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text("state_dir: state\n" + CHANNELS + config)
    return cfg


def check(cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], list[str]]:
    code = main(["check", "--config", str(cfg)])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


def test_a_config_that_would_alert_has_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(setup(tmp_path, f"providers:\n  exa: {{api_key: {REAL_KEY}}}\n"), capsys)
    assert (code, err) == (0, [])
    assert out == [
        f"OK: {tmp_path / 'runwatch.yaml'}: 1 rules in 1 files, 1 channels, providers enabled: exa"
    ]


def test_no_provider_key_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, "")
    code, out, err = check(cfg, capsys)
    assert code == 0
    assert len(out) == 1 and out[0].startswith("OK: ")
    assert err == [
        f"warning: {cfg}: providers: no provider has an API key, so nothing will be polled; give one to exa"
        " (providers.exa.api_key, $EXA_API_KEY or the credential exa_api_key) or olostep"
        " (providers.olostep.api_key, $OLOSTEP_API_KEY or the credential olostep_api_key)"
    ]


@pytest.mark.parametrize("key", ["...", "<key>", "YOUR_EXA_API_KEY", "changeme", "${EXA_API_KEY}"])
def test_a_placeholder_key_in_the_file_names_its_line_not_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    cfg = setup(tmp_path, f"providers:\n  exa:\n    poll_interval: 5m\n    api_key: '{key}'\n")
    code, out, err = check(cfg, capsys)
    assert code == 0 and len(out) == 1
    assert err == [
        f"warning: {cfg}:7: providers.exa.api_key: the key looks like a placeholder, not an API key; exa will"
        " refuse it (401) and nothing is polled there"
    ]
    assert key not in err[0].split(": ", 1)[1]


def test_a_placeholder_key_from_the_environment_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLOSTEP_API_KEY", "<your-olostep-api-key>")
    monkeypatch.setenv("EXA_API_KEY", REAL_KEY)
    cfg = setup(tmp_path, "")
    _, _, err = check(cfg, capsys)
    assert err == [
        f"warning: {cfg}: providers.olostep.api_key: the key from $OLOSTEP_API_KEY looks like a placeholder,"
        " not an API key; olostep will refuse it (401) and nothing is polled there"
    ]


def test_no_rule_on_purpose_still_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, f"rule_files: []\nproviders:\n  exa: {{api_key: {REAL_KEY}}}\n", rules=None)
    code, out, err = check(cfg, capsys)
    assert code == 0 and len(out) == 1
    assert err == [
        f"warning: {cfg}:4: rule_files: rule_files is empty: no rule is loaded,"
        " so no change will ever be notified"
    ]


def test_rule_files_without_a_rule_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, f"providers:\n  exa: {{api_key: {REAL_KEY}}}\n", rules="# nothing yet\n")
    code, _, err = check(cfg, capsys)
    assert code == 0
    assert err == [
        f"warning: {cfg}: rule_files: no rule in the 1 rule file, so no change will ever be notified"
    ]


def test_a_rule_whose_channels_are_unknown_stays_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = "rules:\n  - {name: a, notify: [pager, sms]}\n"
    code, out, _ = check(setup(tmp_path, f"providers:\n  exa: {{api_key: {REAL_KEY}}}\n", rules), capsys)
    assert code == 1
    assert out == [
        "rules/a.yaml:2: rules[0].notify[0]: 'pager' is not a configured channel (configured: ops)",
        "rules/a.yaml:2: rules[0].notify[1]: 'sms' is not a configured channel (configured: ops)",
    ]


@pytest.mark.parametrize(
    "key",
    [
        "...",
        "…",
        "<key>",
        "<your-api-key>",
        "YOUR_API_KEY",
        "your-exa-api-key",
        "YOUR_EXA_API_KEY_HERE",
        "changeme",
        "CHANGE_ME",
        "${EXA_API_KEY}",
        "$EXA_API_KEY",
        "{{ exa_api_key }}",
        "xxxxxxxx",
        "****",
        " placeholder ",
    ],
)
def test_placeholders(key: str) -> None:
    assert looks_like_placeholder(key, "exa")


@pytest.mark.parametrize(
    "key", [REAL_KEY, "sk-exa-secret-key-42", "k", "key", "test-key", "abc123", "x", "my-exa-key-2024", "..a"]
)
def test_keys_that_are_not_placeholders(key: str) -> None:
    assert not looks_like_placeholder(key, "exa")


def test_push_half_set_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listener = setup(tmp_path, f"ingest_listen: 127.0.0.1:9465\nproviders:\n  exa: {{api_key: {REAL_KEY}}}\n")
    code, _, err = check(listener, capsys)
    assert code == 0
    assert err == [
        f"warning: {listener}:4: ingest_listen: no provider that is polled has a push secret, so every"
        " push is 404; give providers.exa.webhook_secret ($EXA_WEBHOOK_SECRET or the credential"
        " exa_webhook_secret) or providers.olostep.webhook_token ($OLOSTEP_WEBHOOK_TOKEN or the credential"
        " olostep_webhook_token)"
    ]
    secret = tmp_path / "s"
    secret.mkdir()
    no_listener = setup(
        secret, f"providers:\n  exa: {{api_key: {REAL_KEY}, webhook_secret: whsec_abcdef123}}\n"
    )
    code, _, err = check(no_listener, capsys)
    assert code == 0
    assert err == [
        f"warning: {no_listener}:5: providers.exa.webhook_secret: is set but ingest_listen is not: nothing"
        " listens for pushes (the runs are still polled)"
    ]
    both = secret / "both"
    both.mkdir()
    whole = setup(
        both,
        f"ingest_listen: 127.0.0.1:9465\nproviders:\n  exa: {{api_key: {REAL_KEY}, webhook_secret: x123}}\n",
    )
    assert check(whole, capsys)[2] == []
