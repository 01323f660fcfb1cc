"""Hold groups: all or nothing across slots (engine/groups.py)."""

from __future__ import annotations

from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import engine
from sync.durable import change_group_durably

from .context import AppContext
from .hold_routes import _REPLAYED, _idempotency_key, durable_answer
from .http import MAX_ID, hold_body, iso_ms, json_response, read_json
from .problems import Problem
from .user_ids import user_id_json

__all__ = ["group_body", "routes"]


def group_body(group: engine.Group) -> dict[str, Any]:
    body: dict[str, Any] = {
        "group_id": group.group_id,
        "user_id": user_id_json(group.user_id),
        "status": group.status,
        "created_at": iso_ms(group.created_at_ms),
        "expires_at": iso_ms(group.expires_at_ms),
    }
    for name, ms in (
        ("confirmed_at", group.confirmed_at_ms),
        ("cancelled_at", group.cancelled_at_ms),
    ):
        if ms is not None:
            body[name] = iso_ms(ms)
    body["holds"] = [hold_body(h) for h in group.holds]
    return body


def _int_field(item: dict[str, Any], name: str, top: int, default: int | None, at: str) -> int:
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise Problem("validation-error", f"{at}.{name} must be an integer from 1 to {top}")
    return value


async def _items(request: Request, ctx: AppContext) -> list[engine.GroupItem]:
    body = await read_json(request, ctx.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise Problem("validation-error", 'the body must be a JSON object like {"items": [...]}')
    unknown = sorted(set(body) - {"items", "mode"})
    if unknown:
        raise Problem("validation-error", f"unknown fields: {', '.join(unknown)}")
    if body.get("mode", "all") != "all":
        raise Problem("validation-error", 'mode must be "all" (every item held, or none)')
    raw = body.get("items")
    top = ctx.settings.max_group_items
    if not isinstance(raw, list) or not 1 <= len(raw) <= top:
        raise Problem("validation-error", f"items must be a list of 1 to {top} items")
    items = []
    for n, item in enumerate(raw):
        at = f"items[{n}]"
        if not isinstance(item, dict):
            raise Problem("validation-error", f'{at} must be an object like {{"slot_id": 1}}')
        extra = sorted(set(item) - {"slot_id", "quantity"})
        if extra:
            raise Problem("validation-error", f"{at}: unknown fields: {', '.join(extra)}")
        slot_id = _int_field(item, "slot_id", MAX_ID, None, at)
        quantity = _int_field(item, "quantity", ctx.settings.max_quantity, 1, at)
        items.append(engine.GroupItem(slot_id, quantity))
    seen: set[int] = set()
    for n, item in enumerate(items):
        if item.slot_id in seen:
            raise Problem(
                "validation-error",
                f"items[{n}]: slot {item.slot_id} is named twice; one item per slot",
            )
        seen.add(item.slot_id)
    return items


async def create_group(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    key = _idempotency_key(request)
    items = await _items(request, ctx)
    counter = ctx.metrics.groups
    if ctx.settings.hold_rate_per_minute:
        wait = await ctx.hold_rate.hit(principal.user_id)
        if wait:
            counter.labels("hold", "rate_limited").inc()
            raise Problem(
                "rate-limited",
                f"at most {ctx.settings.hold_rate_per_minute} holds a minute",
                headers={"Retry-After": str(wait)},
                retry_after=wait,
            )
    try:
        outcome = await ctx.engine.groups.hold(principal.user_id, key, items)
    except engine.EngineError as exc:
        counter.labels("hold", _outcome(exc)).inc()
        raise
    group = outcome.group
    if not outcome.changed:
        counter.labels("hold", "replayed").inc()
        return json_response(group_body(group), 201, _REPLAYED)
    counter.labels("hold", "created").inc()
    ctx.cache.invalidate()
    return json_response(group_body(group), 201, {"Location": f"/holds/groups/{group.group_id}"})


def _outcome(exc: engine.EngineError) -> str:
    if isinstance(exc, engine.GroupRefused):
        return f"refused_{type(exc.cause).__name__}"
    return type(exc).__name__


async def get_group(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    owner = None if principal.is_admin else principal.user_id
    group = await ctx.engine.groups.get(request.path_params["group_id"], owner)
    return json_response(group_body(group))


async def _change(request: Request, command: Literal["confirm", "cancel"]) -> Response:
    """A confirm, and the cancel of a confirmed group, answer once PostgreSQL has
    every member (sync/durable.py)."""
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    group_id = request.path_params["group_id"]
    try:
        async with durable_answer(ctx, "group"):
            outcome = await change_group_durably(
                ctx.engine, ctx.pool, command, group_id, principal.user_id
            )
    except engine.EngineError as exc:
        ctx.metrics.groups.labels(command, type(exc).__name__).inc()
        raise
    ctx.metrics.groups.labels(command, "changed" if outcome.changed else "unchanged").inc()
    if outcome.changed:
        ctx.cache.invalidate()
    return json_response(group_body(outcome.group))


async def confirm_group(request: Request) -> Response:
    return await _change(request, "confirm")


async def cancel_group(request: Request) -> Response:
    return await _change(request, "cancel")


routes = [
    Route("/holds", create_group, methods=["POST"], name="create_group"),
    Route("/holds/groups/{group_id}", get_group, methods=["GET"], name="get_group"),
    Route("/holds/groups/{group_id}", cancel_group, methods=["DELETE"], name="cancel_group"),
    Route(
        "/holds/groups/{group_id}/confirm", confirm_group, methods=["POST"], name="confirm_group"
    ),
]
