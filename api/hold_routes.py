"""Holds: make one (idempotent), read, list, confirm, cancel."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import engine
from engine import Hold
from sync.durable import ConfirmRefused, DurableUnavailable, write_through
from sync.records import HOLD_COLUMNS, hold_from_row, ms

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
from .problems import Problem

__all__ = ["routes"]

_REPLAYED = {"Idempotent-Replayed": "true"}


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        raise Problem("invalid-idempotency-key", "the Idempotency-Key header is required")
    if not 1 <= len(key) <= 255 or not all(" " <= c <= "~" for c in key):
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
        wait = await ctx.hold_rate.hit(str(principal.user_id))
        if wait:
            ctx.metrics.holds.labels("rate_limited").inc()
            raise Problem(
                "rate-limited",
                f"at most {ctx.settings.hold_rate_per_minute} holds a minute",
                headers={"Retry-After": str(wait)},
                retry_after=wait,
            )
    try:
        outcome = await ctx.engine.hold(slot_id, str(principal.user_id), key, quantity)
    except engine.HoldArchived as exc:
        hold = await _stored_hold(ctx, exc.hold_id)
        if hold is None:
            raise
        ctx.metrics.holds.labels("replayed").inc()
        return json_response(hold_body(hold), 201, _REPLAYED)
    except engine.EngineError as exc:
        ctx.metrics.holds.labels(type(exc).__name__).inc()
        raise
    if not outcome.changed:
        ctx.metrics.holds.labels("replayed").inc()
        return json_response(hold_body(outcome.hold), 201, _REPLAYED)
    ctx.metrics.holds.labels("created").inc()
    ctx.cache.invalidate()
    return json_response(
        hold_body(outcome.hold), 201, {"Location": f"/holds/{outcome.hold.hold_id}"}
    )


async def _stored_hold(ctx: AppContext, hold_id: str) -> Hold | None:
    """The durable record's copy, for holds Redis no longer keeps."""
    row = await ctx.pool.fetchrow(f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = $1", hold_id)
    return None if row is None else hold_from_row(row)


async def get_hold(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    hold_id = request.path_params["hold_id"]
    try:
        hold: Hold | None = await ctx.engine.get_hold(hold_id)
    except engine.HoldNotFound:
        hold = None if engine.slot_of_hold(hold_id) is None else await _stored_hold(ctx, hold_id)
    # Someone else's hold is as unknown as a hold that never existed.
    if hold is None or (hold.user_id != str(principal.user_id) and not principal.is_admin):
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
    args: list[Any] = [principal.user_id, limit + 1]
    where = "user_id = $1"
    if "cursor" in q:
        created, hold_id = _decode_position(q["cursor"])
        where += " AND (created_at, hold_id) < ($3, $4)"
        args += [created, hold_id]
    rows = await ctx.pool.fetch(
        f"SELECT {HOLD_COLUMNS} FROM holds WHERE {where}"
        " ORDER BY created_at DESC, hold_id DESC LIMIT $2",
        *args,
    )
    headers = {}
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = encode_cursor(f"{ms(rows[-1]['created_at'])}|{rows[-1]['hold_id']}")
        headers["Link"] = f'<{request.url.path}?limit={limit}&cursor={cursor}>; rel="next"'
    return json_response([hold_body(hold_from_row(r)) for r in rows], 200, headers)


async def _change_hold(request: Request, command: str) -> Response:
    """Confirm or cancel the caller's hold; the availability copy goes stale if it did.

    A confirm, and the cancel of a confirmed hold, answers only once PostgreSQL
    has it (sync/durable.py); a retry completes one whose write-through failed.
    """
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    change = ctx.engine.confirm if command == "confirm" else ctx.engine.cancel
    outcome = await change(request.path_params["hold_id"], str(principal.user_id))
    if outcome.changed:
        ctx.cache.invalidate()
    if command == "confirm" or outcome.hold.confirmed_at_ms is not None:
        await _make_durable(ctx, outcome)
    return json_response(hold_body(outcome.hold))


async def _make_durable(ctx: AppContext, outcome: engine.Outcome) -> None:
    try:
        await write_through(ctx.engine, ctx.redis, ctx.pool, outcome)
    except DurableUnavailable:
        raise Problem(
            "backend-unavailable",
            "the database is unavailable; the change is kept, retry to complete it",
            headers={"Retry-After": "1"},
        ) from None
    except ConfirmRefused as exc:
        # PostgreSQL arbitrates: Redis is put right (the hold is released) and
        # the durable record learns it now if it can, else from the worker.
        cancelled = await ctx.engine.cancel(exc.hold_id, None)
        ctx.cache.invalidate()
        with contextlib.suppress(ConfirmRefused, DurableUnavailable):
            await write_through(ctx.engine, ctx.redis, ctx.pool, cancelled)
        raise Problem(
            "capacity-exhausted",
            f"slot {exc.slot_id} is fully confirmed; the hold was released",
            remaining=0,
        ) from None


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
