"""Config: strict keys, env overrides, credentials, errors with file and line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from runwatch.config import load_config
from runwatch.redact import redact
from runwatch.yamlfile import FileProblems


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "runwatch.yaml"
    p.write_text(text)
    return p


def test_defaults_and_durations(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "providers:\n  exa:\n    api_key: k\n    poll_interval: 5m\n"))
    s = cfg.settings
    assert s.providers.exa.poll_interval == 300
    assert s.providers.exa.base_url == "https://api.exa.ai/websets"
    assert cfg.state_dir == tmp_path / "runwatch-state"
    assert list(cfg.enabled_providers()) == ["exa"]


def test_unknown_key_and_bad_duration_name_file_line_field(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "providers:\n  exa:\n    api_key: k\n    poll_intervall: 5m\n  olostep:\n    poll_interval: soon\n",
    )
    with pytest.raises(FileProblems) as exc:
        load_config(p)
    lines = sorted(str(x) for x in exc.value.problems)
    assert lines == [
        f"{p}:4: providers.exa.poll_intervall: unknown key",
        f"{p}:6: providers.olostep.poll_interval: 'soon' is not a duration (use e.g. 500ms, 30s, 5m, 1h)",
    ]


def test_broken_yaml_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "providers:\n  exa: [\n")
    with pytest.raises(FileProblems) as exc:
        load_config(p)
    assert str(exc.value.problems[0]).startswith(f"{p}:3: invalid YAML")


def test_env_overrides_file_and_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "providers:\n  exa:\n    poll_interval: 5m\n")
    monkeypatch.setenv("RUNWATCH_PROVIDERS__EXA__POLL_INTERVAL", "10s")
    monkeypatch.setenv("EXA_API_KEY", "from-env")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "olostep_api_key").write_text("from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = load_config(p)
    exa = cfg.settings.providers.exa
    assert exa.poll_interval == 10
    assert exa.api_key is not None and exa.api_key.get_secret_value() == "from-env"
    olo = cfg.settings.providers.olostep.api_key
    assert olo is not None and olo.get_secret_value() == "from-credentials"
    assert "from-env" not in repr(cfg.settings)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileProblems) as exc:
        load_config(tmp_path / "nope.yaml")
    assert str(exc.value) == f"{tmp_path / 'nope.yaml'}: file not found"


def test_the_state_is_sqlite_in_state_dir_unless_a_postgresql_url_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = load_config(write(tmp_path, "state_dir: here\n"))
    assert plain.state_url is None and plain.state_password is None
    assert plain.settings.instance == socket.gethostname()
    assert (plain.settings.state.lease, plain.settings.delivery.claim_timeout) == (15.0, 60.0)
    cfg = load_config(
        write(
            tmp_path,
            "instance: runwatch-a\nstate: {url: 'postgresql://rw:S3cr3t-pw@db:5432/rw', lease: 9s}\n",
        )
    )
    assert (cfg.settings.instance, cfg.state_url, cfg.settings.state.lease) == (
        "runwatch-a", "postgresql://rw:S3cr3t-pw@db:5432/rw", 9.0,
    )  # fmt: skip
    assert "S3cr3t-pw" not in redact(f"connecting to {cfg.state_url} with S3cr3t-pw")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "state_url").write_text("postgresql://rw@db.internal/rw\n")
    (creds / "state_password").write_text("cr3d-Pa55word\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    from_cred = load_config(write(tmp_path, "{}\n"))
    assert (from_cred.state_url, from_cred.state_password) == (
        "postgresql://rw@db.internal/rw",
        "cr3d-Pa55word",
    )
    assert "cr3d-Pa55word" not in redact("password cr3d-Pa55word")
    monkeypatch.setenv("RUNWATCH_STATE__URL", "postgres://env@db/rw")
    assert load_config(write(tmp_path, "{}\n")).state_url == "postgres://env@db/rw"  # env wins


def test_a_state_url_that_is_not_postgresql_and_a_bad_instance_name_file_line_field(tmp_path: Path) -> None:
    p = write(tmp_path, "instance: 'two words'\nstate:\n  url: mysql://db/x\n")
    with pytest.raises(FileProblems) as exc:
        load_config(p)
    lines = sorted(str(x) for x in exc.value.problems)
    assert lines[0].startswith(f"{p}:1: instance: ") and "letters, digits" in lines[0]
    assert lines[1].startswith(f"{p}:3: state.url: ") and "not a PostgreSQL URL" in lines[1]


def test_under_systemd_a_config_without_state_dir_keeps_the_units_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd passes ``StateDirectory=`` as ``$STATE_DIRECTORY``: a config written before the shipped
    one named ``state_dir: /var/lib/runwatch`` keeps its state where the service always kept it once
    the unit no longer sets ``RUNWATCH_STATE_DIR``. A state_dir the config or the environment gives wins."""
    monkeypatch.delenv("RUNWATCH_STATE_DIR", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib/runwatch") + ":" + str(tmp_path / "other"))
    assert load_config(write(tmp_path, "rule_files: []\n")).state_dir == tmp_path / "lib/runwatch"
    named = load_config(write(tmp_path, "state_dir: /srv/runwatch\n"))
    assert named.state_dir == Path("/srv/runwatch")
    monkeypatch.setenv("RUNWATCH_STATE_DIR", str(tmp_path / "env"))
    assert load_config(write(tmp_path, "rule_files: []\n")).state_dir == tmp_path / "env"
