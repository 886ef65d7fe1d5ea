"""The push listener on ``ingest_listen``: ``POST /hooks/exa`` and ``POST /hooks/olostep/<token>``.

A push is answered 2xx only once the read it asks for is durably recorded (a hint in the state), and
then the provider's poller is woken; the read itself is an ordinary poll of that monitor, so a push and
a poll of the same change give one notification. In the order the checks run:

- a path that is not a hook of a provider with push configured, or a wrong Olostep token: ``404``,
  the same answer as for any unknown path (``not_found``);
- any method but POST: ``405``;
- Exa: an ``Exa-Signature`` header missing or malformed: ``401`` before the body is read;
- a body over 1 MiB (by ``Content-Length``, or as it arrives): ``413`` (``too_large``);
- Exa: the signature (HMAC of the raw bytes) wrong: ``401`` (``bad_signature``); right but ``t`` more
  than 300 s from now: ``401`` (``stale``); nothing is parsed before this;
- not JSON, not an envelope: ``400``; an Olostep body naming no monitor: ``422`` (``bad_body``);
- an event runwatch does not act on, or a monitor it does not watch: ``200`` (``ignored``);
- an event id seen before: ``200`` (``duplicate``), acted on once; else ``200`` (``accepted``).

A plain ASGI callable, not a framework: it is on the path of every push (goal: thousands a second on
one core). Secrets, tokens and signatures are never logged; the Olostep path is logged without its
token. The client in a log line is the peer, or ``X-Forwarded-For``'s nearest untrusted hop when the
peer is one of ``ingest_trusted_proxies``.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from runwatch.clock import Clock
from runwatch.httpserver import Listening, serve
from runwatch.log import get_logger
from runwatch.metrics import NO_PROVIDER, Metrics
from runwatch.sources.push import (
    MAX_BODY,
    BadBody,
    Push,
    parse_exa,
    parse_olostep,
    parse_signature,
    push_secrets,
    token_matches,
    verify_exa,
)
from runwatch.sources.settings import ProviderSettings
from runwatch.store.interfaces import Hint, Hints

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: A request head must arrive within this (the server closes the connection), and a body within this.
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
#: Connections (and requests in flight) beyond this are answered 503 by the server: the providers
#: retry, and a flood cannot exhaust the daemon's file descriptors.
MAX_CONNECTIONS = 1024
#: A refused push is logged at most once per this many seconds per (provider, outcome), with a count.
LOG_EVERY = 60.0
EXA_PATH = "/hooks/exa"
OLOSTEP_PREFIX = "/hooks/olostep/"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HookConfig:
    """What the listener answers for, from the config (swapped whole on a reload)."""

    #: Exa's signing secrets (empty: ``/hooks/exa`` is 404).
    exa_secrets: tuple[str, ...] = ()
    #: Olostep's path token (None: ``/hooks/olostep/...`` is 404).
    olostep_token: str | None = None
    #: Per provider with push, the monitors it watches (empty: every monitor of the account).
    watched: Mapping[str, frozenset[str]] = field(default_factory=dict)
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def build(cls, enabled: Mapping[str, ProviderSettings], trusted: Sequence[Network] = ()) -> HookConfig:
        """From the providers that poll (a push for one that does not could never be read)."""
        exa, olostep = enabled.get("exa"), enabled.get("olostep")
        secrets = tuple(push_secrets(exa, "webhook_secret")) if exa is not None else ()
        tokens = push_secrets(olostep, "webhook_token") if olostep is not None else []
        watched = {name: frozenset(s.monitors) for name, s in enabled.items()}
        return cls(secrets, tokens[0] if tokens else None, watched, tuple(trusted))

    @property
    def providers(self) -> list[str]:
        return [p for p, on in (("exa", bool(self.exa_secrets)), ("olostep", self.olostep_token)) if on]


class _Refused(Exception):
    def __init__(self, status: int, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.outcome = outcome


class Ingest:
    """The ASGI app of the push listener (see the module docstring)."""

    def __init__(
        self,
        hints: Hints,
        metrics: Metrics,
        clock: Clock,
        wake: Callable[[str], None],
        config: HookConfig,
    ) -> None:
        self.hints = hints
        self.metrics = metrics
        self.clock = clock
        self.wake = wake
        self.config = config
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        metrics.prime_ingest(["exa", "olostep"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        provider, found = self._route(scope["path"])
        try:
            if not found:
                raise _Refused(404, "not_found", "not found")
            if scope["method"] != "POST":
                await _answer(send, 405, {"error": "method not allowed"}, allow=True)
                return
            status, outcome, body = await self._handle(scope, receive, provider)
        except _Refused as no:
            status, outcome, body = no.status, no.outcome, {"error": str(no)}
            self._refused(scope, provider, no)
        self.metrics.ingest.labels(provider, outcome).inc()
        await _answer(send, status, body)

    def _route(self, path: str) -> tuple[str, bool]:
        """(the provider the path names, whether it is a hook that is on): every other path, and an
        Olostep token that does not match, is answered as an unknown path is."""
        cfg = self.config
        if path == EXA_PATH:
            return "exa", bool(cfg.exa_secrets)
        if path.startswith(OLOSTEP_PREFIX):
            token = cfg.olostep_token
            return "olostep", token is not None and token_matches(path[len(OLOSTEP_PREFIX) :], token)
        return NO_PROVIDER, False

    async def _handle(self, scope: Scope, receive: Receive, provider: str) -> tuple[int, str, dict[str, Any]]:
        headers = _headers(scope)
        signature = headers.get(b"exa-signature", b"").decode("latin-1") or None
        if provider == "exa" and parse_signature(signature) is None:
            raise _Refused(401, "bad_signature", "missing or malformed Exa-Signature")
        raw = await _body(headers, receive)
        now = self.clock.now()
        push: Push | None
        try:
            if provider == "exa":
                verdict = verify_exa(signature, raw, self.config.exa_secrets, now)
                if verdict != "ok":
                    raise _Refused(401, verdict, "signature refused")
                kind, push = parse_exa(raw)
            else:
                push = parse_olostep(raw)
                kind = "webhook"
        except BadBody as exc:
            raise _Refused(exc.status, "bad_body", str(exc)) from None
        watched = self.config.watched.get(provider, frozenset())
        if push is None or (watched and push.monitor_id not in watched):
            log.debug("push.ignored", provider=provider, type=kind, monitor_id=push and push.monitor_id)
            return 200, "ignored", {"status": "ignored"}
        hint = Hint(provider, push.event_id, push.monitor_id, push.run_id, push.kind, now)
        if not self.hints.add(hint, renew=provider == "olostep"):
            log.debug("push.duplicate", provider=provider, event_id=push.event_id)
            return 200, "duplicate", {"status": "duplicate"}
        log.info(
            "push.accepted",
            provider=provider,
            kind=push.kind,
            monitor_id=push.monitor_id,
            run_id=push.run_id or None,
            event_id=push.event_id,
        )
        self.wake(provider)
        return 200, "accepted", {"status": "accepted"}

    def _refused(self, scope: Scope, provider: str, no: _Refused) -> None:
        """One log line per (provider, outcome) a minute at most, counting the ones in between."""
        key = (provider, no.outcome)
        now = self.clock.now()
        last, quiet = self._logged.get(key, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self._logged[key] = (last, quiet + 1)
            return
        self._logged[key] = (now, 0)
        path = scope["path"]
        shown = OLOSTEP_PREFIX + "<token>" if path.startswith(OLOSTEP_PREFIX) else path[:100]
        log.warning(
            "push.refused",
            provider=provider,
            outcome=no.outcome,
            status=no.status,
            reason=str(no),
            path=shown,
            client=self.client(scope),
            since_last=quiet or None,
        )

    def client(self, scope: Scope) -> str | None:
        """The peer, or behind a trusted proxy the nearest ``X-Forwarded-For`` hop it does not trust."""
        peer = scope.get("client")
        host = str(peer[0]) if peer else None
        trusted = self.config.trusted_proxies
        if host is None or not trusted or not _within(host, trusted):
            return host
        forwarded = _headers(scope).get(b"x-forwarded-for", b"").decode("latin-1")
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not _within(hop, trusted):
                return hop[:64]
        return host


def _within(host: str, networks: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _body(headers: Mapping[bytes, bytes], receive: Receive) -> bytes:
    """The raw body, at most MAX_BODY bytes, within BODY_TIMEOUT (413 / 408 otherwise)."""
    declared = headers.get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise _Refused(413, "too_large", f"body over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(BODY_TIMEOUT) as waited:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Refused(400, "bad_body", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise _Refused(413, "too_large", f"body over {MAX_BODY} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    if waited.cancelled_caught:
        raise _Refused(408, "bad_body", f"the body did not arrive within {BODY_TIMEOUT:g} s")
    return b"".join(chunks)


async def _answer(send: Send, status: int, body: Mapping[str, Any], *, allow: bool = False) -> None:
    data = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if allow:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class PushedReads:
    """What each provider's poll loop reads for the pushes it was woken for.

    A regular cycle reads every monitor a hint waits for ahead of the idle ones (:meth:`urgent`). A
    push read at once is a cycle of just the monitors whose hints no read has tried yet (:meth:`fresh`),
    at most ``limit`` at once (a second of the request budget): beside a regular cycle in progress
    (:meth:`beside`), or between two (the loop is woken), so a burst of pushes is read in slices. A hint
    that a read did not answer (its run not visible yet) waits for the regular cycles: its monitor is
    read every ``poll_interval`` until the run shows, or the hint expires.
    """

    def __init__(self, hints: Hints) -> None:
        self.hints = hints
        self._tried: dict[str, set[str]] = {}
        self._arrival: dict[str, anyio.Event] = {}

    def arrived(self, provider: str) -> None:
        """A push for ``provider`` was recorded (what :meth:`beside` waits for)."""
        if (event := self._arrival.get(provider)) is not None:
            event.set()

    async def beside(
        self, provider: str, cycle: Callable[[], Awaitable[object]], read: Callable[[], Awaitable[int]]
    ) -> None:
        """Run ``cycle`` (a regular poll cycle) and meanwhile ``read`` what pushes name as they come: a
        cycle of thousands of monitors (minutes under the request budget) does not make a push wait for
        its end. Both share the provider's budget, so each slows the other, neither stops. A read under
        way when the cycle ends is let finish (a hint is consumed only with the record of its read)."""
        over = False

        async def reader() -> None:
            while not over:
                arrival = self._arrival[provider] = anyio.Event()
                if self.has_fresh(provider):
                    await read()
                else:
                    await arrival.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            try:
                await cycle()
            finally:
                over = True
                self.arrived(provider)

    def urgent(self, provider: str) -> list[str]:
        """Every monitor a hint waits for, oldest push first."""
        return list(dict.fromkeys(h.monitor_id for h in self.hints.pending(provider)))

    def fresh(self, provider: str, limit: int) -> list[str]:
        """Up to ``limit`` monitors with hints no read has tried, oldest first; now tried."""
        pending = self.hints.pending(provider)
        tried = self._tried.setdefault(provider, set())
        tried &= {h.event_id for h in pending}
        new = [h for h in pending if h.event_id not in tried]
        monitors = list(dict.fromkeys(h.monitor_id for h in new))[: max(1, limit)]
        chosen = set(monitors)
        tried.update(h.event_id for h in new if h.monitor_id in chosen)
        return monitors

    def has_fresh(self, provider: str) -> bool:
        tried = self._tried.get(provider, set())
        return any(h.event_id not in tried for h in self.hints.pending(provider))

    def expire(self, provider: str, window: float, now: float) -> None:
        """Give up hints older than ``window`` whose run never showed (polling goes on as ever)."""
        for h in self.hints.expire(provider, now - window, now):
            log.warning(
                "push.expired",
                provider=provider,
                monitor_id=h.monitor_id,
                run_id=h.run_id or None,
                kind=h.kind,
                waited=round(now - h.received_at),
                hint="the run it named never showed; polling carries on as usual",
            )


@contextlib.asynccontextmanager
async def serving(
    ingest: Ingest | None, listen: str | None, *, head_timeout: float = HEAD_TIMEOUT
) -> AsyncIterator[Listening | None]:
    """Serve the push listener on ``listen`` while the block runs (nothing when push is off)."""
    if ingest is None or listen is None:
        yield None
        return
    async with serve(
        ingest, listen, name="ingest", head_timeout=head_timeout, max_connections=MAX_CONNECTIONS
    ) as http:
        if not ingest.config.providers:
            log.warning(
                "ingest.no_hooks",
                listen=listen,
                hint="no provider has webhook_secret/webhook_token (and an API key): every push is 404",
            )
        yield http
