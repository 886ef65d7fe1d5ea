"""A local HTTP receiver for apprise's ``json://`` notifications and signed webhooks: the demo prints
what it gets.

Tests use it too, as the real endpoint a ``json://`` channel posts to; waiting on it is waiting on an
event (``wait_for``), never on the clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class Receiver:
    """Keeps every POST it gets; a path given a Standard Webhooks secret has its signature verified
    (the result is in the message as ``_signature``: ``ok`` or why not), as a webhook receiver would."""

    def __init__(
        self,
        on_message: Callable[[str, dict[str, Any]], None] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.on_message = on_message
        self.secrets = dict(secrets or {})
        #: Answer with this status instead of 200 (tests of a channel that is down).
        self.fail_with: int | None = None
        self._changed = anyio.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> JSONResponse:
        if self.fail_with is not None:
            return JSONResponse({"error": "receiver told to fail"}, status_code=self.fail_with)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        path = request.url.path
        if path in self.secrets and isinstance(body, dict):
            try:
                Webhook(self.secrets[path]).verify(raw, dict(request.headers))
                body["_signature"] = "ok"
            except WebhookVerificationError as exc:
                body["_signature"] = f"invalid: {exc}"
        self.messages.append((path, body))
        if self.on_message:
            self.on_message(path, body)
        self._changed.set()
        self._changed = anyio.Event()
        return JSONResponse({"ok": True})

    def on(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.messages if p == path]

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> None:
        """Until ``count`` messages (on ``path``, if given) have arrived; TimeoutError after ``timeout``."""
        with anyio.fail_after(timeout):
            while len(self.on(path) if path else self.messages) < count:
                await self._changed.wait()
