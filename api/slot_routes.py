"""Slots: availability (api/availability_routes.py), one slot, the admin catalog routes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import engine
from sync import catalog
from sync.archived import archived_slot

from .auth import Principal
from .availability_routes import availability
from .context import AppContext
from .http import (
    MAX_ID,
    json_response,
    parse_datetime,
    path_id,
    read_json,
    slot_body,
)
from .problems import Problem

__all__ = ["routes"]

_MAX_CAPACITY = 1_000_000_000
_MAX_LABEL = 200
_CREATE_FIELDS = {"slot_id", "capacity", "state", "label", "starts_at", "ends_at"}
_PATCH_FIELDS = _CREATE_FIELDS - {"slot_id"}


async def get_slot(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    await ctx.tokens.authenticate(request)
    slot_id = path_id(request, "slot_id")
    try:
        slot = await ctx.engine.slot(slot_id)
    except engine.SlotNotFound:
        # A slot that is over left Redis; PostgreSQL keeps it (sync/archive.py).
        archived = await archived_slot(ctx.pool, slot_id)
        if archived is None:
            raise
        return json_response({**slot_body(archived), "waiting": {"entries": 0, "units": 0}})
    waiting = (await ctx.engine.waitlist.waiting([slot.slot_id])).get(slot.slot_id)
    body = slot_body(slot)
    body["waiting"] = {"entries": waiting.entries if waiting else 0}
    body["waiting"]["units"] = waiting.units if waiting else 0
    return json_response(body)


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Problem("forbidden", "this route is for administrators")


def _validate(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Problem("validation-error", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Problem("validation-error", f"unknown fields: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    if "slot_id" in body and body["slot_id"] is not None:
        out["slot_id"] = _int(body["slot_id"], "slot_id", 1, MAX_ID)
    if "capacity" in body:
        out["capacity"] = _int(body["capacity"], "capacity", 0, _MAX_CAPACITY)
    if "state" in body:
        if body["state"] not in ("open", "closed"):
            raise Problem("validation-error", "state must be 'open' or 'closed'")
        out["state"] = body["state"]
    if "label" in body:
        label = body["label"]
        if label is not None and (not isinstance(label, str) or len(label) > _MAX_LABEL):
            raise Problem("validation-error", f"label must be a string of at most {_MAX_LABEL}")
        out["label"] = label
    for name in ("starts_at", "ends_at"):
        if name in body:
            out[name] = None if body[name] is None else parse_datetime(body[name], name)
    return out


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Problem("validation-error", f"{name} must be an integer from {low} to {high}")
    return value


async def create_slot(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    _require_admin(await ctx.tokens.authenticate(request))
    fields = _validate(await read_json(request, ctx.settings.max_body_bytes), _CREATE_FIELDS)
    if "capacity" not in fields:
        raise Problem("validation-error", "capacity is required")
    try:
        slot = await catalog.create_slot(ctx.engine, ctx.pool, fields)
    except catalog.SlotWindowInvalid as exc:
        raise Problem("validation-error", str(exc)) from None
    ctx.cache.invalidate()
    return json_response(slot_body(slot), 201, {"Location": f"/slots/{slot.slot_id}"})


async def update_slot(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    _require_admin(await ctx.tokens.authenticate(request))
    slot_id = path_id(request, "slot_id")
    fields = _validate(await read_json(request, ctx.settings.max_body_bytes), _PATCH_FIELDS)
    try:
        slot = await catalog.update_slot(ctx.engine, ctx.pool, slot_id, fields)
    except catalog.SlotWindowInvalid as exc:
        raise Problem("validation-error", str(exc)) from None
    ctx.cache.invalidate()
    return json_response(slot_body(slot))


routes = [
    Route("/slots/availability", availability, methods=["GET"], name="availability"),
    Route("/slots", create_slot, methods=["POST"], name="create_slot"),
    Route("/slots/{slot_id}", get_slot, methods=["GET"], name="get_slot"),
    Route("/slots/{slot_id}", update_slot, methods=["PATCH"], name="update_slot"),
]
