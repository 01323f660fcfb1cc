"""Slots: availability (cached), one slot, and the admin catalog routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import Slot
from sync import catalog

from .auth import Principal
from .availability import etag_of, page
from .context import AppContext
from .http import (
    MAX_ID,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    json_response,
    parse_datetime,
    path_id,
    query_limit,
    read_json,
    slot_body,
)
from .problems import Problem

__all__ = ["routes"]

_MAX_CAPACITY = 1_000_000_000
_MAX_LABEL = 200
_CREATE_FIELDS = {"slot_id", "capacity", "state", "label", "starts_at", "ends_at"}
_PATCH_FIELDS = _CREATE_FIELDS - {"slot_id"}


def _decode_after(cursor: str) -> int:
    raw = decode_cursor(cursor)
    if raw[:1] == "s" and raw[1:].isascii() and raw[1:].isdigit() and len(raw) <= 20:
        return int(raw[1:])
    raise bad_cursor()


def _filters(request: Request) -> tuple[int, int, Any]:
    q = request.query_params
    ctx: AppContext = request.app.state.ctx
    max_limit = ctx.settings.availability_page_limit
    limit = query_limit(request, default=max_limit, maximum=max_limit)
    after = _decode_after(q["cursor"]) if "cursor" in q else 0
    start = parse_datetime(q["from"], "from", slug="bad-request") if "from" in q else None
    end = parse_datetime(q["to"], "to", slug="bad-request") if "to" in q else None
    available = q.get("available")
    if available not in (None, "true", "false"):
        raise Problem("bad-request", "available must be true or false")
    if start is None and end is None and available is None:
        return after, limit, None

    def keep(slot: Slot) -> bool:
        if available == "true" and slot.remaining <= 0:
            return False
        if available == "false" and slot.remaining > 0:
            return False
        if start is not None or end is not None:
            if slot.starts_at is None:
                return False
            at = datetime.fromisoformat(slot.starts_at)
            if (start is not None and at < start) or (end is not None and at >= end):
                return False
        return True

    return after, limit, keep


async def availability(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    await ctx.tokens.authenticate(request)
    after, limit, keep = _filters(request)
    snap = await ctx.cache.get()
    if after == 0 and keep is None and limit >= len(snap.ids):
        body, etag, next_id = snap.full_body, snap.full_etag, None
    else:
        fragments, next_id = page(snap, after, limit, keep)
        body = b"[" + b",".join(fragments) + b"]"
        etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0"}
    if next_id is not None:
        params = dict(request.query_params)
        params["cursor"] = encode_cursor(f"s{next_id}")
        query = urlencode(params)
        headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type="application/json")


def _etags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


async def get_slot(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    await ctx.tokens.authenticate(request)
    slot = await ctx.engine.slot(path_id(request, "slot_id"))
    return json_response(slot_body(slot))


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
