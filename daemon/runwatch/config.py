"""The daemon's settings: one YAML file, overridable by ``RUNWATCH_...`` environment variables.

Loaded strictly (unknown keys are errors) and validated as a whole; ``runwatch check`` and the daemon
both call :func:`load_config`, so what ``check`` accepts is exactly what ``run`` will run.
Precedence, highest first: ``RUNWATCH_*`` env, the YAML file, then for API keys ``EXA_API_KEY`` /
``OLOSTEP_API_KEY`` and files in ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``), then defaults.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from runwatch import yamlfile
from runwatch.durations import Duration
from runwatch.httpserver import parse_listen
from runwatch.yamlfile import FileProblems, Problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(_Strict):
    base_url: str
    api_key: SecretStr | None = None
    poll_interval: Duration = 60.0
    #: Monitor ids to watch; empty means every monitor of the account.
    monitors: list[str] = Field(default_factory=list)
    #: How many requests to this provider may be in flight at once (also the connection pool size).
    concurrency: int = Field(default=8, ge=1, le=256)
    timeout: Duration = 30.0
    #: Retries of one request (5xx, 429, timeouts, broken JSON) within one poll, with backoff.
    retries: int = Field(default=3, ge=0, le=20)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")

    @field_validator("monitors", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class ExaSettings(ProviderSettings):
    base_url: str = "https://api.exa.ai/websets"


class OlostepSettings(ProviderSettings):
    base_url: str = "https://api.olostep.com"

    @field_validator("monitors")
    @classmethod
    def _prefixed(cls, v: list[str]) -> list[str]:
        for mid in v:
            if not mid.startswith("monitor_"):
                raise ValueError(f"{mid!r} is not an Olostep monitor id (they start with 'monitor_')")
        return v


class Providers(_Strict):
    exa: ExaSettings = Field(default_factory=ExaSettings)
    olostep: OlostepSettings = Field(default_factory=OlostepSettings)


class ChannelSettings(_Strict):
    #: An apprise URL (slack://..., mailto://..., json://...). Secret: it often carries a token.
    apprise: SecretStr

    @field_validator("apprise")
    @classmethod
    def _looks_like_url(cls, v: SecretStr) -> SecretStr:
        if "://" not in v.get_secret_value():
            raise ValueError("is not an apprise URL (expected scheme://...)")
        return v


class DeliverySettings(_Strict):
    #: Sends to one channel after which a notification is given up (kept in the state as dead).
    max_attempts: int = Field(default=8, ge=1)
    retry_initial: Duration = 2.0
    retry_max: Duration = 300.0
    #: Blocking apprise sends in flight at once, across all channels.
    concurrency: int = Field(default=4, ge=1, le=64)
    #: On SIGTERM, how long in-flight and due deliveries may still take before the daemon exits.
    shutdown_timeout: Duration = 10.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RUNWATCH_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    state_dir: Path = Path("runwatch-state")
    metrics_listen: str = "127.0.0.1:9464"
    rule_files: list[str] = Field(default_factory=lambda: ["rules/*.yaml"])
    providers: Providers = Field(default_factory=Providers)
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    #: On the very first start only runs that finished within this look-back are fetched in detail;
    #: everything already finished is recorded without alerting.
    first_start_lookback: Duration = 3600.0
    log_format: Literal["logfmt", "json"] = "logfmt"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("rule_files", mode="before")
    @classmethod
    def _globs(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file comes in as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


@dataclass(frozen=True, slots=True)
class Config:
    """Validated settings plus where they came from, so relative paths resolve against the file."""

    settings: Settings
    path: Path | None
    base_dir: Path

    @property
    def state_dir(self) -> Path:
        return self.base_dir / self.settings.state_dir

    def rule_paths(self) -> list[Path]:
        out: list[Path] = []
        for pattern in self.settings.rule_files:
            full = pattern if os.path.isabs(pattern) else str(self.base_dir / pattern)
            matched = sorted(glob.glob(full))
            out.extend(Path(m) for m in matched if Path(m).is_file())
            if not matched and not glob.has_magic(pattern):
                out.append(Path(full))  # a named file that is missing: the loader reports it
        return list(dict.fromkeys(out))

    def enabled_providers(self) -> dict[str, ProviderSettings]:
        p = self.settings.providers
        all_: dict[str, ProviderSettings] = {"exa": p.exa, "olostep": p.olostep}
        return {name: s for name, s in all_.items() if s.api_key is not None}


def _credential(name: str, env: str | None) -> SecretStr | None:
    """``$env``, else the file ``name`` in ``$CREDENTIALS_DIRECTORY``; an empty value counts as absent."""
    if env and (value := os.environ.get(env, "").strip()):
        return SecretStr(value)
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        f = Path(cred_dir) / name
        if f.is_file() and (text := f.read_text(encoding="utf-8").strip()):
            return SecretStr(text)
    return None


def _channel_urls_from_credentials(data: dict[str, Any]) -> None:
    """A channel without ``apprise:`` takes its URL from the credential ``<channel>_apprise_url``.

    So the config file holds no token and can be world-readable (systemd's ``DynamicUser=``).
    """
    channels = data.get("channels")
    if not isinstance(channels, dict):
        return
    for name, block in list(channels.items()):
        block = {} if block is None else block
        if isinstance(block, dict) and "apprise" not in block:
            url = _credential(f"{name}_apprise_url", None)
            if url is not None:
                channels[name] = {**block, "apprise": url.get_secret_value()}


def load_config(path: Path | None, *, overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge and validate; raise FileProblems naming file, line and field for every problem."""
    root: Any = {}
    shown = str(path) if path else "<defaults>"
    if path is not None:
        root = yamlfile.load(path, shown)
        if root is None:
            root = {}
        if not isinstance(root, dict):
            raise FileProblems([Problem(shown, 1, "", "the config file must be a mapping of keys")])
    data = yamlfile.plain(root)
    if overrides:
        data = _deep_merge(data, overrides)
    _channel_urls_from_credentials(data)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise FileProblems(yamlfile.problems_from_validation(exc, root, shown)) from None
    for name, settings_p, env in (
        ("exa", settings.providers.exa, "EXA_API_KEY"),
        ("olostep", settings.providers.olostep, "OLOSTEP_API_KEY"),
    ):
        if settings_p.api_key is not None and not settings_p.api_key.get_secret_value().strip():
            settings_p.api_key = None
        if settings_p.api_key is None:
            settings_p.api_key = _credential(f"{name}_api_key", env)
    base = path.resolve().parent if path else Path.cwd()
    return Config(settings=settings, path=path, base_dir=base)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
