"""OpenAPI for the event feed, its stream, webhooks and the dashboard (merged into
api/openapi.py's document)."""

from __future__ import annotations

from typing import Any

from sync.feed import EVENT_TYPES

from .openapi_parts import json_body as _json
from .openapi_parts import op as _op
from .openapi_parts import problems as _problems
from .openapi_parts import ref as _ref

__all__ = ["FEED_SCHEMAS", "feed_paths"]

_TIME = {"type": "string", "format": "date-time"}
_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_AUTH = ("unauthorized", "forbidden", "backend-unavailable")
_BODY = ("payload-too-large", "unsupported-media-type", "validation-error")
_WEBHOOK_ID = {
    "name": "webhook_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_TYPES = {"type": "array", "items": {"enum": ["*", *EVENT_TYPES]}, "minItems": 1}
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
_FILTERS = [
    {"name": "slot_id", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    {
        "name": "type",
        "in": "query",
        "description": "event types, comma-separated; `hold.*` for all of a kind",
        "schema": {"type": "string"},
    },
]

FEED_SCHEMAS: dict[str, Any] = {
    "Event": {
        "type": "object",
        "description": "One transition. `id` is the cursor: ids grow in commit order.",
        "required": ["id", "type", "timestamp", "slot_id", "data"],
        "properties": {
            "id": {"type": "string"},
            "type": {"enum": list(EVENT_TYPES)},
            "timestamp": _TIME,
            "slot_id": {"type": ["integer", "null"]},
            "data": {"type": "object", "description": "the hold or slot after the change"},
        },
    },
    "StreamTicket": {
        "type": "object",
        "required": ["ticket", "expires_in"],
        "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer"}},
    },
    "WebhookCreate": {
        "type": "object",
        "required": ["url", "events"],
        "additionalProperties": False,
        "properties": {"url": {"type": "string", "format": "uri"}, "events": _TYPES},
    },
    "WebhookPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "events": _TYPES,
            "enabled": {"type": "boolean"},
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["id", "url", "events", "enabled"],
        "properties": {
            "id": {"type": "integer"},
            "url": {"type": "string"},
            "events": _TYPES,
            "enabled": {"type": "boolean"},
            "disabled_reason": {"type": ["string", "null"]},
            "disabled_at": _NULL_TIME,
            "created_at": _TIME,
            "updated_at": _TIME,
            "previous_secret_expires_at": _NULL_TIME,
            "secret": {
                "type": "string",
                "description": "`whsec_…`, only when created or rotated",
            },
        },
    },
    "Delivery": {
        "type": "object",
        "required": ["id", "event_id", "event_type", "status", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "event_id": {"type": "string"},
            "event_type": {"type": "string"},
            "status": {"enum": ["pending", "delivered"]},
            "attempts": {"type": "integer"},
            "last_attempt_at": _NULL_TIME,
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "next_attempt_at": _NULL_TIME,
            "delivered_at": _NULL_TIME,
            "created_at": _TIME,
        },
    },
    "DashboardSlot": {
        "type": "object",
        "required": ["slot_id", "capacity", "remaining", "held", "confirmed", "state"],
        "properties": {
            "slot_id": {"type": "integer"},
            "capacity": {"type": "integer"},
            "remaining": {"type": "integer"},
            "held": {"type": "integer"},
            "confirmed": {"type": "integer"},
            "state": {"enum": ["open", "closed"]},
            "label": {"type": "string"},
            "starts_at": _TIME,
            "ends_at": _TIME,
        },
    },
}


def _webhook_ok(description: str) -> dict[str, Any]:
    return _json(_ref("Webhook"), description)


def feed_paths() -> dict[str, Any]:
    link = {"Link": {"schema": {"type": "string"}, "description": "next page"}}
    hook_errors = _problems("bad-request", "not-found", *_AUTH)
    return {
        "/events": {
            "get": _op(
                "Every transition, oldest first (admin); the Link header continues after the"
                " last event, also when the page is empty",
                {
                    "200": {
                        **_json({"type": "array", "items": _ref("Event")}, "Events"),
                        "headers": link,
                    },
                    **_problems("bad-request", *_AUTH),
                },
                security=_BEARER,
                parameters=[
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    *_FILTERS,
                    _LIMIT,
                ],
            )
        },
        "/events/stream": {
            "get": _op(
                "The same events live, as Server-Sent Events (admin): `id` is the event id,"
                " `event` its type; resume with Last-Event-ID or `after`; comment heartbeats."
                " Authenticate with the bearer header or `ticket`",
                {
                    "200": {
                        "description": "an event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_problems("bad-request", *_AUTH),
                },
                security=_BEARER,
                parameters=[
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "ticket", "in": "query", "schema": {"type": "string"}},
                    *_FILTERS,
                ],
            )
        },
        "/events/stream/ticket": {
            "post": _op(
                "A 60-second ticket that opens the event stream (EventSource sends no headers)",
                {"200": _json(_ref("StreamTicket"), "A ticket"), **_problems(*_AUTH)},
                security=_BEARER,
            )
        },
        "/webhooks": {
            "post": _op(
                "Register an endpoint (admin); its signing secret is shown this once",
                {"201": _webhook_ok("Created, with `secret`"), **_problems(*_BODY, *_AUTH)},
                security=_BEARER,
                requestBody={"content": {"application/json": {"schema": _ref("WebhookCreate")}}},
            ),
            "get": _op(
                "Every endpoint (admin)",
                {
                    "200": _json({"type": "array", "items": _ref("Webhook")}, "Endpoints"),
                    **_problems(*_AUTH),
                },
                security=_BEARER,
            ),
        },
        "/webhooks/{webhook_id}": {
            "get": _op(
                "One endpoint",
                {"200": _webhook_ok("The endpoint"), **hook_errors},
                security=_BEARER,
                parameters=[_WEBHOOK_ID],
            ),
            "patch": _op(
                "Change url or events; `enabled: true` resumes a disabled endpoint",
                {"200": _webhook_ok("The endpoint"), **_problems(*_BODY), **hook_errors},
                security=_BEARER,
                parameters=[_WEBHOOK_ID],
                requestBody={"content": {"application/json": {"schema": _ref("WebhookPatch")}}},
            ),
            "delete": _op(
                "Remove an endpoint and its queue",
                {"204": {"description": "Removed"}, **hook_errors},
                security=_BEARER,
                parameters=[_WEBHOOK_ID],
            ),
        },
        "/webhooks/{webhook_id}/rotate-secret": {
            "post": _op(
                "A new signing secret; the old one also signs for 24 hours",
                {"200": _webhook_ok("The endpoint, with the new `secret`"), **hook_errors},
                security=_BEARER,
                parameters=[_WEBHOOK_ID],
            )
        },
        "/webhooks/{webhook_id}/deliveries": {
            "get": _op(
                "The delivery log, newest first",
                {
                    "200": {
                        **_json({"type": "array", "items": _ref("Delivery")}, "Deliveries"),
                        "headers": link,
                    },
                    **hook_errors,
                },
                security=_BEARER,
                parameters=[
                    _WEBHOOK_ID,
                    _LIMIT,
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
            )
        },
        "/dashboard": {
            "get": _op("The live occupancy page (HTML)", {"200": {"description": "HTML"}})
        },
        "/dashboard/assets/{name}": {
            "get": _op(
                "The page's script and style sheet (cached)",
                {
                    "200": {"description": "JavaScript or CSS"},
                    "304": {"description": "Not modified"},
                    **_problems("not-found"),
                },
                parameters=[
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["dashboard.js", "dashboard.css"]},
                    }
                ],
            )
        },
        "/dashboard/slots": {
            "get": _op(
                "Slots with confirmed / held / remaining units, for the page (admin);"
                " X-Feed-Cursor is the event id to stream from",
                {
                    "200": {
                        **_json({"type": "array", "items": _ref("DashboardSlot")}, "Slots"),
                        "headers": {"X-Feed-Cursor": {"schema": {"type": "string"}}},
                    },
                    **_problems("bad-request", "not-found", "state-unavailable", *_AUTH),
                },
                security=_BEARER,
                parameters=[
                    {"name": "from", "in": "query", "schema": _TIME},
                    {"name": "to", "in": "query", "schema": _TIME},
                    {"name": "slot_id", "in": "query", "schema": {"type": "integer"}},
                ],
            )
        },
    }
