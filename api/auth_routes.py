"""POST /auth/login, POST /auth/refresh, and the original service's /login, /refresh."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .context import AppContext
from .hashing import BoundedHasher, Overloaded
from .http import json_response, read_json
from .problems import Problem
from .user_ids import user_id_json
from .users import find_user, role_of, update_password_hash

__all__ = ["routes"]

_MAX_FIELD = 1024


async def _credentials(request: Request, ctx: AppContext) -> tuple[str, str]:
    """From a JSON body, a form, or (GET, as the original service) the query string."""
    source: Any
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        source = dict(await request.form())
    else:
        source = await read_json(request, ctx.settings.max_body_bytes, required=False)
        if source is None:
            source = dict(request.query_params)
    if not isinstance(source, dict):
        raise Problem("validation-error", 'send {"email": ..., "password": ...}')
    email, password = source.get("email"), source.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise Problem("validation-error", "email and password are required strings")
    if len(email) > _MAX_FIELD or len(password) > _MAX_FIELD:
        raise Problem("validation-error", "email or password is too long")
    return email.strip(), password


def _too_many(retry_after: int) -> Problem:
    return Problem(
        "rate-limited",
        "too many failed logins; try again later",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


def _overloaded(retry_after: int) -> Problem:
    return Problem(
        "overloaded",
        "too many logins at once; try again shortly",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


def _hasher(ctx: AppContext) -> BoundedHasher:
    if ctx.password_hasher is None:
        ctx.password_hasher = BoundedHasher(
            concurrency=ctx.settings.password_hash_concurrency,
            budget_s=ctx.settings.login_timeout_s,
        )
    return ctx.password_hasher


async def login(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    email, password = await _credentials(request, ctx)
    account = email.lower()
    address = request.client.host if request.client else "unknown"
    for limiter, subject in ((ctx.login_by_account, account), (ctx.login_by_address, address)):
        wait = await limiter.blocked(subject)
        if wait:
            raise _too_many(wait)
    async with asyncio.timeout(ctx.settings.backend_timeout_s):
        user = await find_user(ctx.pool, email)
    # argon2 runs off the event loop, a few at a time (api/hashing.py); an unknown
    # email costs the same as a wrong password.
    hasher = _hasher(ctx)
    try:
        async with asyncio.timeout(ctx.settings.login_timeout_s):
            verified, rehash = await hasher.verify(user.password_hash if user else None, password)
    except Overloaded as exc:
        raise _overloaded(exc.retry_after_s) from None
    except TimeoutError:
        raise _overloaded(max(1, math.ceil(hasher.expected_wait_s()))) from None
    if user is None or not verified:
        await ctx.login_by_account.hit(account)
        await ctx.login_by_address.hit(address)
        raise Problem("invalid-credentials", "the email or password is wrong")
    request.state.user_id = user.user_id
    if rehash is not None:  # made with older argon2 parameters: upgrade it now
        await update_password_hash(ctx.pool, user.user_id, rehash)
    await ctx.login_by_account.clear(account)
    return json_response(ctx.tokens.issue(user.user_id, user.role))


async def refresh(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx

    async def current_role(user_id: str) -> str | None:
        return await role_of(ctx.pool, user_id)

    return json_response(await ctx.tokens.refresh(request, current_role))


async def whoami(request: Request) -> Response:
    """Who the bearer token says the caller is (also the benchmark's bare route)."""
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    return json_response(
        {
            "user_id": user_id_json(principal.user_id),
            "role": principal.role,
            "expires_at": principal.expires_at,
        }
    )


routes = [
    Route("/auth/whoami", whoami, methods=["GET"], name="whoami"),
    Route("/auth/login", login, methods=["POST"], name="login"),
    Route("/auth/refresh", refresh, methods=["POST"], name="refresh"),
    Route("/login", login, methods=["GET", "POST"], name="login_compat"),
    Route("/refresh", refresh, methods=["GET", "POST"], name="refresh_compat"),
]
