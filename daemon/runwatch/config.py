"""The daemon's settings: one YAML file, overridable by ``RUNWATCH_...`` environment variables.

Loaded strictly (unknown keys are errors) and validated as a whole; ``runwatch check`` and the daemon
both call :func:`load_config`, so what ``check`` accepts is exactly what ``run`` will run.
Precedence, highest first: ``RUNWATCH_*`` env, the YAML file, then for API keys ``EXA_API_KEY`` /
``OLOSTEP_API_KEY`` and files in ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``), then defaults.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.networks import IPvAnyNetwork
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from runwatch import yamlfile
from runwatch.credentials import read_credential
from runwatch.delivery.policy import ChannelPolicy, Rate
from runwatch.delivery.registry import channel_fields
from runwatch.durations import Duration
from runwatch.httpserver import parse_listen
from runwatch.pipeline.silences import SilenceSpec
from runwatch.redact import register, register_url
from runwatch.sources.push import fill_push_secrets
from runwatch.sources.registry import PROVIDERS
from runwatch.sources.settings import ProviderSettings
from runwatch.yamlfile import FileProblems, Problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


if TYPE_CHECKING:

    class Providers(_Strict):
        """One block per registered provider (``providers.exa``, ``providers.olostep``, ...)."""

        def __getattr__(self, name: str) -> ProviderSettings: ...

else:
    #: One block per provider of :mod:`runwatch.sources.registry`, each with that provider's defaults.
    Providers = create_model(
        "Providers",
        __config__=ConfigDict(extra="forbid"),
        **{name: (spec.settings, Field(default_factory=spec.settings)) for name, spec in PROVIDERS.items()},
    )


class ChannelCommon(_Strict):
    """Delivery keys every channel kind takes beside its own block (defaults: the ``delivery:`` block)."""

    rate: Rate | None = None
    concurrency: int | None = Field(default=None, ge=1, le=64)
    max_attempts: int | None = Field(default=None, ge=1)
    retry_initial: Duration | None = None
    retry_max: Duration | None = None
    max_age: Duration | None = None


if TYPE_CHECKING:
    ChannelSettings = ChannelCommon
else:
    #: A channel block: the common keys plus each registered kind's own (``apprise:``, ``webhook:``).
    ChannelSettings = create_model("ChannelSettings", __base__=ChannelCommon, **channel_fields())


class DeliverySettings(_Strict):
    """Defaults for every channel, and the daemon-wide delivery keys."""

    #: Sends to one channel after which a notification is given up (kept in the state as dead).
    max_attempts: int = Field(default=8, ge=1)
    retry_initial: Duration = 2.0
    retry_max: Duration = 300.0
    #: Sends in flight per channel (each in a thread of its own).
    concurrency: int = Field(default=1, ge=1, le=64)
    #: Sends per period per channel (``2/s``, ``30/m``); none by default.
    rate: Rate | None = None
    #: A notification still pending this long after it was decided goes dead (``expired``).
    max_age: Duration = 86400.0
    #: Where a channel says 429 without a Retry-After we can see (apprise), wait at least this long.
    retry_after_default: Duration = 10.0
    #: A sender's claim on the rows it is about to send runs out after this unless renewed: the rows a
    #: sender that died had claimed go back to pending then (sent by another instance, or after a restart).
    claim_timeout: Duration = 60.0
    #: Sent and dead notifications older than this are deleted from the state.
    keep: Duration = 30 * 86400.0
    #: On SIGTERM, how long in-flight and due deliveries may still take before the daemon exits.
    shutdown_timeout: Duration = 10.0

    def policy(self, channel: ChannelCommon) -> ChannelPolicy:
        """The effective settings of one channel: its own keys, else these defaults."""
        return ChannelPolicy(
            max_attempts=channel.max_attempts or self.max_attempts,
            retry_initial=channel.retry_initial or self.retry_initial,
            retry_max=channel.retry_max or self.retry_max,
            max_age=channel.max_age or self.max_age,
            concurrency=channel.concurrency or self.concurrency,
            rate=channel.rate or self.rate,
            retry_after_default=self.retry_after_default,
            claim_timeout=self.claim_timeout,
        )


class StateSettings(_Strict):
    """Where the state is (SQLite in ``state_dir`` unless ``url`` names a PostgreSQL database), and
    how long finished runs are kept."""

    #: ``postgresql://user@host:port/database``: the state in PostgreSQL, shared by several instances.
    #: Absent: SQLite in ``state_dir``. Also ``RUNWATCH_STATE__URL`` or the credential ``state_url``.
    url: SecretStr | None = None
    #: How long a poller's leadership lasts without renewal (several instances on PostgreSQL).
    lease: Duration = 15.0
    #: Runs that finished longer ago than this are forgotten (with their events).
    keep_finished: Duration = 30 * 86400.0

    @field_validator("url")
    @classmethod
    def _postgres(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        text = v.get_secret_value().strip()
        register_url(text)
        if not re.match(r"(?i)^postgres(ql)?://", text):
            raise ValueError("not a PostgreSQL URL (postgresql://user@host:5432/database)")
        return SecretStr(text)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RUNWATCH_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    #: This instance's name in the state, logs and metrics (several instances on one PostgreSQL).
    instance: str = Field(default_factory=socket.gethostname, min_length=1, max_length=63)
    state_dir: Path = Path("runwatch-state")
    metrics_listen: str = "127.0.0.1:9464"
    #: Where the providers push (``/hooks/exa``, ``/hooks/olostep/<token>``); None: no push, poll only.
    ingest_listen: str | None = None
    #: Peers (IPs or networks) whose ``X-Forwarded-For`` names the client in push logs; none by default.
    ingest_trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    rule_files: list[str] = Field(default_factory=lambda: ["rules/*.yaml"])
    providers: Providers = Field(default_factory=Providers)
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    state: StateSettings = Field(default_factory=StateSettings)
    #: Notifications matching an active silence are not sent (counted instead); see silences.py.
    silences: list[SilenceSpec] = Field(default_factory=list)
    #: On the very first start only runs that finished within this look-back are fetched in detail;
    #: everything already finished is recorded without alerting.
    first_start_lookback: Duration = 3600.0
    log_format: Literal["logfmt", "json"] = "logfmt"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("instance")
    @classmethod
    def _instance(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]*", v):
            raise ValueError(f"{v!r}: use letters, digits, '.', '_', ':' or '-' (e.g. runwatch-a)")
        return v

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("ingest_listen")
    @classmethod
    def _ingest_listen(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            ingest, metrics = parse_listen(v), info.data.get("metrics_listen")
            if metrics is not None and ingest == parse_listen(metrics) and ingest[1] != 0:
                raise ValueError("must differ from metrics_listen: pushes get a port of their own")
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
    #: The file as parsed (line-aware), so later checks can name the line of a key.
    root: Any = None

    @property
    def shown(self) -> str:
        return str(self.path) if self.path else "<config>"

    def line_of(self, *loc: str | int) -> int:
        return yamlfile.line_of(self.root, loc) if self.root is not None else 0

    @property
    def state_dir(self) -> Path:
        """``state_dir`` as the config (or ``$RUNWATCH_STATE_DIR``) gives it, relative to the file.

        A config that names none gets, under systemd, the unit's own ``StateDirectory=`` (systemd
        passes it as ``$STATE_DIRECTORY``; the first, if there are several): a config written before
        the shipped config named ``/var/lib/runwatch`` keeps its state where the service always kept it.
        """
        given = "state_dir" in self.settings.model_fields_set
        service_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if not given and service_dir:
            return Path(service_dir)
        return self.base_dir / self.settings.state_dir

    @property
    def state_url(self) -> str | None:
        """The PostgreSQL URL of the state (None: SQLite in :attr:`state_dir`)."""
        url = self.settings.state.url
        return url.get_secret_value() if url is not None else None

    @property
    def state_password(self) -> str | None:
        """The state database's password from the credential ``state_password``, for a URL without one
        (libpq's own ``PGPASSWORD``, ``PGPASSFILE`` and ``PGSERVICE`` apply as well)."""
        return read_credential("state_password") if self.state_url is not None else None

    def rule_paths(self, problems: list[Problem] | None = None) -> list[Path]:
        """The files ``rule_files`` names, in order, each once.

        A glob that matches no file is a problem naming the pattern: a typo there (``rules/*.yml``)
        would otherwise start the daemon with no rules, silently turning off all alerting.
        ``rule_files: []`` is how a user says "no rules". A file named without a glob that is missing
        stays in the list, for the loader to report ("file not found"). Problems are appended to
        ``problems`` when given, else raised as FileProblems.
        """
        out: list[Path] = []
        found: list[Problem] = []
        in_file = isinstance(self.root, dict) and "rule_files" in self.root
        from_env = next((k for k in os.environ if k.upper() == "RUNWATCH_RULE_FILES"), None)
        for i, pattern in enumerate(self.settings.rule_files):
            full = pattern if os.path.isabs(pattern) else str(self.base_dir / pattern)
            files = [Path(m) for m in sorted(glob.glob(full)) if Path(m).is_file()]
            out.extend(files)
            if files:
                continue
            if not glob.has_magic(pattern) and not Path(full).is_dir():
                out.append(Path(full))  # a named file that is missing: the loader reports it
                continue
            what = "is a directory" if Path(full).is_dir() else "matches no file"
            where = "" if os.path.isabs(pattern) else f" (relative to {self.base_dir})"
            if Path(full).is_dir():
                hint = f"; name its files, e.g. '{pattern.rstrip('/')}/*.yaml'"
            elif from_env is not None:
                hint = f"; it comes from ${from_env}"
            elif not in_file:
                hint = "; it is the default: name your rule files, or say rule_files: [] for none"
            else:
                hint = ""
            line = self.line_of("rule_files", i) if in_file and from_env is None else 0
            found.append(Problem(self.shown, line, f"rule_files[{i}]", f"{pattern!r} {what}{where}{hint}"))
        if problems is not None:
            problems.extend(found)
        elif found:
            raise FileProblems(found)
        return list(dict.fromkeys(out))

    def provider_settings(self) -> dict[str, ProviderSettings]:
        """Every registered provider's block, in registry order."""
        return {name: getattr(self.settings.providers, name) for name in PROVIDERS}

    def enabled_providers(self) -> dict[str, ProviderSettings]:
        """The providers with an API key (the others are off)."""
        return {name: s for name, s in self.provider_settings().items() if s.api_key is not None}


def _credential(name: str, env: str) -> SecretStr | None:
    """``$env``, else the file ``name`` in ``$CREDENTIALS_DIRECTORY``; an empty value counts as absent."""
    if value := os.environ.get(env, "").strip():
        return SecretStr(value)
    found = read_credential(name)
    return SecretStr(found) if found else None


_SETTINGS_FIELD = re.compile(r'field "([^"]+)"')


def _env_problems(exc: SettingsError) -> list[Problem]:
    """pydantic-settings could not decode a ``RUNWATCH_*`` variable: it reads a list or a mapping as
    JSON. Name the variables (never their values: one may hold a secret) and show the JSON form."""
    found = _SETTINGS_FIELD.search(str(exc))
    prefix = "RUNWATCH_" + (found.group(1).upper() if found else "")
    names = sorted(k for k in os.environ if k.upper() == prefix or k.upper().startswith(prefix + "__"))
    why = (
        "not valid JSON; a list or a mapping from the environment is written as JSON, e.g."
        """ RUNWATCH_RULE_FILES='["rules.yaml"]' or RUNWATCH_PROVIDERS__EXA__MONITORS='["monitor_a"]'"""
    )
    if len(names) > 1:  # one of them is the list or mapping (the error names the top-level key only)
        return [Problem("environment", 0, ", ".join(names), f"one of these is {why}")]
    return [Problem("environment", 0, (names or [prefix])[0], why)]


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
    if isinstance(channels := data.get("channels"), dict):
        # ``ops:`` with nothing under it: a channel whose secret is a credential file (``ops_apprise_url``).
        data["channels"] = {k: ({} if v is None else v) for k, v in channels.items()}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise FileProblems(yamlfile.problems_from_validation(exc, root, shown)) from None
    except SettingsError as exc:
        raise FileProblems(_env_problems(exc)) from None
    for name, spec in PROVIDERS.items():
        settings_p = getattr(settings.providers, name)
        if settings_p.api_key is not None and not settings_p.api_key.get_secret_value().strip():
            settings_p.api_key = None
        if settings_p.api_key is None:
            settings_p.api_key = _credential(spec.credential, spec.key_env)
    unusable = fill_push_secrets({name: getattr(settings.providers, name) for name in PROVIDERS})
    if unusable:
        raise FileProblems([Problem(shown, 0, f"providers.{p}.{k}", msg) for p, k, msg in unusable])
    if settings.state.url is None and (found := read_credential("state_url")):
        try:
            settings.state = settings.state.model_validate({**dict(settings.state), "url": found})
        except ValidationError:
            why = "the credential state_url is not a PostgreSQL URL (postgresql://user@host:5432/database)"
            raise FileProblems([Problem(shown, 0, "state.url", why)]) from None
    register(os.environ.get("PGPASSWORD"))
    base = path.resolve().parent if path else Path.cwd()
    return Config(settings=settings, path=path, base_dir=base, root=root)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
