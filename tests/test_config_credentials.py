"""Secrets from systemd credentials: files in ``$CREDENTIALS_DIRECTORY`` (what LoadCredentialEncrypted=
hands the service), so the config file itself holds none."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwatch.config import load_config


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "runwatch.yaml"
    path.write_text(body)
    return path


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "credentials"
    d.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(d))
    for var in ("EXA_API_KEY", "OLOSTEP_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return d


def test_a_channel_without_apprise_takes_its_url_from_the_credential(tmp_path: Path, creds: Path) -> None:
    (creds / "ops_apprise_url").write_text("json://127.0.0.1:9/ops\n")
    cfg = load_config(config(tmp_path, "channels:\n  ops: {}\n  log: {apprise: 'syslog://'}\n"))
    assert cfg.settings.channels["ops"].apprise.get_secret_value() == "json://127.0.0.1:9/ops"
    assert cfg.settings.channels["log"].apprise.get_secret_value() == "syslog://"
    assert "127.0.0.1:9/ops" not in repr(cfg.settings)


def test_the_file_wins_over_the_credential(tmp_path: Path, creds: Path) -> None:
    (creds / "ops_apprise_url").write_text("json://127.0.0.1:9/from-credential")
    cfg = load_config(config(tmp_path, "channels:\n  ops: {apprise: 'syslog://'}\n"))
    assert cfg.settings.channels["ops"].apprise.get_secret_value() == "syslog://"


def test_an_empty_credential_counts_as_absent(tmp_path: Path, creds: Path) -> None:
    (creds / "exa_api_key").write_text("\n")
    (creds / "olostep_api_key").write_text("olostep-key\n")
    cfg = load_config(config(tmp_path, ""))
    assert sorted(cfg.enabled_providers()) == ["olostep"]
    assert cfg.settings.providers.olostep.api_key is not None
    assert cfg.settings.providers.olostep.api_key.get_secret_value() == "olostep-key"
