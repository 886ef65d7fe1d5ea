"""What the providers push, verified and read, before anything trusts it.

A push is a hint, never the truth: all it may do is make the daemon read a monitor (or one run of
it) now, through the same source, request budget and change detection as a poll. So everything here is
pure: check an Exa signature against the raw bytes (before the body is parsed), compare an Olostep
path token, and pull out of a body the monitor (and run) it names. ``shared/api/exa.md`` ("Push
instead of poll") and ``shared/api/olostep.md`` (the webhook facts) are the sources.

The settings each provider takes for it (``webhook_secret``, ``webhook_token``, ``live_logs``,
``max_streams``) are here too, as mixins of the providers' settings, and so is where their secrets
come from when the file does not say (the environment, then a systemd credential).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, SecretStr, field_validator

from runwatch.credentials import read_credential
from runwatch.redact import register

#: A signature whose ``t`` is further than this from now (either way) is refused: a replay.
TOLERANCE = 300.0
#: Bodies larger than this are refused unread (413).
MAX_BODY = 1024 * 1024
#: The Exa events that make runwatch read something, and what they ask for.
EXA_RUN_EVENTS: Mapping[str, str] = {
    "monitor.run.created": "run.created",
    "monitor.run.completed": "run.completed",
}
#: Every monitor event Exa can send (``runwatch hooks setup exa`` asks for all of them).
EXA_MONITOR_EVENTS: tuple[str, ...] = (
    "monitor.created",
    "monitor.updated",
    "monitor.deleted",
    "monitor.run.created",
    "monitor.run.completed",
)
#: The keys an Olostep webhook body may name its monitor under, as dotted paths, in order.
OLOSTEP_MONITOR_KEYS: tuple[tuple[str, ...], ...] = (
    ("monitor_id",),
    ("monitorId",),
    ("monitor", "id"),
    ("data", "monitor_id"),
)
OLOSTEP_MONITOR_ID = re.compile(r"^monitor_[A-Za-z0-9_-]+$")
#: An Olostep path token: long enough not to be guessed, and only characters a URL path keeps as is.
TOKEN_MIN = 32
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~-]+$")
#: Bounds on an ``Exa-Signature`` header: what a verifier looks at, whatever a client sends.
MAX_SIGNATURE_HEADER = 4096
MAX_SIGNATURES = 16


# -- settings -----------------------------------------------------------------------------------------
class ExaPushSettings(BaseModel):
    """``providers.exa`` keys for Exa's webhooks (a mixin of the Exa settings)."""

    #: The secrets pushes are signed with (any may match: several while rotating). Empty: no push.
    webhook_secret: list[SecretStr] = Field(default_factory=list)

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _secret_list(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, str | SecretStr) else v

    @field_validator("webhook_secret")
    @classmethod
    def _secrets_not_blank(cls, v: list[SecretStr]) -> list[SecretStr]:
        if any(not s.get_secret_value().strip() for s in v):
            raise ValueError("a webhook secret must not be empty")
        return [SecretStr(s.get_secret_value().strip()) for s in v]


def check_token(value: str) -> str:
    """An Olostep path token as runwatch accepts it (ValueError saying why not; never echoing it)."""
    value = value.strip()
    if len(value) < TOKEN_MIN:
        raise ValueError(f"must be {TOKEN_MIN} characters or more (it is the secret part of the URL)")
    if not TOKEN_CHARS.match(value):
        raise ValueError("may hold only letters, digits and . _ ~ - (it goes into a URL path as is)")
    return value


class OlostepPushSettings(BaseModel):
    """``providers.olostep`` keys for Olostep's webhooks and live logs (a mixin of its settings)."""

    #: The secret part of the URL Olostep posts to (``/hooks/olostep/<token>``). None: no push.
    webhook_token: SecretStr | None = None
    #: Follow the agent-log stream of runs in flight (:mod:`runwatch.service.live_logs`).
    live_logs: bool = True
    #: Live-log streams open at once for this provider.
    max_streams: int = Field(default=50, ge=1, le=10_000)

    @field_validator("webhook_token")
    @classmethod
    def _webhook_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return None
        return SecretStr(check_token(v.get_secret_value()))


#: The provider keys that are about push alone: changing them leaves the poller as it is.
PUSH_KEYS = frozenset({"webhook_secret", "webhook_token", "live_logs", "max_streams"})
#: Where each provider's push secret comes from when its config key is unset: (key, env, credential).
PUSH_SECRETS: Mapping[str, tuple[str, str, str]] = {
    "exa": ("webhook_secret", "EXA_WEBHOOK_SECRET", "exa_webhook_secret"),
    "olostep": ("webhook_token", "OLOSTEP_WEBHOOK_TOKEN", "olostep_webhook_token"),
}


def fill_push_secrets(providers: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Take each provider's push secret from ``$ENV`` or its credential when the config leaves it
    unset, and register every one for redaction. Returns ``(provider, key, problem)`` for a value
    from there that is unusable (the problem never quotes it)."""
    problems: list[tuple[str, str, str]] = []
    for provider, (key, env, credential) in PUSH_SECRETS.items():
        settings = providers.get(provider)
        if settings is None or not hasattr(settings, key):
            continue
        current = getattr(settings, key)
        if not current:
            raw = os.environ.get(env, "").strip() or (read_credential(credential) or "")
            values = raw.split()
            if values and key == "webhook_secret":
                setattr(settings, key, [SecretStr(v) for v in values])
            elif values:
                try:
                    setattr(settings, key, SecretStr(check_token(values[0])))
                except ValueError as exc:
                    problems.append((provider, key, f"from ${env} or credential {credential}: {exc}"))
        for secret in push_secrets(settings, key):
            register(secret)
    return problems


def push_secrets(settings: Any, key: str) -> list[str]:
    """The secret values of one provider's push key (a list, one value or none)."""
    value = getattr(settings, key, None)
    items = value if isinstance(value, list) else [value]
    return [s.get_secret_value() for s in items if isinstance(s, SecretStr)]


# -- Exa ------------------------------------------------------------------------------------------------
Verdict = Literal["ok", "bad_signature", "stale"]


def parse_signature(header: str | None) -> tuple[int, list[str]] | None:
    """``t=<unix>,v1=<hex>[,v1=<hex>...]`` -> (t, the v1 values); None when missing or malformed.

    Other schemes (``v0=``) are skipped, so a signature format Exa adds later does not break this one.
    """
    if not header or len(header) > MAX_SIGNATURE_HEADER:
        return None
    t: int | None = None
    v1: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if t is not None or not value.isdigit() or len(value) > 12:
                return None
            t = int(value)
        elif key == "v1" and value:
            v1.append(value.lower())
    if t is None or not v1 or len(v1) > MAX_SIGNATURES:
        return None
    return t, v1


def exa_signature(secret: str, t: int, body: bytes) -> str:
    """HMAC-SHA256 of ``"<t>.<raw body>"`` keyed with the secret's UTF-8 bytes, lower-case hex."""
    return hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()


def verify_exa(header: str | None, body: bytes, secrets: Sequence[str], now: float) -> Verdict:
    """Whether an ``Exa-Signature`` header signs ``body`` with one of ``secrets``, recently.

    Every secret's digest is compared with every ``v1`` in constant time (any may match: Exa signs
    with each of its secrets while one is rotated); a good signature whose ``t`` is more than
    ``TOLERANCE`` from ``now`` is ``stale`` (a replay, or a clock far off).
    """
    parsed = parse_signature(header)
    if parsed is None or not secrets:
        return "bad_signature"
    t, given = parsed
    ok = False
    for secret in secrets:
        want = exa_signature(secret, t, body).encode()
        for candidate in given:
            # No early exit: the time taken does not say which secret or which v1 matched.
            ok |= hmac.compare_digest(want, candidate.encode("ascii", "replace"))
    if not ok:
        return "bad_signature"
    return "stale" if abs(now - t) > TOLERANCE else "ok"


@dataclass(frozen=True, slots=True)
class Push:
    """What a verified push asks for: read ``monitor_id`` now (``run_id``: that run of it; empty: the
    monitor as a whole). ``event_id`` is what repeats of the same push share."""

    provider: str
    event_id: str
    kind: str
    monitor_id: str
    run_id: str = ""


class BadBody(ValueError):
    """A verified push whose body is not what the provider sends (400), or names no monitor (422)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _object(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadBody("the body is not JSON") from None
    if not isinstance(obj, dict):
        raise BadBody("the body is not a JSON object")
    return obj


def parse_exa(body: bytes) -> tuple[str, Push | None]:
    """An Exa event envelope ``{id, object: "event", type, data, createdAt}`` -> (its type, the read it
    asks for, or None for a type runwatch does not act on). BadBody when it is not an envelope."""
    obj = _object(body)
    event_id, kind, data = obj.get("id"), obj.get("type"), obj.get("data")
    if not (isinstance(event_id, str) and event_id and isinstance(kind, str) and kind):
        raise BadBody("not an Exa event: no id or type")
    if obj.get("object", "event") != "event" or not isinstance(data, dict):
        raise BadBody("not an Exa event envelope")
    hint = EXA_RUN_EVENTS.get(kind)
    if hint is None:
        return kind, None
    monitor_id, run_id = data.get("monitorId"), data.get("id")
    if not (isinstance(monitor_id, str) and monitor_id and isinstance(run_id, str) and run_id):
        raise BadBody(f"{kind}: data has no monitorId or id")
    return kind, Push("exa", event_id, hint, monitor_id, run_id)


# -- Olostep --------------------------------------------------------------------------------------------
def token_matches(given: str, token: str) -> bool:
    """The path token compared in constant time (its length aside, which the URL shows anyway)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


def _dig(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def parse_olostep(body: bytes) -> Push:
    """An Olostep webhook body -> the monitor to read now. Olostep sends no event id, so repeats are
    told by the body's digest; BadBody(422) when no usable monitor id is in it."""
    obj = _object(body)
    monitor_id = next(
        (v for v in (_dig(obj, p) for p in OLOSTEP_MONITOR_KEYS) if isinstance(v, str) and v), None
    )
    if monitor_id is None or not OLOSTEP_MONITOR_ID.match(monitor_id):
        raise BadBody("no Olostep monitor id (monitor_id, monitorId, monitor.id or data.monitor_id)", 422)
    # The monitor as a whole is read (its last_run, its events, its runs not finished).
    return Push("olostep", "body_" + hashlib.sha256(body).hexdigest()[:32], "monitor", monitor_id)
