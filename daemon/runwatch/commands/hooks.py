"""``runwatch hooks setup exa`` and ``runwatch hooks list exa``: the provider's side of push.

``setup`` registers runwatch's push URL with Exa (``POST /v0/webhooks`` with the monitor events) and
keeps the signing secret Exa returns that one time: in a new file of mode 0600 (never over an existing
one: the file is checked before Exa is asked, so a refused file costs no webhook), or printed once.
``list`` shows the account's webhooks, never a secret. Both read the API key and base URL from the
same ``--config`` as ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from runwatch.commands.common import load, say
from runwatch.config import Config
from runwatch.errors import ProviderError, RunwatchError
from runwatch.redact import redact
from runwatch.sources.push import EXA_MONITOR_EVENTS

#: Pages of ``GET /v0/webhooks`` read at most (200 webhooks a page).
MAX_PAGES = 50
BODY_SHOWN = 300


def _exa(config: Config) -> tuple[str, dict[str, str], float]:
    """Exa's base URL, auth headers and timeout from the config; an error line without a key."""
    settings = config.settings.providers.exa
    if settings.api_key is None:
        raise RunwatchError(
            "no Exa API key: set providers.exa.api_key, $EXA_API_KEY or the credential exa_api_key"
        )
    return settings.base_url, {"x-api-key": settings.api_key.get_secret_value()}, settings.timeout


def _call(method: str, url: str, headers: dict[str, str], timeout: float, **kw: Any) -> Any:
    """One request to Exa; any failure is one ProviderError line (status, request id, start of body)."""
    try:
        answer = httpx.request(method, url, headers=headers, timeout=timeout, **kw)
    except httpx.HTTPError as exc:
        raise ProviderError(f"exa {method} {urlsplit(url).path}: {type(exc).__name__}: {exc}") from None
    if not answer.is_success:
        rid = answer.headers.get("x-request-id")
        body = redact(answer.text)[:BODY_SHOWN]
        raise ProviderError(
            f"exa {method} {urlsplit(url).path}: HTTP {answer.status_code}"
            + (f" request_id={rid}" if rid else "")
            + (f" body={body!r}" if body else "")
        )
    try:
        return answer.json()
    except ValueError:
        raise ProviderError(f"exa {method} {urlsplit(url).path}: the answer is not JSON") from None


def _new_secret_file(path: Path) -> int:
    """Open ``path`` for the secret: created now, mode 0600, never one that exists."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise RunwatchError(
            f"{path} exists; runwatch never overwrites a secret file (give a new path)"
        ) from None
    except OSError as exc:
        raise RunwatchError(f"cannot create {path}: {exc.strerror}") from None


def cmd_hooks_setup(config_path: Path, url: str, secret_file: Path | None, out: TextIO = sys.stdout) -> int:
    config = load(config_path)
    base, headers, timeout = _exa(config)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RunwatchError(f"--url {url!r} is not an http(s) URL")
    if parts.scheme != "https":
        say(f"warning: --url {url} is not https: Exa's pushes would cross the network in clear", sys.stderr)
    if not parts.path.endswith("/hooks/exa"):
        say(f"warning: --url {url} does not end in /hooks/exa, runwatch's path for Exa's pushes", sys.stderr)
    fd = _new_secret_file(secret_file) if secret_file is not None else None
    try:
        hook = _call("POST", f"{base}/v0/webhooks", headers, timeout,
                     json={"events": list(EXA_MONITOR_EVENTS), "url": url})  # fmt: skip
        secret = hook.get("secret") if isinstance(hook, dict) else None
        if not isinstance(secret, str) or not secret:
            raise ProviderError("exa POST /v0/webhooks: the answer carries no secret")
        if fd is not None:
            os.write(fd, secret.encode() + b"\n")
    except BaseException:
        if fd is not None and secret_file is not None:
            os.close(fd)
            fd = None
            secret_file.unlink(missing_ok=True)  # nothing usable was written to it
        raise
    finally:
        if fd is not None:
            os.close(fd)
    say(f"exa webhook {hook.get('id')} made for {url} ({', '.join(EXA_MONITOR_EVENTS)})", out)
    if secret_file is not None:
        say(f"its signing secret is in {secret_file} (mode 0600); Exa shows it only this once", out)
        say(
            "give it to runwatch as the credential exa_webhook_secret (systemd: "
            f"LoadCredential=exa_webhook_secret:{secret_file}), $EXA_WEBHOOK_SECRET or "
            "providers.exa.webhook_secret, then restart or reload runwatch",
            out,
        )
    else:
        # Printed as is: the one place runwatch shows a secret, because Exa never shows it again.
        print(f"secret: {secret}", file=out)
        say("Exa shows this secret only this once: put it in providers.exa.webhook_secret,"
            " $EXA_WEBHOOK_SECRET or the credential exa_webhook_secret", out)  # fmt: skip
    return 0


def cmd_hooks_list(config_path: Path, out: TextIO = sys.stdout) -> int:
    base, headers, timeout = _exa(load(config_path))
    hooks: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = _call("GET", f"{base}/v0/webhooks", headers, timeout, params=params)
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise ProviderError("exa GET /v0/webhooks: the answer has no 'data' array")
        hooks.extend(h for h in data if isinstance(h, dict))
        nxt = page.get("nextCursor") if page.get("hasMore") else None
        if not isinstance(nxt, str) or not nxt or nxt == cursor:
            break
        cursor = nxt
    if not hooks:
        say("no exa webhooks (make one with: runwatch hooks setup exa --url URL --config ...)", out)
        return 0
    for hook in hooks:  # never the secret, whatever the answer carries
        events = hook.get("events")
        shown = ",".join(e for e in events if isinstance(e, str)) if isinstance(events, list) else ""
        say(f"{hook.get('id')}  {hook.get('status')}  {hook.get('url')}  {shown}", out)
    return 0


def cmd_hooks(args: argparse.Namespace) -> int:
    """``runwatch hooks setup|list PROVIDER`` (the parser allows only providers with a webhook API)."""
    if args.action == "setup":
        return cmd_hooks_setup(args.config, args.url, args.secret_file)
    return cmd_hooks_list(args.config)
