"""Operations: /v1/stats, /healthz, /readyz, /metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST

from paysched import metrics
from paysched.api.deps import paysched, problems
from paysched.api.models import Health, Stats
from paysched.api.problems import Problem
from paysched.api.security import Read, bearer
from paysched.app import probe_redis
from paysched.db.apikeys import ApiKey
from paysched.db.store import Store
from paysched.db.store.base import short_error
from paysched.heartbeat import ROLES

router = APIRouter()


@router.get(
    "/v1/stats",
    response_model=Stats,
    tags=["stats"],
    operation_id="getStats",
    responses=problems(),
)
async def stats(request: Request, _: ApiKey = Read) -> dict[str, Any]:
    """The same object as `paysched stats --json`: queue counts (waiting, active, completed,
    failed, delayed, total), occurrences per state, notifications per state, and every
    process role (worker, scheduler, resolver, delivery, api) with its last heartbeat."""
    return await paysched(request).stats()


@router.get("/healthz", response_model=Health, tags=["health"], operation_id="healthz")
async def healthz() -> dict[str, Any]:
    """The process is alive (nothing else is checked)."""
    return {"status": "ok", "checks": {}}


@router.get(
    "/readyz",
    response_model=Health,
    tags=["health"],
    operation_id="readyz",
    responses=problems(503),
)
async def readyz(request: Request) -> Any:
    """Redis and the database answer (503 naming the one that does not)."""
    app = paysched(request)
    checks: dict[str, str] = {}
    try:
        await app.read(Store.ping)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = short_error(exc)
    try:
        assert app.redis_url is not None
        await probe_redis(app.redis_url, timeout=2.0)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = short_error(exc)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        why = "; ".join(f"{name}: {checks[name]}" for name in failed)
        raise Problem(503, "not_ready", why, headers={"Retry-After": "5"})
    return {"status": "ok", "checks": checks}


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    operation_id="metrics",
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format.",
        },
        **problems(),
    },
)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus metrics. Needs a read key unless PAYSCHED_METRICS_PUBLIC=1."""
    app = paysched(request)
    if not app.settings.metrics_public:
        credentials: HTTPAuthorizationCredentials | None = await bearer(request)
        await request.app.state.guard.authenticate(credentials)
    await refresh_gauges(request)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def refresh_gauges(request: Request) -> None:
    """The deployment-wide gauges, read now from Redis and the database."""
    app = paysched(request)
    data = await app.stats()
    for state, count in data["queue"].items():
        metrics.QUEUE_JOBS.labels(state).set(count)
    for state, count in data["occurrences"].items():
        metrics.OCCURRENCES.labels(state).set(count)
    for state, count in data["notifications"].items():
        metrics.NOTIFICATIONS.labels(state).set(count)
    # Every role and state, 0 when none: a role that went away reads 0 up, not a stale 1.
    beats = Counter((p["role"], p["state"]) for p in data["processes"])
    for role in ROLES:
        for state in ("up", "down", "stopped"):
            metrics.PROCESSES.labels(role, state).set(beats[(role, state)])
    now = app.clock.now()
    oldest = await app.db(app.store.reads.oldest_due, now)
    metrics.OLDEST_DUE_AGE.set(0 if oldest is None else (now - oldest).total_seconds())
