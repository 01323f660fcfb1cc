"""The Starlette application: routes, error mapping, lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asyncpg import (
    InterfaceError,
    InternalClientError,
    PostgresConnectionError,
    TooManyConnectionsError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

import engine

from . import (
    auth_routes,
    batch_routes,
    dashboard,
    events_routes,
    group_routes,
    hold_routes,
    lifecycle_routes,
    ops_routes,
    slot_routes,
    waitlist_routes,
    webhook_routes,
)
from .context import AppContext
from .metrics import Metrics
from .middleware import RequestMiddleware
from .problems import Problem, problem_response
from .settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("slotkeeper.api")

_HTTP_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug = _HTTP_SLUGS.get(exc.status_code, "bad-request")
    detail = "no such route" if exc.status_code == 404 else str(exc.detail)
    problem = Problem(slug, detail, headers=dict(exc.headers or {}))
    problem.status = exc.status_code
    return problem.response()


async def _database_down(request: Request, exc: Exception) -> Response:
    log.warning("postgres unavailable: %s", type(exc).__name__)
    return Problem(
        "backend-unavailable",
        "the database is unavailable; retry shortly",
        headers={"Retry-After": "1"},
    ).response()


async def _redis_down(request: Request, exc: Exception) -> Response:
    # Redis calls outside the engine (token revocation, rate limits) fail this way.
    log.warning("redis unavailable: %s", type(exc).__name__)
    return Problem(
        "backend-unavailable",
        "the reservation store is unavailable; retry shortly",
        headers={"Retry-After": "1"},
    ).response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its traceback here; the client learns nothing about internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Problem("internal-error", "something went wrong on our side").response()


_HOT_HOLD = [r for r in hold_routes.routes if getattr(r, "name", "") == "create_hold"]


def create_app(settings: Settings | None = None, *, context: AppContext | None = None) -> Starlette:
    """The app; ``context`` lets tests inject one, otherwise lifespan builds it."""
    settings = settings or Settings.from_env()
    metrics = context.metrics if context else Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = context or await AppContext.build(settings)
        ctx.metrics = metrics
        app.state.ctx = ctx
        try:
            yield
        finally:
            if context is None:
                await ctx.close()

    handlers: dict[Any, Any] = {
        Problem: problem_response,
        engine.EngineError: problem_response,
        HTTPException: _http_error,
        PostgresConnectionError: _database_down,
        InterfaceError: _database_down,
        TooManyConnectionsError: _database_down,
        InternalClientError: _database_down,
        RedisConnectionError: _redis_down,
        RedisTimeoutError: _redis_down,
        ConnectionError: _database_down,
        OSError: _database_down,
        Exception: _unexpected,
    }
    app = Starlette(
        routes=[
            *auth_routes.routes,
            # POST /slots/{slot_id}/hold, the hot route, before the others: Starlette
            # tries each route's regex in order, and the thirteen misses before it
            # were 4-8% of a hold's CPU. No other route matches its path shape, so
            # no answer changes.
            *_HOT_HOLD,
            *slot_routes.routes,
            *group_routes.routes,
            *(route for route in hold_routes.routes if route not in _HOT_HOLD),
            *waitlist_routes.routes,
            *lifecycle_routes.routes,
            *batch_routes.routes,
            *ops_routes.routes,
            *events_routes.routes,
            *webhook_routes.routes,
            *dashboard.routes,
        ],
        middleware=[
            Middleware(
                RequestMiddleware,
                timeout_s=settings.backend_timeout_s,
                # login: its own budget for the hash queue, plus the user lookup's
                path_timeouts=dict.fromkeys(
                    ("/auth/login", "/login"),
                    settings.login_timeout_s + settings.backend_timeout_s,
                ),
                metrics=metrics,
                access_log=settings.access_log,
            )
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    if context is not None:
        app.state.ctx = context  # usable without running the lifespan (in-process tests)
    return app
