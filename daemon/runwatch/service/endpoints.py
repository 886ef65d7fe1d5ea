"""The operations endpoint: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (polling, and the
state answering)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from runwatch.clock import Clock
from runwatch.metrics import Metrics

#: A provider is ready while its last good poll is younger than this many poll intervals.
READY_INTERVALS = 3
#: What a provider another instance polls is (several instances on one state): not a reason to be unready.
STANDBY = "standby: another instance polls it"


class Health:
    """Readiness: every enabled provider this instance polls has polled successfully within the last
    few intervals (``leads``: whether it polls a provider now; a standby's are not its to answer for)."""

    def __init__(self, clock: Clock, intervals: Mapping[str, float]) -> None:
        self.clock = clock
        self.intervals = dict(intervals)
        self.last_ok: dict[str, float] = {}
        self.leads: Callable[[str], bool] = lambda provider: True
        #: Why the state does not answer now (None while it does): not ready, whatever the providers.
        self.state: Callable[[], str | None] = lambda: None

    def polled(self, provider: str) -> None:
        self.last_ok[provider] = self.clock.now()

    def readiness(self) -> dict[str, str]:
        now = self.clock.now()
        out: dict[str, str] = {}
        for provider, interval in self.intervals.items():
            last = self.last_ok.get(provider)
            if not self.leads(provider):
                out[provider] = STANDBY
            elif last is None:
                out[provider] = "no successful poll yet"
            elif now - last > READY_INTERVALS * interval + 5:
                out[provider] = f"last successful poll {now - last:.0f}s ago"
            else:
                out[provider] = "ok"
        return out

    def ready(self) -> bool:
        return self.state() is None and all(v in ("ok", STANDBY) for v in self.readiness().values())


def make_app(metrics: Metrics, health: Health) -> Starlette:
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> JSONResponse:
        state = health.readiness()
        ready = health.ready()
        body: dict[str, object] = {"ready": ready, "providers": state}
        if (problem := health.state()) is not None:
            body["state"] = problem  # e.g. "state database postgresql://...:5432/db is unreachable: ..."
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.ready.set(1 if health.ready() else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ]
    )
