"""Holds: make one (idempotent), read, list, confirm, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import engine
from sync.durable import ConfirmRefused, DurableUnavailable, change_durably
from sync.holds import find_hold, hold_or_replay
from sync.holds import list_holds as read_holds

from .context import AppContext
from .http import (
    bad_cursor,
    decode_cursor,
    encode_cursor,
    hold_body,
    json_response,
    path_id,
    query_limit,
    read_json,
)
from .lifecycle_routes import confirm_quantity
from .problems import Problem

__all__ = ["routes"]

_REPLAYED = {"Idempotent-Replayed": "true"}


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        raise Problem("invalid-idempotency-key", "the Idempotency-Key header is required")
    if not 1 <= len(key) <= 255 or not (key.isascii() and key.isprintable()):
        raise Problem(
            "invalid-idempotency-key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        )
    return key


async def _quantity(request: Request, ctx: AppContext) -> int:
    body = await read_json(request, ctx.settings.max_body_bytes, required=False)
    if body is None:
        return 1
    if not isinstance(body, dict):
        raise Problem("validation-error", 'the body must be a JSON object like {"quantity": 1}')
    unknown = sorted(set(body) - {"quantity"})
    if unknown:
        raise Problem("validation-error", f"unknown fields: {', '.join(unknown)}")
    quantity = body.get("quantity", 1)
    top = ctx.settings.max_quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= top:
        raise Problem("validation-error", f"quantity must be an integer from 1 to {top}")
    return quantity


async def create_hold(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    slot_id = path_id(request, "slot_id")
    key = _idempotency_key(request)
    quantity = await _quantity(request, ctx)
    if ctx.settings.hold_rate_per_minute:
        wait = await ctx.hold_rate.hit(principal.user_id)
        if wait:
            ctx.metrics.count_hold("rate_limited")
            raise Problem(
                "rate-limited",
                f"at most {ctx.settings.hold_rate_per_minute} holds a minute",
                headers={"Retry-After": str(wait)},
                retry_after=wait,
            )
    try:
        outcome = await hold_or_replay(
            ctx.engine, ctx.pool, slot_id, principal.user_id, key, quantity
        )
    except engine.EngineError as exc:
        ctx.metrics.count_hold(type(exc).__name__)
        raise
    if not outcome.changed:
        ctx.metrics.count_hold("replayed")
        return json_response(hold_body(outcome.hold), 201, _REPLAYED)
    ctx.metrics.count_hold("created")
    ctx.cache.invalidate()
    return json_response(
        hold_body(outcome.hold), 201, {"Location": f"/holds/{outcome.hold.hold_id}"}
    )


async def get_hold(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    hold_id = request.path_params["hold_id"]
    hold = await find_hold(ctx.engine, ctx.pool, hold_id)
    # Someone else's hold is as unknown as a hold that never existed.
    if hold is None or (hold.user_id != principal.user_id and not principal.is_admin):
        raise Problem("not-found", "hold not found")
    return json_response(hold_body(hold))


def _decode_position(cursor: str) -> tuple[datetime, str]:
    created_ms, _, hold_id = decode_cursor(cursor).partition("|")
    try:
        return datetime.fromtimestamp(int(created_ms) / 1000, UTC), hold_id
    except (ValueError, OverflowError, OSError):
        raise bad_cursor() from None


async def list_holds(request: Request) -> Response:
    """The caller's holds, newest first, from the durable record (the sync worker's copy)."""
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    q = request.query_params
    limit = query_limit(request, default=100, maximum=1000)
    after = _decode_position(q["cursor"]) if "cursor" in q else None
    found = await read_holds(ctx.pool, principal.user_id, limit, after)
    headers = {}
    if found.next_after is not None:
        created_ms, hold_id = found.next_after
        cursor = encode_cursor(f"{created_ms}|{hold_id}")
        headers["Link"] = f'<{request.url.path}?limit={limit}&cursor={cursor}>; rel="next"'
    return json_response([hold_body(hold) for hold in found.holds], 200, headers)


@asynccontextmanager
async def durable_answer(ctx: AppContext, what: str) -> AsyncIterator[None]:
    """The problems of a change that must reach PostgreSQL before it is answered
    (sync/durable.py); either way the availability copy goes stale."""
    try:
        yield
    except DurableUnavailable:
        ctx.cache.invalidate()
        raise Problem(
            "backend-unavailable",
            "the database is unavailable; the change is kept, retry to complete it",
            headers={"Retry-After": "1"},
        ) from None
    except ConfirmRefused as exc:
        ctx.cache.invalidate()
        raise Problem(
            "capacity-exhausted",
            f"slot {exc.slot_id} is fully confirmed; the {what} was released",
            remaining=0,
        ) from None


async def _change_hold(request: Request, command: Literal["confirm", "cancel"]) -> Response:
    """Confirm or cancel the caller's hold; the availability copy goes stale if it did.

    A confirm, and the cancel of a confirmed hold, answers only once PostgreSQL
    has it (sync/durable.py).
    """
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    hold_id = request.path_params["hold_id"]
    # A partial confirm names its quantity (api/lifecycle_routes.py).
    quantity = await confirm_quantity(request, ctx) if command == "confirm" else None
    try:
        async with durable_answer(ctx, "hold"):
            outcome = await change_durably(
                ctx.engine,
                ctx.redis,
                ctx.pool,
                command,
                hold_id,
                principal.user_id,
                quantity=quantity,
            )
    except engine.EngineError as exc:
        if command == "confirm":
            ctx.metrics.hold_changes.labels("confirm", type(exc).__name__).inc()
        raise
    if command == "confirm":
        done = "confirmed" if outcome.changed else "replayed"
        ctx.metrics.hold_changes.labels("confirm", done).inc()
    if outcome.changed:
        ctx.cache.invalidate()
    return json_response(hold_body(outcome.hold))


async def confirm_hold(request: Request) -> Response:
    return await _change_hold(request, "confirm")


async def cancel_hold(request: Request) -> Response:
    return await _change_hold(request, "cancel")


routes = [
    Route("/slots/{slot_id}/hold", create_hold, methods=["POST"], name="create_hold"),
    Route("/holds", list_holds, methods=["GET"], name="list_holds"),
    Route("/holds/{hold_id}", get_hold, methods=["GET"], name="get_hold"),
    Route("/holds/{hold_id}", cancel_hold, methods=["DELETE"], name="cancel_hold"),
    Route("/holds/{hold_id}/confirm", confirm_hold, methods=["POST"], name="confirm_hold"),
]
