"""The waitlist: join a slot's line (idempotent), read an entry, leave."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import engine

from .context import AppContext
from .hold_routes import _idempotency_key, _quantity
from .http import hold_body, iso_ms, json_response, path_id
from .problems import Problem
from .user_ids import user_id_json

__all__ = ["entry_body", "routes"]

_REPLAYED = {"Idempotent-Replayed": "true"}


def entry_body(entry: engine.WaitEntry) -> dict[str, Any]:
    """An entry: its place in line while waiting, its hold once offered."""
    body: dict[str, Any] = {
        "entry_id": entry.entry_id,
        "slot_id": entry.slot_id,
        "user_id": user_id_json(entry.user_id),
        "quantity": entry.quantity,
        "status": entry.status,
        "joined_at": iso_ms(entry.joined_at_ms),
        "lapses_at": iso_ms(entry.lapses_at_ms),
    }
    if entry.status == "waiting":
        body["position"] = entry.position
    for name, ms in (
        ("offered_at", entry.offered_at_ms),
        ("left_at", entry.left_at_ms),
        ("lapsed_at", entry.lapsed_at_ms),
    ):
        if ms is not None:
            body[name] = iso_ms(ms)
    if entry.hold_id is not None:
        body["hold_id"] = entry.hold_id
    if entry.hold is not None:
        body["hold"] = hold_body(entry.hold)
    return body


async def join_waitlist(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    slot_id = path_id(request, "slot_id")
    key = _idempotency_key(request)
    quantity = await _quantity(request, ctx)
    try:
        entry, created = await ctx.engine.waitlist.join(slot_id, principal.user_id, key, quantity)
    except engine.EngineError as exc:
        ctx.metrics.waitlist_joins.labels(type(exc).__name__).inc()
        raise
    if not created:
        ctx.metrics.waitlist_joins.labels("replayed").inc()
        return json_response(entry_body(entry), 201, _REPLAYED)
    ctx.metrics.waitlist_joins.labels(entry.status).inc()
    if entry.status == "offered":
        ctx.cache.invalidate()
    return json_response(entry_body(entry), 201, {"Location": f"/waitlist/{entry.entry_id}"})


async def _own_entry(request: Request) -> tuple[AppContext, str | None, engine.WaitEntry]:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    entry = await ctx.engine.waitlist.get(request.path_params["entry_id"])
    # Someone else's entry is as unknown as one that never existed.
    if entry.user_id != principal.user_id and not principal.is_admin:
        raise Problem("not-found", "waitlist entry not found")
    return ctx, None if principal.is_admin else principal.user_id, entry


async def get_entry(request: Request) -> Response:
    _, _, entry = await _own_entry(request)
    return json_response(entry_body(entry))


async def leave_waitlist(request: Request) -> Response:
    ctx, user_id, seen = await _own_entry(request)
    entry, changed = await ctx.engine.waitlist.leave(seen.entry_id, user_id)
    if not changed:
        return json_response(entry_body(seen if seen.status == entry.status else entry))
    ctx.cache.invalidate()
    return json_response(entry_body(entry))


routes = [
    Route("/slots/{slot_id}/waitlist", join_waitlist, methods=["POST"], name="join_waitlist"),
    Route("/waitlist/{entry_id}", get_entry, methods=["GET"], name="get_waitlist_entry"),
    Route("/waitlist/{entry_id}", leave_waitlist, methods=["DELETE"], name="leave_waitlist"),
]
