"""Secrets from systemd credentials: files in ``$CREDENTIALS_DIRECTORY`` (what LoadCredentialEncrypted=
hands the service), so the config file itself holds none."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwatch.config import load_config
from runwatch.delivery import Channel, Delivered
from runwatch.service.assemble import build_channels
from runwatch.yamlfile import FileProblems
from tests.conftest import ReceiverServer, make_alert


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


async def send_one(channel: Channel) -> object:
    import anyio.to_thread

    try:
        return await anyio.to_thread.run_sync(channel.send, make_alert(1))
    finally:
        channel.close()


@pytest.mark.anyio
async def test_a_channel_without_a_kind_takes_its_apprise_url_from_the_credential(
    tmp_path: Path, creds: Path, receiver: ReceiverServer
) -> None:
    (creds / "ops_apprise_url").write_text(receiver.url("/ops") + "\n")
    cfg = load_config(config(tmp_path, "channels:\n  ops: {}\n  log:\n"))
    assert "/ops" not in repr(cfg.settings)
    with pytest.raises(FileProblems, match=r"channels\.log\.apprise: no channel kind given"):
        build_channels(cfg)
    (creds / "log_apprise_url").write_text("syslog://")
    channels = build_channels(cfg)
    assert (channels["ops"].kind, channels["log"].kind) == ("apprise", "apprise")
    assert isinstance(await send_one(channels["ops"]), Delivered)
    assert [m["title"] for m in receiver.receiver.on("/ops")] == ["t"]


@pytest.mark.anyio
async def test_the_file_wins_over_the_credential(
    tmp_path: Path, creds: Path, receiver: ReceiverServer
) -> None:
    (creds / "ops_apprise_url").write_text("json://127.0.0.1:9/from-credential")
    cfg = load_config(config(tmp_path, f"channels:\n  ops: {{apprise: '{receiver.url('/file')}'}}\n"))
    assert isinstance(await send_one(build_channels(cfg)["ops"]), Delivered)
    assert len(receiver.receiver.on("/file")) == 1


def test_a_webhook_secret_from_the_credential(tmp_path: Path, creds: Path) -> None:
    body = "channels:\n  hook:\n    webhook: {url: 'https://example.com/hook'}\n"
    cfg = load_config(config(tmp_path, body))
    with pytest.raises(FileProblems, match="hook_webhook_secret"):
        build_channels(cfg)
    (creds / "hook_webhook_secret").write_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
    assert build_channels(load_config(config(tmp_path, body)))["hook"].kind == "webhook"
    (creds / "hook_webhook_secret").write_text("not-a-real-secret")
    with pytest.raises(FileProblems, match=r"channels\.hook\.webhook\.secret: is not a Standard Webhooks"):
        build_channels(load_config(config(tmp_path, body)))


def test_an_empty_credential_counts_as_absent(tmp_path: Path, creds: Path) -> None:
    (creds / "exa_api_key").write_text("\n")
    (creds / "olostep_api_key").write_text("olostep-key\n")
    cfg = load_config(config(tmp_path, ""))
    assert sorted(cfg.enabled_providers()) == ["olostep"]
    assert cfg.settings.providers.olostep.api_key is not None
    assert cfg.settings.providers.olostep.api_key.get_secret_value() == "olostep-key"
