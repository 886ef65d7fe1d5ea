"""The webhook channel kind: each alert POSTed as JSON, signed per the Standard Webhooks spec.

Headers: ``webhook-id`` (the notification id: the same for every attempt and replay, so receivers
dedupe), ``webhook-timestamp`` (this attempt, unix seconds) and ``webhook-signature`` (``v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">``, one per secret while rotating, space-separated). Signing
is the ``standardwebhooks`` package's, the same code receivers verify with. The body is
``Alert.payload()`` (``schemas/webhook-v1.json``). Redirects are not followed: a moved endpoint is a
configuration problem, and following it would send the payload somewhere nobody reviewed.

One connection pool per channel (keep-alive), shared by its sending threads: httpx's pool is
thread-safe, and the delivery threads come and go (anyio stops a worker thread idle for 10 s), so a
pool per thread would load the CA bundle again and open a new connection after every quiet spell, and
keep every old pool. Requests go straight to httpx's
transport: ``httpx.Client``'s own per-request work (URL merging, the cookie jar, auth and redirect
hooks) was about a third of a delivery's CPU, and none of it applies to a webhook. When the
environment names a proxy (``HTTPS_PROXY`` and the like) a plain ``httpx.Client`` sends instead, so
its proxy routing (``NO_PROXY`` included) is exactly httpx's.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from standardwebhooks.webhooks import Webhook

from runwatch import __version__
from runwatch.delivery.channel import ChannelSetupError, Outcome, Retry, outcome_for_status, read_secret_file
from runwatch.durations import Duration
from runwatch.model import Alert
from runwatch.redact import redact, register, register_url
from runwatch.retry import parse_retry_after

KIND = "webhook"
BODY_SNIPPET = 200


class WebhookSettings(BaseModel):
    """The ``webhook:`` block of a channel."""

    model_config = ConfigDict(extra="forbid")

    url: SecretStr
    secret: SecretStr | list[SecretStr] | None = None
    secret_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _http(cls, v: SecretStr) -> SecretStr:
        url = v.get_secret_value()
        if not url.startswith(("http://", "https://")):
            register(url)
            raise ValueError("is not an http(s) URL")
        register_url(url)
        return v

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr | list[SecretStr] | None) -> SecretStr | list[SecretStr] | None:
        for s in [v] if isinstance(v, SecretStr) else v or []:
            register(s.get_secret_value())
            check_secret(s.get_secret_value())
        if isinstance(v, list) and not v:
            raise ValueError("an empty list: give at least one secret")
        return v


def check_secret(secret: str) -> None:
    """A Standard Webhooks secret: ``whsec_`` + base64 of at least 24 bytes (ValueError otherwise)."""
    if not secret.startswith("whsec_"):
        raise ValueError("is not a Standard Webhooks secret (expected whsec_ followed by base64)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not a Standard Webhooks secret: the part after whsec_ is not base64") from None
    if len(key) < 24:
        raise ValueError(f"the key after whsec_ is {len(key)} bytes; use at least 24 (32 is usual)")


class WebhookChannel:
    """POSTs each alert to one URL, signed with each configured secret."""

    kind = KIND

    def __init__(
        self,
        name: str,
        url: str,
        secrets: list[str],
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        register_url(url)
        for s in secrets:
            register(s)
        self.name = name
        self.url = url
        self._signers = [Webhook(s) for s in secrets]
        self._headers = {
            "content-type": "application/json",
            "user-agent": f"runwatch/{__version__}",
            **(headers or {}),
        }
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._verify = verify
        self._target = httpx.URL(url)
        self._extensions = {"timeout": self._timeout.as_dict()}
        self._proxied = _environment_names_a_proxy()
        #: Made on first use (a channel that never sends loads no CA bundle), under ``_lock``.
        self._pool: httpx.Client | httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def _connections(self) -> httpx.Client | httpx.HTTPTransport:
        """The channel's one pool: a plain client when a proxy may apply, else the bare transport."""
        pool = self._pool
        if pool is None:
            with self._lock:
                if (pool := self._pool) is None:
                    pool = self._pool = (
                        httpx.Client(timeout=self._timeout, follow_redirects=False, verify=self._verify)
                        if self._proxied
                        else httpx.HTTPTransport(verify=self._verify)
                    )
        return pool

    def _post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """One POST, response read; raises httpx's transport errors (never follows a redirect)."""
        pool = self._connections()
        if isinstance(pool, httpx.Client):
            return pool.post(self.url, content=body, headers=headers)
        request = httpx.Request(
            "POST", self._target, headers=headers, content=body, extensions=self._extensions
        )
        response = pool.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        return response

    def request_headers(self, alert_id: str, body: bytes, when: datetime) -> dict[str, str]:
        """The Standard Webhooks headers for one attempt (also what ``send-test`` shows)."""
        text = body.decode()
        signature = " ".join(s.sign(alert_id, when, text) for s in self._signers)
        return {
            **self._headers,
            "webhook-id": alert_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature,
        }

    def send(self, alert: Alert) -> Outcome:
        body = orjson.dumps(alert.payload())
        headers = self.request_headers(alert.id, body, datetime.now(UTC))
        try:
            resp = self._post(body, headers)
        except httpx.TimeoutException as exc:
            return Retry("timeout", redact(f"timed out ({type(exc).__name__})"))
        except httpx.ConnectError as exc:
            if isinstance(exc.__context__, ssl.SSLError) or "SSL" in str(exc) or "certificate" in str(exc):
                return Retry("tls", redact(f"TLS error: {exc}")[:300])
            return Retry("connect", redact(f"connection failed: {exc}")[:300])
        except httpx.TransportError as exc:
            return Retry("connect", redact(f"{type(exc).__name__}: {exc}")[:300])
        status = resp.status_code
        if 200 <= status <= 299:
            return outcome_for_status(status, "")
        snippet = resp.text[:BODY_SNIPPET].replace("\n", " ")
        detail = redact(f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}")
        if 300 <= status <= 399:
            detail += f" (redirect to {redact(resp.headers.get('location', '?'))})"
        after = parse_retry_after(resp.headers.get("retry-after"), datetime.now(UTC).timestamp())
        return outcome_for_status(status, detail, after)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _environment_names_a_proxy() -> bool:
    """Whether httpx (``trust_env``) would look at a proxy for some URL: the same stdlib source it reads."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


class WebhookKind:
    """``webhook: {url, secret | secret_file, headers, timeout}``, or ``<channel>_webhook_secret``."""

    name = KIND
    credential = "webhook_secret"
    credential_alone = False
    credential_example = "whsec_" + base64.b64encode(bytes(32)).decode()

    def config_fields(self) -> Mapping[str, tuple[Any, Any]]:
        return {"webhook": (WebhookSettings | None, None)}

    def configured(self, block: BaseModel) -> bool:
        return getattr(block, "webhook", None) is not None

    def build(self, name: str, block: BaseModel, *, base_dir: Path, credential: str | None) -> WebhookChannel:
        w: WebhookSettings = getattr(block, "webhook")  # noqa: B009
        if w.secret is not None and w.secret_file is not None:
            raise ChannelSetupError("webhook.secret_file", "give either secret or secret_file, not both")
        if w.secret is not None:
            secrets = [
                s.get_secret_value() for s in ([w.secret] if isinstance(w.secret, SecretStr) else w.secret)
            ]
            field = "webhook.secret"
        elif w.secret_file is not None:
            text = read_secret_file(base_dir, w.secret_file, "webhook.secret_file")
            secrets, field = text.split(), "webhook.secret_file"
        elif credential is not None:
            secrets, field = credential.split(), "webhook.secret"
        else:
            raise ChannelSetupError(
                "webhook.secret",
                f"no secret: set secret or secret_file, or provide the credential {name}_{self.credential}",
            )
        for s in secrets:
            register(s)
            try:
                check_secret(s)
            except ValueError as exc:
                raise ChannelSetupError(field, str(exc)) from None
        if not secrets:
            raise ChannelSetupError(field, "is empty")
        return WebhookChannel(name, w.url.get_secret_value(), secrets, headers=w.headers, timeout=w.timeout)
