"""Webhook endpoints (admin): register, change, rotate the secret, read the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync import feed, outbox

from .context import AppContext
from .events_routes import require_admin
from .http import (
    bad_cursor,
    decode_cursor,
    encode_cursor,
    json_response,
    path_id,
    query_limit,
    read_json,
)
from .problems import Problem

__all__ = ["routes"]

_MAX_URL = 2048
_FIELDS = {"url", "events", "enabled"}


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="milliseconds")


def _body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["webhook_id"],
        "url": row["url"],
        "events": list(row["events"]),
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": _iso(row["disabled_at"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "previous_secret_expires_at": _iso(row["previous_expires_at"]),
    }


def _url(value: Any) -> str:
    if not isinstance(value, str) or len(value) > _MAX_URL:
        raise Problem("validation-error", f"url must be a string of at most {_MAX_URL} characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Problem("validation-error", "url must be an absolute http:// or https:// URL")
    return value


def _events(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise Problem("validation-error", 'events must be a non-empty list of event types or ["*"]')
    unknown = [v for v in value if v != "*" and v not in feed.EVENT_TYPES]
    if unknown:
        raise Problem(
            "validation-error",
            f"unknown event types: {', '.join(u[:64] for u in unknown[:5])};"
            f" known: {', '.join(feed.EVENT_TYPES)} or *",
        )
    return list(dict.fromkeys(value))


def _validate(body: Any, *, create: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Problem("validation-error", "the body must be a JSON object")
    allowed = _FIELDS - {"enabled"} if create else _FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Problem("validation-error", f"unknown fields: {', '.join(unknown)}")
    if create and ("url" not in body or "events" not in body):
        raise Problem("validation-error", "url and events are required")
    out: dict[str, Any] = {}
    if "url" in body:
        out["url"] = _url(body["url"])
    if "events" in body:
        out["events"] = _events(body["events"])
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise Problem("validation-error", "enabled must be true or false")
        out["enabled"] = body["enabled"]
    return out


async def _admin(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    require_admin(await ctx.tokens.authenticate(request))
    return ctx


def _not_found() -> Problem:
    return Problem("not-found", "no such webhook")


async def create_webhook(request: Request) -> Response:
    ctx = await _admin(request)
    fields = _validate(await read_json(request, ctx.settings.max_body_bytes), create=True)
    row, secret = await outbox.create_webhook(ctx.pool, fields["url"], fields["events"])
    body = {**_body(row), "secret": secret}
    return json_response(body, 201, {"Location": f"/webhooks/{row['webhook_id']}"})


async def list_webhooks(request: Request) -> Response:
    ctx = await _admin(request)
    return json_response([_body(r) for r in await outbox.list_webhooks(ctx.pool)])


async def get_webhook(request: Request) -> Response:
    ctx = await _admin(request)
    row = await outbox.get_webhook(ctx.pool, path_id(request, "webhook_id"))
    if row is None:
        raise _not_found()
    return json_response(_body(row))


async def update_webhook(request: Request) -> Response:
    ctx = await _admin(request)
    webhook_id = path_id(request, "webhook_id")
    fields = _validate(await read_json(request, ctx.settings.max_body_bytes), create=False)
    row = await outbox.update_webhook(ctx.pool, webhook_id, **fields)
    if row is None:
        raise _not_found()
    return json_response(_body(row))


async def delete_webhook(request: Request) -> Response:
    ctx = await _admin(request)
    if not await outbox.delete_webhook(ctx.pool, path_id(request, "webhook_id")):
        raise _not_found()
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    ctx = await _admin(request)
    rotated = await outbox.rotate_secret(ctx.pool, path_id(request, "webhook_id"))
    if rotated is None:
        raise _not_found()
    row, secret = rotated
    return json_response({**_body(row), "secret": secret})


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["delivery_id"],
        "event_id": str(row["feed_id"]),
        "event_type": row["type"],
        "status": row["status"],
        "attempts": row["attempts"],
        "last_attempt_at": _iso(row["last_attempt_at"]),
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "next_attempt_at": _iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "delivered_at": _iso(row["delivered_at"]),
        "created_at": _iso(row["created_at"]),
    }


async def list_deliveries(request: Request) -> Response:
    ctx = await _admin(request)
    webhook_id = path_id(request, "webhook_id")
    limit = query_limit(request, default=100, maximum=1000)
    before = None
    if "cursor" in request.query_params:
        raw = decode_cursor(request.query_params["cursor"])
        if not (raw[:1] == "d" and raw[1:].isascii() and raw[1:].isdigit() and len(raw) <= 20):
            raise bad_cursor()
        before = int(raw[1:])
    if await outbox.get_webhook(ctx.pool, webhook_id) is None:
        raise _not_found()
    rows = await outbox.deliveries(ctx.pool, webhook_id, before=before, limit=limit)
    headers = {}
    if len(rows) == limit:
        params = {**request.query_params, "cursor": encode_cursor(f"d{rows[-1]['delivery_id']}")}
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return json_response([_delivery(r) for r in rows], headers=headers)


routes = [
    Route("/webhooks", create_webhook, methods=["POST"], name="create_webhook"),
    Route("/webhooks", list_webhooks, methods=["GET"], name="list_webhooks"),
    Route("/webhooks/{webhook_id}", get_webhook, methods=["GET"], name="get_webhook"),
    Route("/webhooks/{webhook_id}", update_webhook, methods=["PATCH"], name="update_webhook"),
    Route("/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"], name="delete_webhook"),
    Route(
        "/webhooks/{webhook_id}/rotate-secret",
        rotate_secret,
        methods=["POST"],
        name="rotate_webhook_secret",
    ),
    Route(
        "/webhooks/{webhook_id}/deliveries",
        list_deliveries,
        methods=["GET"],
        name="webhook_deliveries",
    ),
]
