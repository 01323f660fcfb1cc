"""The original service's design, for comparison: a hold is a PostgreSQL row lock.

Same HTTP stack (Starlette under uvicorn, uvloop, httptools) and the same JWT
check (api.auth.TokenService, with its Redis revocation lookup) as slotkeeper;
the hold itself is one transaction: SELECT ... FOR UPDATE, UPDATE, INSERT.
Tables: bench/pg_schema.sql.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import TokenService
from api.context import connect_redis
from api.http import json_response
from api.problems import Problem, problem_response
from api.settings import Settings


async def hold(request: Request) -> Response:
    state = request.app.state
    principal = await state.tokens.authenticate(request)
    slot_id = int(request.path_params["slot_id"])
    key = request.headers.get("idempotency-key", "")
    async with state.pool.acquire() as conn, conn.transaction():
        remaining = await conn.fetchval(
            "SELECT remaining FROM pg_slots WHERE slot_id = $1 FOR UPDATE", slot_id
        )
        if remaining is None:
            raise Problem("not-found", f"slot {slot_id} does not exist")
        if remaining < 1:
            raise Problem("capacity-exhausted", "sold out", remaining=remaining)
        await conn.execute(
            "UPDATE pg_slots SET remaining = remaining - 1 WHERE slot_id = $1", slot_id
        )
        hold_id = await conn.fetchval(
            "INSERT INTO pg_holds (slot_id, user_id, quantity, idempotency_key)"
            " VALUES ($1, $2, 1, $3) RETURNING hold_id",
            slot_id,
            int(principal.user_id),
            key,
        )
    return json_response({"hold_id": hold_id, "slot_id": slot_id, "status": "held"}, 201)


def create_app() -> Starlette:
    settings = Settings.from_env()
    pool_size = int(os.environ.get("BENCH_PG_POOL", "8"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect_redis(settings.redis_url, settings)
        app.state.pool = await asyncpg.create_pool(
            settings.database_url, min_size=pool_size, max_size=pool_size
        )
        app.state.tokens = TokenService(
            secret=settings.jwt_secret,
            algorithm=settings.jwt_algorithm,
            ttl_s=settings.access_token_ttl_s,
            refresh_window_s=settings.refresh_window_s,
            redis=redis,
            key_prefix=settings.key_prefix,
        )
        app.state.tokens.denylist.start()  # the same JWT check as slotkeeper's
        yield
        await app.state.tokens.denylist.stop()
        await app.state.pool.close()
        await redis.aclose()

    return Starlette(
        routes=[Route("/pg/slots/{slot_id}/hold", hold, methods=["POST"])],
        exception_handlers={Problem: problem_response},
        lifespan=lifespan,
    )
